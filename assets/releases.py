"""Release assets: one per agreement in data_model/agreements/."""

import datetime as dt

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    DagsterInstance,
    Failure,
    MaterializeResult,
    asset,
)

from assets.keys import gold_key, mart_checks, release_key
from ids_lakehouse import audit, releases, zones
from ids_lakehouse.agreements import Agreement, load_agreements
from ids_lakehouse.deid.policy import load_policy
from pipelines.check_status import latest_check_status
from pipelines.resources import LakeResource


def check_status(instance: DagsterInstance, marts: list[str]
                 ) -> dict[str, dict[str, bool | None]]:
    """The latest result of every blocking check on each mart (None: never ran)."""
    keys = {m: [AssetCheckKey(gold_key(m), name) for name in mart_checks(m)] for m in marts}
    latest = latest_check_status(instance, [k for ks in keys.values() for k in ks])
    return {m: {k.name: latest[k] for k in ks} for m, ks in keys.items()}


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
        layout = lake.layout()
        status = check_status(context.instance, list(agreement.release))
        try:
            manifest = releases.release(layout, agreement, dt.date.today(), status,
                                        context.run.run_id, load_policy().min_cell_size,
                                        by=audit.launched_by(dict(context.run.tags)))
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
