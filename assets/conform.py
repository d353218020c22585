"""Silver assets: every source conformed to the canonical model, with blocking contract,
reconciliation and quarantine-rate checks, and a Great Expectations check."""

import datetime as dt

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    MaterializeResult,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    multi_asset,
    multi_asset_check,
)

from assets.ingest import TRANSIENT_RETRY, bronze_key
from ids_lakehouse import catalog, delta
from ids_lakehouse.conform import silver
from ids_lakehouse.conform.conform import ConformResult, conform_source
from ids_lakehouse.model import load_model
from ids_lakehouse.sources import load_sources
from pipelines.resources import LakeResource
from schemas import failure_counts
from schemas.silver import contract

ENTITIES = ("person_record", "enrollment", "service_event")
OWNERS = ["data-platform@ids.example.gov", "team:stewards"]


def silver_key(entity: str) -> AssetKey:
    return AssetKey(["silver", entity])


def column_schema(entity: str) -> TableSchema:
    """The entity's columns with their classification and legal regime, from the model."""
    fields = load_model().entities[entity].fields
    return TableSchema(columns=[
        TableColumn(name, f.type, description=f.description,
                    tags={"classification": f.classification, "legal_regime": f.legal_regime})
        for name, f in fields.items()])


def silver_lineage(entity: str) -> TableColumnLineage:
    return TableColumnLineage(deps_by_column={
        field: [TableColumnDep(asset_key=bronze_key(s), column_name=c) for s, c in deps]
        for field, deps in catalog.column_lineage(entity).items()})


def _check_specs() -> list[AssetCheckSpec]:
    specs = [AssetCheckSpec("contract", asset=silver_key(e), blocking=True,
                            description="The published table passes its Pandera contract.")
             for e in ENTITIES]
    person = silver_key("person_record")
    specs += [
        AssetCheckSpec("rows_reconcile", asset=person, blocking=True,
                       description="Per source: bronze rows = silver rows + quarantined rows."),
        AssetCheckSpec("quarantine_rate", asset=person, blocking=True,
                       description="Per source: quarantined share within the source's "
                                   "max_quarantine_rate (a jump signals a schema change)."),
    ]
    return specs


@multi_asset(
    outs={e: AssetOut(key=silver_key(e), description=load_model().entities[e].description,
                      owners=OWNERS, kinds={"delta", "polars", "pandera"},
                      tags={"ids/layer": "silver"},
                      metadata={"dagster/column_schema": column_schema(e)})
          for e in ENTITIES},
    deps=[bronze_key(s) for s in load_sources()],
    group_name="conform",
    check_specs=_check_specs(),
    retry_policy=TRANSIENT_RETRY,
)
def conform(context: AssetExecutionContext, lake: LakeResource):
    store = lake.lake()
    results: list[ConformResult] = []
    for source, defn in load_sources().items():
        bronze = silver.bronze_to_conform(store, defn)
        if bronze is None:
            context.log.warning(f"{source}: no bronze table yet; skipped")
            continue
        result = conform_source(defn, bronze)
        silver.write(store, result, context.run_id)
        results.append(result)
        if any(result.schema_drift.values()):
            context.log.warning(f"{source}: schema drift {result.schema_drift}")
        context.log.info(f"{source}: {result.bronze_rows:,} bronze rows -> "
                         f"{result.row_entity_rows:,} silver, {result.quarantine.height:,} "
                         f"quarantined")
    yield from _check_results(store, results)
    for entity in ENTITIES:
        path = store.silver(entity)
        per_source = {r.source: r.entities[entity].height for r in results
                      if entity in r.entities}
        yield MaterializeResult(asset_key=silver_key(entity), metadata={
            "dagster/row_count": delta.count(path), "rows_by_source": per_source,
            "path": str(path), "dagster/column_lineage": silver_lineage(entity)})


def _check_results(store, results: list[ConformResult]):
    sources = load_sources()
    for entity in ENTITIES:
        path = store.silver(entity)
        errors = (failure_counts(contract(entity), pl.from_arrow(delta.read(path)))
                  if delta.exists(path) else {})
        yield _result(entity, "contract", not errors, {"failures_by_check_and_column": errors})
    rec = {r.source: silver.reconcile(store, r.source, r.bronze_rows) for r in results}
    yield _result("person_record", "rows_reconcile", all(v["reconciles"] for v in rec.values()),
                  {"by_source": rec})
    rates = {r.source: round(r.quarantine.height / r.bronze_rows, 4) if r.bronze_rows else 0.0
             for r in results}
    over = {s: rate for s, rate in rates.items() if rate > sources[s].max_quarantine_rate}
    yield _result("person_record", "quarantine_rate", not over,
                  {"rate_by_source": rates, "over_limit": over,
                   "failures_by_rule": {r.source: r.failures for r in results},
                   "schema_drift": {r.source: r.schema_drift for r in results}})


def _result(entity: str, check: str, passed: bool, metadata: dict) -> AssetCheckResult:
    return AssetCheckResult(asset_key=silver_key(entity), check_name=check, passed=passed,
                            metadata=metadata)


@multi_asset_check(
    specs=[AssetCheckSpec("expectations", asset=silver_key(e),
                          description="Great Expectations suite derived from the data model; "
                                      "Data Docs in LAKE_ROOT/docs/data_docs.")
           for e in ENTITIES],
)
def silver_expectations(context: AssetCheckExecutionContext, lake: LakeResource):
    from ids_lakehouse.conform.expectations import run_suites

    store = lake.lake()
    frames = {e: pl.from_arrow(delta.read(store.silver(e))) for e in ENTITIES
              if delta.exists(store.silver(e))}
    docs = store.root / "docs" / "data_docs"
    outcome = run_suites(frames, docs)
    context.log.info(f"Data Docs: {docs / 'index.html'}")
    for entity in ENTITIES:
        o = outcome.get(entity, {"success": False, "evaluated": 0, "failed": []})
        yield AssetCheckResult(asset_key=silver_key(entity), check_name="expectations",
                               passed=o["success"], metadata={
                                   "evaluated": o["evaluated"], "failed": o["failed"],
                                   "data_docs": str(docs / "index.html"),
                                   "checked_at": dt.datetime.now(dt.timezone.utc).isoformat()})
