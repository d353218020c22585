"""The nightly refresh: the backstop of the downstream automation. It rebuilds everything
downstream of bronze when a delivery was accepted since silver was last built, or a
steward decided a review pair since the master person index was last built; otherwise it
skips and says why. A steward's decision does not wait for the night: the
steward_decisions sensor requests the same refresh within minutes of it."""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)

from assets.keys import bronze_key, identity_key, silver_key
from ids_lakehouse.identity.mpi import (
    applied_decisions_version,
    decisions_version,
    steward_decisions,
)
from ids_lakehouse.sources import load_sources
from pipelines.jobs import DOWNSTREAM_TAG, nightly_job
from pipelines.resources import LakeResource
from pipelines.sensors import interval


def _latest(instance, key) -> float | None:
    event = instance.get_latest_materialization_event(key)
    return event.timestamp if event else None


def stale(instance, lake: LakeResource) -> list[str]:
    """Why a refresh is due: sources delivered since silver was last built, and
    'steward_decisions' when a decision is newer than the last identity build."""
    built = _latest(instance, silver_key("person_record"))
    out = []
    for source in load_sources():
        landed = _latest(instance, bronze_key(source))
        if landed is not None and (built is None or landed > built):
            out.append(source)
    linked = _latest(instance, identity_key("person_xref"))
    layout = lake.layout()
    honoured = applied_decisions_version(layout)
    if honoured is not None:
        # The index says which decisions it honoured: a decision recorded while it was
        # being built is newer than that, whatever the clocks say.
        if decisions_version(layout) > honoured:
            out.append("steward_decisions")
    else:
        # A datetime column's max: a datetime, or None when no decision was recorded.
        decided = steward_decisions(layout)["decided_at"].max()
        if isinstance(decided, dt.datetime) and linked is not None and \
                decided.timestamp() > linked:
            out.append("steward_decisions")
    return out


@schedule(job=nightly_job, cron_schedule="0 2 * * *", execution_timezone="America/Los_Angeles",
          default_status=DefaultScheduleStatus.RUNNING, name="nightly_refresh")
def nightly_refresh(context: ScheduleEvaluationContext, lake: LakeResource):
    reasons = stale(context.instance, lake)
    if not reasons:
        return SkipReason("no new deliveries or steward decisions since the last build")
    return RunRequest(tags={**DOWNSTREAM_TAG, "ids/trigger": "nightly",
                            "ids/stale": ",".join(reasons)})


@sensor(name="steward_decisions", job=nightly_job, default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval("IDS_DECISIONS_SENSOR_INTERVAL_S", 120),
        description="Applies steward decisions (the console's or the CLI's) without waiting "
                    "for the nightly refresh: requests it when a decision is newer than the "
                    "master person index.")
def steward_decisions_sensor(context: SensorEvaluationContext, lake: LakeResource):
    if "steward_decisions" not in stale(context.instance, lake):
        return SkipReason("no steward decision since the master person index was built")
    # One run per version of the decisions: ticks while it is queued or running request
    # nothing new.
    return RunRequest(run_key=f"decisions-v{decisions_version(lake.layout())}",
                      tags={**DOWNSTREAM_TAG, "ids/trigger": "steward_decisions"})
