"""Bronze assets: one per source definition, one dynamic partition per landed file."""


from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    Failure,
    MaterializeResult,
    TableColumn,
    TableSchema,
    asset,
)

from assets.keys import (
    DELIVERIES,
    TRANSIENT_RETRY,
    bronze_key,
    files_partitions,
    quarantine_key,
)
from ids_lakehouse import audit, catalog
from ids_lakehouse.ingest.delivery import ingest_delivery
from ids_lakehouse.ingest.landing import FileChangedError, find_landed
from ids_lakehouse.sources import SourceDefinition, load_sources
from pipelines.resources import LakeResource

RECONCILE_CHECK = "file_reconciles"


def _fail(lake, defn: SourceDefinition, context: AssetExecutionContext, message: str,
          details: dict) -> Failure:
    audit.record(lake, "ingest_failed", message, source=defn.source,
                 asset=bronze_key(defn.source).to_user_string(),
                 partition=context.partition_key, run_id=context.run.run_id, details=details,
                 **audit.launched_by(dict(context.run.tags)))
    context.log.error(message)
    return Failure(description=message, allow_retries=False,
                   metadata={k: v for k, v in details.items() if v is not None})


def ingest_partition(context: AssetExecutionContext, defn: SourceDefinition,
                     lake_resource: LakeResource) -> MaterializeResult:
    lake, key = lake_resource.layout(), context.partition_key
    try:
        landed = find_landed(lake_resource.landing, defn, key)
    except (FileNotFoundError, FileChangedError) as exc:
        raise _fail(lake, defn, context, str(exc), {"source": defn.source, "partition": key}
                    ) from None
    delivery = ingest_delivery(defn, landed, lake, context.run.run_id)
    result, rec = delivery.result, delivery.reconciliation
    context.log_event(AssetMaterialization(asset_key=DELIVERIES, metadata={
        "source": defn.source, "file": landed.name,
        "status": "accepted" if delivery.accepted else "rejected"}))
    if result is not None and result.rows_quarantined:
        context.log_event(AssetMaterialization(asset_key=quarantine_key(defn.source), metadata={
            "stage": "ingest", "file": landed.name,
            "rows_quarantined": result.rows_quarantined, "rules": result.rules}))
    if not delivery.accepted:
        error = delivery.error
        assert error is not None        # a rejected delivery says why
        counts = result.as_metadata() if result else {}
        raise _fail(lake, defn, context, f"delivery rejected: {error.message}",
                    {**error.as_dict(), "rows_read": counts.get("rows_read"),
                     "rows_quarantined": counts.get("rows_quarantined")})
    assert result is not None and rec is not None   # an accepted delivery was reconciled
    counts = {"rows_read": result.rows_read, "rows_written": result.rows_written,
              "rows_quarantined": result.rows_quarantined}
    audit.record(lake, "ingest_succeeded", f"{landed.name}: accepted {counts}",
                 source=defn.source, asset=bronze_key(defn.source).to_user_string(),
                 partition=key, run_id=context.run.run_id, details=result.as_metadata(),
                 **audit.launched_by(dict(context.run.tags)))
    context.log.info(f"{landed.name}: accepted; read {result.rows_read:,} rows, wrote "
                     f"{result.rows_written:,}, quarantined {result.rows_quarantined:,} "
                     f"in {result.duration_s:.2f}s")
    if result.extra_columns or result.missing_columns:
        context.log.warning(f"{landed.name}: schema drift: {len(result.extra_columns)} extra "
                            f"columns, missing columns {result.missing_columns}")
    return MaterializeResult(
        metadata={**counts, "dagster/row_count": result.rows_written, "delivery": "accepted",
                  "bytes": result.bytes, "file": landed.name, "file_sha256": landed.sha256,
                  "duration_s": result.duration_s, "blank_lines": result.blank_lines,
                  "extra_columns": len(result.extra_columns),
                  "missing_columns": result.missing_columns,
                  "quarantine_rules": result.rules},
        check_results=[AssetCheckResult(
            check_name=RECONCILE_CHECK, passed=rec.passed,
            description="rows in the file = bronze rows + quarantined rows",
            metadata={"delivered_records": rec.delivered if rec.delivered is not None else -1,
                      "reader_records": rec.reader_records, "bronze_rows": rec.bronze,
                      "quarantined_rows": rec.quarantined})])


def bronze_schema(defn: SourceDefinition) -> TableSchema:
    """Delivered columns, classified through the canonical fields they feed."""
    from ids_lakehouse.ingest.bronze import BRONZE_ONLY, PROVENANCE
    from ids_lakehouse.model import load_model

    classes = catalog.column_classification(defn, load_model())
    delivered = [TableColumn(c, "string" if defn.text_format else "as delivered",
                             tags={"classification": classes[c]}) for c in defn.columns]
    provenance = [TableColumn(f.name, str(f.type), description="provenance",
                              tags={"classification": "non_identifying"})
                  for f in PROVENANCE + BRONZE_ONLY]
    return TableSchema(columns=delivered + provenance)


def build_bronze_asset(defn: SourceDefinition):
    key = bronze_key(defn.source)

    @asset(
        key=key,
        group_name="ingest",
        partitions_def=files_partitions(defn.source),
        description=f"{defn.agency}: {defn.description} Raw rows as delivered "
                    f"({defn.format}), every column kept, plus provenance.",
        owners=[defn.data_owner, defn.steward],
        kinds={"delta", "python"},
        tags={"ids/layer": "bronze", "ids/source": defn.source},
        metadata={"dagster/column_schema": bronze_schema(defn), "format": defn.format,
                  "encoding": defn.encoding},
        op_tags={"ids/source": defn.source},
        check_specs=[AssetCheckSpec(
            RECONCILE_CHECK, asset=key, blocking=True,
            description="Every delivered record is in bronze or in quarantine.")],
        retry_policy=TRANSIENT_RETRY,
    )
    def _bronze(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
        return ingest_partition(context, defn, lake)

    return _bronze


def bronze_assets() -> list:
    return [build_bronze_asset(d) for d in load_sources().values()]
