"""Release assets: one per agreement in data_model/agreements/."""

import datetime as dt

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    asset,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from assets.marts import gold_key, mart_checks
from ids_lakehouse import audit, releases, zones
from ids_lakehouse.agreements import Agreement, load_agreements
from ids_lakehouse.deid.policy import load_policy
from pipelines.resources import LakeResource


def release_key(agreement_id: str) -> AssetKey:
    return AssetKey(["releases", agreement_id])


def check_status(instance, marts: list[str]) -> dict[str, dict[str, bool | None]]:
    """The latest result of every blocking check on each mart (None: never ran)."""
    keys = {m: [AssetCheckKey(gold_key(m), name) for name in mart_checks(m)] for m in marts}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [k for ks in keys.values() for k in ks])
    status = {}
    for mart, ks in keys.items():
        status[mart] = {}
        for k in ks:
            record = latest.get(k)
            done = record is not None and record.status != AssetCheckExecutionRecordStatus.PLANNED
            status[mart][k.name] = (record.status == AssetCheckExecutionRecordStatus.SUCCEEDED
                                    if done else None)
    return status


def build_release_asset(agreement: Agreement):
    @asset(
        key=release_key(agreement.id),
        deps=[gold_key(m) for m in agreement.release],
        group_name="releases",
        description=f"{agreement.title}. Recipient: {agreement.recipient.organisation}; "
                    f"purpose: {agreement.purpose}; in force {agreement.effective} to "
                    f"{agreement.expires}. Versioned extract with manifest under "
                    f"LAKE_ROOT/<zone>/releases/{agreement.id}/.",
        owners=[agreement.approver, *agreement.data_owners],
        kinds={"parquet", "python"},
        tags={"ids/layer": "release", "ids/purpose": agreement.purpose},
    )
    def _release(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
        store = lake.lake()
        status = check_status(context.instance, list(agreement.release))
        try:
            manifest = releases.release(store, agreement, dt.date.today(), status,
                                        context.run_id, load_policy().min_cell_size,
                                        by=audit.launched_by(context.run.tags))
        except releases.ReleaseRefused as exc:
            raise Failure(description=str(exc), allow_retries=False, metadata={
                "refusals": [r.__dict__ for r in exc.refusals]}) from None
        except zones.ZoneError as exc:      # e.g. a planted link: one clear line
            raise Failure(description=str(exc), allow_retries=False) from None
        return MaterializeResult(metadata={
            "version": manifest["version"], "recipient": agreement.recipient.organisation,
            "files": manifest["files"], "inputs": manifest["inputs"],
            "dagster/row_count": sum(f["rows"] for f in manifest["files"])})

    return _release


def release_assets() -> list:
    return [build_release_asset(a) for a in load_agreements().values()]
