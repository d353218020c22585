"""Identity assets: the master person index built from the silver person records."""

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetOut,
    AssetSpec,
    Config,
    Failure,
    MaterializeResult,
    multi_asset,
)

from assets.keys import MODELS, OWNERS, TRANSIENT_RETRY, identity_key, silver_key
from ids_lakehouse import audit, delta
from ids_lakehouse.identity import linkage, mpi
from ids_lakehouse.identity.quality import pairwise_quality
from pipelines.resources import LakeResource

MIN_CROSS_SOURCE_F1 = 0.95


# Stewards write their decisions with the CLI, outside any run; every build reads them.
steward_decisions = AssetSpec(
    identity_key(mpi.STEWARD_TABLE[0]), description=mpi.STEWARD_TABLE[1], group_name="identity",
    owners=OWNERS, kinds={"delta"}, tags={"ids/layer": "identity"})


class IdentityConfig(Config):
    retrain: bool = False
    """Train a new model version instead of reusing the latest saved one (audited)."""
    full_rebuild: bool = False
    """Score every pair again instead of only new and changed records."""


@multi_asset(
    outs={t: AssetOut(key=identity_key(t), description=d, owners=OWNERS,
                      kinds={"delta", "splink", "duckdb"}, tags={"ids/layer": "identity"})
          for t, d in mpi.TABLES.items()},
    deps=[silver_key("person_record"), steward_decisions.key],
    group_name="identity",
    check_specs=[
        AssetCheckSpec("every_record_has_one_person", asset=identity_key("person_xref"),
                       blocking=True,
                       description="Each silver person record has exactly one person_id."),
        AssetCheckSpec("linkage_quality", asset=identity_key("person_xref"),
                       description="Pairwise precision/recall/F1 against the generator's "
                                   "truth when it is present; skipped on real data."),
    ],
    retry_policy=TRANSIENT_RETRY,
)
def identity(context: AssetExecutionContext, config: IdentityConfig, lake: LakeResource):
    layout = lake.layout()
    records = delta.frame(layout.silver("person_record"), columns=linkage.SILVER_COLUMNS)
    try:
        result = mpi.update(layout, records, context.run.run_id, retrain=config.retrain,
                            full=config.full_rebuild)
    except linkage.NotEnoughToTrain as exc:
        # Not transient: the same records fail the same way (retries only hid the reason
        # behind "Exceeded max_retries").
        raise Failure(description=str(exc), allow_retries=False) from None
    if result.rolled_back:
        context.log.warning(f"rolled back what a dead identity build left: "
                            f"{result.rolled_back}")
    if result.trained:
        yield AssetMaterialization(asset_key=MODELS, metadata={
            "version": result.model_version, "records": result.records})
        audit.record(layout, "model_trained", f"linkage model v{result.model_version}",
                     asset="identity", run_id=context.run.run_id,
                     **audit.launched_by(dict(context.run.tags)),
                     details={"version": result.model_version, "records": result.records,
                              "requested": config.retrain})
    if result.untrained is not None:
        context.log.warning(f"no linkage model yet, so nothing is linked: {result.untrained}. "
                            "Each person record is its own person until a run's records "
                            "can train a model (the next run tries again).")
    context.log.info(f"{result.mode} linkage: scored {result.rescored:,} of "
                     f"{result.records:,} records -> {result.people:,} people; "
                     f"events {result.events}; {result.review_pairs:,} pairs to review")
    yield _coverage(records, result.tables["person_xref"])
    yield _quality(lake, result.tables["person_xref"])
    common: dict[str, int | str | dict[str, int]] = {
        "model_version": result.model_version, "run_trained_model": result.trained,
        "rolled_back_rows": result.rolled_back,
        "linkage_mode": result.mode, "records_rescored": result.rescored,
        **({"no_model_because": result.untrained} if result.untrained else {})}
    for table in mpi.TABLES:
        yield MaterializeResult(asset_key=identity_key(table), metadata={
            **common, "dagster/row_count": result.tables[table].height,
            **({"people": result.people, "events": result.events}
               if table == "person_xref" else {})})


def _coverage(records: pl.DataFrame, xref: pl.DataFrame) -> AssetCheckResult:
    ids = records.select((pl.col("source") + ":" + pl.col("source_record_id"))
                         .alias("unique_id"))
    missing = ids.join(xref, on="unique_id", how="anti").height
    duplicated = xref["unique_id"].is_duplicated().sum()
    return AssetCheckResult(asset_key=identity_key("person_xref"),
                            check_name="every_record_has_one_person",
                            passed=missing == 0 and duplicated == 0,
                            metadata={"records_without_person": missing,
                                      "records_with_several": int(duplicated)})


def _quality(lake: LakeResource, xref: pl.DataFrame) -> AssetCheckResult:
    truth_path = lake.landing / "_truth" / "person_truth.parquet"
    if not truth_path.exists():
        return AssetCheckResult(asset_key=identity_key("person_xref"),
                                check_name="linkage_quality", passed=True,
                                description="skipped: no truth file (real data)",
                                metadata={"skipped": True})
    q = pairwise_quality(xref, pl.read_parquet(truth_path))
    return AssetCheckResult(asset_key=identity_key("person_xref"), check_name="linkage_quality",
                            passed=q["cross_source"]["f1"] >= MIN_CROSS_SOURCE_F1,
                            metadata={"skipped": False, **q,
                                      "min_cross_source_f1": MIN_CROSS_SOURCE_F1})
