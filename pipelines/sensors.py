"""The landing sensor: a new file under LANDING_ROOT/<source>/ becomes a partition of
bronze/<source> and a run that ingests exactly that file."""


import json

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from assets.ingest import bronze_key, files_partitions
from ids_lakehouse import config
from ids_lakehouse.ingest import landing
from ids_lakehouse.ingest.landing import LandedFile, parse_partition_key
from ids_lakehouse.sources import load_sources


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
                               asset_selection=[bronze_key(f.source)],
                               tags={"ids/source": f.source}))
    return new, runs, notes


@sensor(name="landing_sensor", minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Registers each new landed file as a partition and requests its ingest.")
def landing_sensor(context: SensorEvaluationContext):
    sources = load_sources()
    known = {k: tuple(v) for k, v in json.loads(context.cursor or "{}").items()}
    files = landing.scan(config.landing_root(), sources, known=known)
    registered = {s: list(context.instance.get_dynamic_partitions(files_partitions(s).name))
                  for s in sources}
    new, runs, notes = plan_landing(files, registered)
    for note in notes:
        context.log.info(note)
    cursor = json.dumps({str(f.path): [f.size, f.path.stat().st_mtime_ns, f.sha256]
                         for f in files})
    if not runs:
        return SensorResult(skip_reason=SkipReason("no new files in the landing zone"),
                            cursor=cursor)
    return SensorResult(
        run_requests=runs, cursor=cursor,
        dynamic_partitions_requests=[files_partitions(s).build_add_request(keys)
                                     for s, keys in new.items()])


@run_failure_sensor(name="audit_run_failures", default_status=DefaultSensorStatus.RUNNING,
                    description="Writes every failed run to LAKE_ROOT/audit/events.")
def audit_run_failures(context: RunFailureSensorContext):
    from ids_lakehouse import audit

    run = context.dagster_run
    failed_steps = [e.step_key for e in context.get_step_failure_events()]
    # Step keys and error classes only: an exception message may quote data.
    errors = sorted({e.event_specific_data.error.cls_name
                     for e in context.get_step_failure_events()
                     if e.event_specific_data and e.event_specific_data.error})
    audit.record(config.lake(), "run_failed", f"run {run.run_id} of {run.job_name} failed",
                 run_id=run.run_id, details={"job": run.job_name, "steps": failed_steps,
                                              "errors": errors, "tags": dict(run.tags)})
