"""Sensors: the landing sensor turns each new landed file into a partition and a run of its
source's ingest job; run-status sensors write every failed and every successful run (job,
who or what launched it) to the audit log. A landing tick that fails is written to the
audit log too, so a team sees it without opening the sensor's page. (The downstream
refresh is in pipelines/automation.py.)"""

from __future__ import annotations

import json
import os

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from assets.keys import files_partitions, files_partitions_name
from ids_lakehouse import audit
from ids_lakehouse.ingest import landing
from ids_lakehouse.ingest.landing import LandedFile, Refusal, parse_partition_key
from ids_lakehouse.sources import load_sources
from pipelines.jobs import ingest_job_name, ingest_jobs
from pipelines.resources import LakeResource


def interval(env: str, default: int) -> int:
    """Sensor intervals in seconds; tests shorten them through the environment."""
    value = os.environ.get(env, str(default))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{env}={value!r} is not a whole number of seconds")
    return int(value)


def plan_landing(files: list[LandedFile], registered: dict[str, list[str]]
                 ) -> tuple[dict[str, list[str]], list[RunRequest], list[str]]:
    """New partitions per source, run requests, and notes on files skipped as repeats."""
    new: dict[str, list[str]] = {}
    runs, notes = [], []
    for f in files:
        keys = registered.get(f.source, [])
        if f.partition_key in keys:
            continue
        same_bytes = [k for k in keys if parse_partition_key(k)[1] == f.sha256[:12]]
        if same_bytes or f.sha256[:12] in {k[-12:] for k in new.get(f.source, [])}:
            notes.append(f"{f.name}: same bytes as an earlier delivery; not ingested again")
            continue
        new.setdefault(f.source, []).append(f.partition_key)
        runs.append(RunRequest(run_key=f"{f.source}:{f.sha256}", partition_key=f.partition_key,
                               job_name=ingest_job_name(f.source),
                               tags={"ids/source": f.source, "ids/trigger": "landing"}))
    return new, runs, notes


def report_refusals(lake, refused: list[Refusal], reported: dict[str, str], log) -> dict:
    """Write each entry the scanner cannot place to the audit log and the sensor log once
    (again only when its reason changes); returns what is reported now."""
    now = {r.name: r.reason for r in refused}
    for r in refused:
        if reported.get(r.name) != r.reason:
            log.warning(f"landing: {r.name} is not ingested: {r.reason}")
            audit.record(lake, "landing_refused", f"{r.name}: {r.reason}",
                         via="sensor:landing_sensor",
                         details={"entry": r.name, "reason": r.reason})
    return now


@sensor(name="landing_sensor", jobs=list(ingest_jobs.values()),
        minimum_interval_seconds=interval("IDS_LANDING_SENSOR_INTERVAL_S", 30),
        default_status=DefaultSensorStatus.RUNNING,
        description="Registers each new landed file as a partition of its source and requests "
                    "its ingest; reports once anything in the landing zone it cannot place.")
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource):
    try:
        return _landing_tick(context, lake)
    except Exception as exc:
        # Class only: an exception message may quote a path or a value.
        audit.record(lake.layout(), "sensor_tick_failed",
                     f"landing_sensor tick failed: {type(exc).__name__}",
                     via="sensor:landing_sensor",
                     details={"sensor": "landing_sensor", "error": type(exc).__name__})
        raise


def _landing_tick(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    sources = load_sources()
    state = json.loads(context.cursor or "{}")
    known = {k: tuple(v) for k, v in state.get("files", {}).items()}
    found = landing.survey(lake.landing, sources, known=known)
    reported = report_refusals(lake.layout(), found.refused, state.get("refused", {}),
                               context.log)
    registered = {s: list(context.instance.get_dynamic_partitions(files_partitions_name(s)))
                  for s in sources}
    new, runs, notes = plan_landing(found.files, registered)
    for note in notes:
        context.log.info(note)
    cursor = json.dumps({"files": {str(f.path): [f.size, f.path.lstat().st_mtime_ns, f.sha256]
                                   for f in found.files}, "refused": reported})
    if not runs:
        return SensorResult(skip_reason=SkipReason("no new files in the landing zone"),
                            cursor=cursor)
    return SensorResult(
        run_requests=runs, cursor=cursor,
        dynamic_partitions_requests=[files_partitions(s).build_add_request(keys)
                                     for s, keys in new.items()])


@run_failure_sensor(name="audit_run_failures", default_status=DefaultSensorStatus.RUNNING,
                    description="Writes every failed run to the audit log.")
def audit_run_failures(context: RunFailureSensorContext, lake: LakeResource):
    run = context.dagster_run
    failed_steps = [e.step_key for e in context.get_step_failure_events()]
    # Step keys and error classes only: an exception message may quote data.
    # A step failure event's data is a StepFailureData (not a public class): its error,
    # if any, is read by name.
    errors = sorted({error.cls_name for e in context.get_step_failure_events()
                     if (error := getattr(e.event_specific_data, "error", None))})
    audit.record(lake.layout(), "run_failed", f"run {run.run_id} of {run.job_name} failed",
                 run_id=run.run_id, **audit.launched_by(dict(run.tags)),
                 details={"job": run.job_name, "steps": failed_steps, "errors": errors,
                          "tags": dict(run.tags), "recorded_by": "sensor:audit_run_failures"})


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, name="audit_run_successes",
                   default_status=DefaultSensorStatus.RUNNING,
                   description="Writes every successful run, and who or what launched it, to "
                               "the audit log.")
def audit_run_successes(context: RunStatusSensorContext, lake: LakeResource):
    run = context.dagster_run
    audit.record(lake.layout(), "run_succeeded", f"run {run.run_id} of {run.job_name} succeeded",
                 run_id=run.run_id, **audit.launched_by(dict(run.tags)),
                 details={"job": run.job_name, "tags": dict(run.tags),
                          "recorded_by": "sensor:audit_run_successes"})
