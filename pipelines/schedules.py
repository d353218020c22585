"""The nightly refresh: rebuild everything downstream of bronze when any bronze partition
has been materialized since silver was last built; otherwise skip and say why."""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)

from assets.conform import silver_key
from assets.ingest import bronze_key
from ids_lakehouse.sources import load_sources

DOWNSTREAM = AssetSelection.groups("conform", "identity", "marts", "releases", "governance")
nightly_job = define_asset_job("nightly_refresh", selection=DOWNSTREAM,
                               description="Conform, link, publish and release.")


def _latest(instance, key) -> float | None:
    event = instance.get_latest_materialization_event(key)
    return event.timestamp if event else None


def stale(instance) -> list[str]:
    """Sources delivered since silver was last built."""
    built = _latest(instance, silver_key("person_record"))
    out = []
    for source in load_sources():
        landed = _latest(instance, bronze_key(source))
        if landed is not None and (built is None or landed > built):
            out.append(source)
    return out


@schedule(job=nightly_job, cron_schedule="0 2 * * *", execution_timezone="America/Los_Angeles",
          default_status=DefaultScheduleStatus.RUNNING, name="nightly_refresh")
def nightly_refresh(context: ScheduleEvaluationContext):
    sources = stale(context.instance)
    if not sources:
        return SkipReason("no new deliveries since the last build")
    return RunRequest(tags={"ids/trigger": "nightly", "ids/stale_sources": ",".join(sources)})
