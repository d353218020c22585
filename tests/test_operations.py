"""Operations: the nightly schedule refreshes only when something new landed, and failed
runs are written to the audit log."""

from __future__ import annotations

import shutil

import polars as pl
from dagster import (
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    instance_for_test,
    materialize,
)

from assets.keys import bronze_key, files_partitions
from ids_lakehouse import audit
from ids_lakehouse.config import Lake
from ids_lakehouse.ingest.landing import scan
from ids_lakehouse.sources import load_sources
from pipelines.definitions import build_definitions
from pipelines.resources import LakeResource
from pipelines.schedules import nightly_refresh
from pipelines.sensors import audit_run_failures


def _ingest_one(defs, instance, landing, source: str, extra: bytes = b""):
    f = next(f for f in scan(landing, load_sources()) if f.source == source)
    if extra:
        path = f.path.with_name("broken_" + f.path.name)
        path.write_bytes(extra)
        f = next(g for g in scan(landing, load_sources()) if g.path == path)
    instance.add_dynamic_partitions(files_partitions(source).name, [f.partition_key])
    return materialize(list(defs.assets), selection=[bronze_key(source)],
                       partition_key=f.partition_key, instance=instance,
                       resources=defs.resources, raise_on_error=False)


def _tick(instance, resources):
    """One evaluation of the nightly schedule; the context is closed after it (it enters
    an instance of its own from the reference)."""
    with build_schedule_context(instance=instance, resources=resources) as context:
        return nightly_refresh(context)


def test_nightly_refresh_runs_only_after_new_deliveries(tmp_path, tiny_landing, monkeypatch):
    shutil.copytree(tiny_landing, tmp_path / "landing")
    monkeypatch.setenv("LANDING_ROOT", str(tmp_path / "landing"))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    defs = build_definitions()
    lake = {"lake": LakeResource.from_env()}
    with instance_for_test() as instance:  # schedule contexts need an instance reference
        first = _tick(instance, lake)
        assert isinstance(first, SkipReason)                       # nothing landed yet
        assert _ingest_one(defs, instance, tmp_path / "landing", "hmis").success
        request = _tick(instance, lake)
        assert isinstance(request, RunRequest) and request.tags["ids/stale"] == "hmis"
        assert request.tags["ids/writes"] == "downstream"


def test_a_steward_decision_alone_makes_the_nightly_refresh_run(tmp_path, monkeypatch):
    """And the steward_decisions sensor requests that refresh at once, once per decision."""
    from dagster import AssetMaterialization, build_sensor_context

    from pipelines.schedules import steward_decisions_sensor

    def sensed(instance):
        with build_sensor_context(instance=instance, resources=lake) as context:
            return steward_decisions_sensor(context)

    from assets.keys import identity_key, silver_key
    from ids_lakehouse.identity.mpi import record_decision

    monkeypatch.setenv("LANDING_ROOT", str(tmp_path / "landing"))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    lake = {"lake": LakeResource.from_env()}
    with instance_for_test() as instance:
        # The state after a nightly build: deliveries, silver and identity all built.
        for key in (bronze_key("hmis"), silver_key("person_record"),
                    identity_key("person_xref")):
            instance.report_runless_asset_event(AssetMaterialization(key))
        assert isinstance(_tick(instance, lake), SkipReason)
        assert isinstance(sensed(instance), SkipReason)
        record_decision(Lake(tmp_path / "lake"), "hmis:1", "medicaid:2", "non_match",
                        "steward@example.gov", "different people")
        request = _tick(instance, lake)
        assert isinstance(request, RunRequest)
        assert request.tags["ids/stale"] == "steward_decisions"
        now = sensed(instance)
        assert isinstance(now, RunRequest) and now.run_key == sensed(instance).run_key
        assert now.tags["ids/trigger"] == "steward_decisions"
        # Once the index is built after the decision, nothing more is requested.
        instance.report_runless_asset_event(AssetMaterialization(identity_key("person_xref")))
        assert isinstance(sensed(instance), SkipReason)


def test_failed_runs_are_audited_without_data(tmp_path, tiny_landing, monkeypatch):
    shutil.copytree(tiny_landing, tmp_path / "landing")
    monkeypatch.setenv("LANDING_ROOT", str(tmp_path / "landing"))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = _ingest_one(defs, instance, tmp_path / "landing", "hmis",
                             extra=b"PersonalID,FirstName\n1,Zebulon\n")
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in instance.all_logs(result.run_id)
                       if e.dagster_event and e.dagster_event.event_type_value ==
                       "PIPELINE_FAILURE")
        with build_run_status_sensor_context(
                sensor_name="audit_run_failures", dagster_instance=instance, dagster_run=run,
                dagster_event=failure.dagster_event,
                resources={"lake": LakeResource.from_env()}) as status:
            audit_run_failures(status.for_run_failure())
    events = pl.from_arrow(audit.read(Lake(tmp_path / "lake")))
    failed = events.filter(pl.col("kind") == "run_failed")
    assert failed.height == 1 and failed["run_id"][0] == result.run_id
    assert "bronze__hmis" in failed["details"][0]
    assert "Zebulon" not in "".join(events["details"].to_list() + events["message"].to_list())
