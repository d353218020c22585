"""Governance assets: the catalog generated from the declarations."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    MaterializeResult,
    asset,
)

from assets.keys import AUDIT, OWNERS, gold_key, silver_key
from ids_lakehouse import catalog, delta
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.model import load_model
from pipelines.resources import LakeResource


@asset(key=AssetKey(["catalog"]), group_name="governance", owners=OWNERS,
       kinds={"json", "markdown"}, tags={"ids/layer": "governance"},
       # What it documents: drawn after them, and rewritten when they change.
       deps=[*(silver_key(e) for e in load_model().published_entities()),
             *(gold_key(m) for m in load_marts().marts)],
       description="Data dictionary (Markdown) and DCAT-US 1.1 catalog (JSON) generated from "
                   "data_model/: entities, classifications, code lists, source mappings, "
                   "marts and agreements. Written to LAKE_ROOT/docs/catalog/.")
def catalog_files(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    layout = lake.layout()
    files = catalog.write(layout.docs("catalog"))
    if delta.exists(layout.audit()):
        # The audit log is written by every step and the gateway: observed here, nightly.
        context.log_event(AssetObservation(asset_key=AUDIT, metadata={
            "delta_version": delta.table(layout.audit()).version(),
            "dagster/row_count": delta.count(layout.audit())}))
    return MaterializeResult(metadata={k: str(v) for k, v in files.items()})
