"""Silver assets: every source conformed to the canonical model (ids_lakehouse/conform/run.py),
with blocking contract, reconciliation, quarantine-rate and field-validity checks, and a
Great Expectations check. This module only translates the domain's results into Dagster
events."""

import datetime as dt

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetOut,
    Config,
    MaterializeResult,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    multi_asset,
    multi_asset_check,
)

from assets.keys import (
    CONFORMED,
    OWNERS,
    TRANSIENT_RETRY,
    bronze_key,
    quarantine_key,
    silver_key,
)
from ids_lakehouse import catalog
from ids_lakehouse.conform import run
from ids_lakehouse.model import load_model
from ids_lakehouse.sources import load_sources
from pipelines.resources import LakeResource
from schemas.silver import contract

ENTITIES = run.entities()


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
        AssetCheckSpec("field_validity", asset=person, blocking=True,
                       description="Per source and identifying field: the share of "
                                   "delivered values nulled as invalid within the source's "
                                   "max_invalid_rate (a jump signals a changed format)."),
    ]
    return specs


class ConformConfig(Config):
    full_rebuild: bool = False
    """Conform every source again, even one whose bronze table, data-model declarations
    and conform code are unchanged since its silver rows last passed conform's checks."""


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
def conform(context: AssetExecutionContext, config: ConformConfig, lake: LakeResource):
    layout = lake.layout()
    done = run.conform_all(layout, context.run.run_id, contract, full_rebuild=config.full_rebuild,
                           log=lambda level, message: getattr(context.log, level)(message))
    for r in done.conformed:
        if r.quarantine.height:
            yield AssetMaterialization(asset_key=quarantine_key(r.source), metadata={
                "stage": "conform", "rows_quarantined": r.quarantine.height})
    if done.conformed:
        yield AssetMaterialization(asset_key=CONFORMED, metadata={
            "sources_conformed": sorted(r.source for r in done.conformed)})
    for check in done.checks:
        yield AssetCheckResult(asset_key=silver_key(check.table), check_name=check.name,
                               passed=check.passed, metadata=check.metadata)
    for entity in ENTITIES:
        per_source = {r.source: r.entities[entity].height for r in done.conformed
                      if entity in r.entities}
        yield MaterializeResult(asset_key=silver_key(entity), metadata={
            "dagster/row_count": done.rows[entity], "rows_by_source": per_source,
            "sources_conformed": sorted(per_source), "sources_unchanged": done.unchanged,
            "rows_replayed_by_source": {r.source: r.rows_replayed for r in done.conformed},
            "sources_refused": done.refused, "path": str(layout.silver(entity)),
            "dagster/column_lineage": silver_lineage(entity)})


@multi_asset_check(
    specs=[AssetCheckSpec("expectations", asset=silver_key(e),
                          description="Great Expectations suite derived from the data model, "
                                      "over the rows of the sources conformed in the same run "
                                      "(run on its own: the whole tables); Data Docs in "
                                      "LAKE_ROOT/docs/data_docs.")
           for e in ENTITIES],
)
def silver_expectations(context: AssetCheckExecutionContext, lake: LakeResource):
    from ids_lakehouse.conform.expectations import run_suites

    layout = lake.layout()
    fresh, frames, replayed = run.expectations(layout, context.run.run_id)
    docs = layout.docs("data_docs")
    outcome = run_suites(frames, docs)
    context.log.info(f"Data Docs: {docs / 'index.html'}")
    scope = fresh or "all sources"
    for entity in ENTITIES:
        if entity not in frames:
            # No source in scope delivers this entity (a person-only agency's night, or
            # none delivers it yet): nothing to validate is not a failed expectation.
            yield AssetCheckResult(asset_key=silver_key(entity), check_name="expectations",
                                   passed=True, metadata={
                                       "evaluated": 0, "rows_validated": 0,
                                       "sources_validated": scope,
                                       "skipped": f"no {entity} rows in scope"})
            continue
        o = outcome[entity]
        yield AssetCheckResult(asset_key=silver_key(entity), check_name="expectations",
                               passed=o["success"], metadata={
                                   "evaluated": o["evaluated"], "failed": o["failed"],
                                   "sources_validated": scope, "rows_validated":
                                   frames[entity].height if entity in frames else 0,
                                   "rows_replayed_not_revalidated": replayed.get(entity, 0),
                                   "data_docs": str(docs / "index.html"),
                                   "checked_at": dt.datetime.now(dt.timezone.utc).isoformat()})
