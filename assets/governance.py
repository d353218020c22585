"""Governance assets: the catalog generated from the declarations."""

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, asset

from assets.keys import OWNERS
from ids_lakehouse import catalog
from pipelines.resources import LakeResource


@asset(key=AssetKey(["catalog"]), group_name="governance", owners=OWNERS,
       kinds={"json", "markdown"}, tags={"ids/layer": "governance"},
       description="Data dictionary (Markdown) and DCAT-US 1.1 catalog (JSON) generated from "
                   "data_model/: entities, classifications, code lists, source mappings, "
                   "marts and agreements. Written to LAKE_ROOT/docs/catalog/.")
def catalog_files(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    files = catalog.write(lake.layout().docs("catalog"))
    return MaterializeResult(metadata={k: str(v) for k, v in files.items()})
