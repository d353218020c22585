"""The operating path under the real `dagster-daemon`: landed files become ingest runs, a
run killed mid-ingest is retried, accepted deliveries refresh everything downstream without
a person, a bad file fails alone (audited) and never reaches silver, and a corrected file
flows through."""

from __future__ import annotations

import json
import os
import shutil

import polars as pl
import pyarrow.compute as pc
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from ids_lakehouse import audit, delta, zones
from ids_lakehouse.config import Lake
from ids_lakehouse.ingest.delivery import ledger
from ids_lakehouse.sources import load_sources
from pipelines.instance import ensure_instance
from tests.daemon import running_daemon, wait_for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def deployment(tmp_path, tiny_landing, monkeypatch):
    landing = tmp_path / "landing"
    shutil.copytree(tiny_landing, landing)
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    env = {**os.environ, "LANDING_ROOT": str(landing), "LAKE_ROOT": str(tmp_path / "lake"),
           "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           "IDS_PSEUDONYM_KEY": "test-only-key-" + "0" * 32,
           "IDS_LANDING_SENSOR_INTERVAL_S": "2", "IDS_AUTOMATION_INTERVAL_S": "5",
           "IDS_CRASH_DIR": str(crashes)}
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", env["IDS_PSEUDONYM_KEY"])   # to verify anchors
    monkeypatch.delenv("IDS_DAGSTER_PROFILE", raising=False)
    ensure_instance()
    with DagsterInstance.get() as instance:   # create the SQLite storages before the daemon
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(AssetKey("none"))
    return landing, Lake(tmp_path / "lake"), crashes, env, tmp_path / "daemon.log"


def _runs(instance, **tags) -> list:
    return list(instance.get_runs(filters=RunsFilter(tags=tags)))


def _idle(instance) -> bool:
    busy = instance.get_runs(filters=RunsFilter(statuses=[
        DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED]))
    return not busy


def _refreshed_after(instance, moment: float) -> bool:
    """A downstream refresh started after `moment` has succeeded and nothing is running."""
    runs = _runs(instance, **{"ids/writes": "downstream"})
    done = [r for r in runs if r.status == DagsterRunStatus.SUCCESS
            and instance.get_run_record_by_id(r.run_id).start_time > moment]
    return bool(done) and _idle(instance)


def _retries(instance) -> int:
    """Ingest steps whose process died and that Dagster retried (the multiprocess executor
    runs each step in its own process, so kill -9 takes the step; its retry policy, or the
    instance's run retries when the run worker dies, starts it again)."""
    from dagster import DagsterEventType

    n = 0
    for run in instance.get_runs():
        if run.job_name.startswith("ingest_"):
            n += len(instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))
            n += bool(run.tags.get("dagster/parent_run_id"))
    return n


def _decided(lake, name: str) -> str | None:
    rows = [r for r in ledger(lake).to_pylist() if r["file"] == name]
    return rows[0]["status"] if rows else None


def test_landed_files_flow_to_the_marts_under_the_daemon(deployment):
    landing, lake, crashes, env, log = deployment
    sources = load_sources()
    manifest = json.loads((landing / "_truth" / "manifest.json").read_text())
    (crashes / "ingest.after_bronze").touch()      # the first ingest to get there: kill -9
    (landing / "unknown_agency").mkdir()

    with running_daemon(env, log), DagsterInstance.get() as instance:
        # 1. Every landed file is ingested; the step killed mid-ingest is detected and
        # retried, and its delivery converges (the row counts below).
        wait_for(lambda: len([r for r in ledger(lake).to_pylist()
                              if r["status"] == "accepted"]) == len(sources),
                 "every source's delivery to be accepted", 300, log)
        assert not (crashes / "ingest.after_bronze").exists()     # the crash happened
        assert _retries(instance) == 1
        for source in sources:
            assert delta.count(lake.bronze(source)) == manifest["agencies"][source]["rows"]

        # 2. Downstream refreshes on its own, through the marts and the releases.
        wait_for(lambda: _refreshed_after(instance, 0), "a downstream refresh", 400, log)
        for mart in ("indicators", "research_person", "contact_directory"):
            assert delta.count(lake.gold(mart)) > 0
        assert (lake.releases("dsa-public-indicators", "indicators") / "v0001").is_dir()
        silver_before = delta.count(lake.silver("enrollment"), pc.field("source") == "hmis")

        # 3. A bad delivery fails alone, audited; it never reaches silver.
        (landing / "hmis" / "hmis_broken.csv").write_bytes(b"PersonalID,Zebulon\n1,Quux\n")
        wait_for(lambda: _decided(lake, "hmis/hmis_broken.csv") == "rejected",
                 "the bad file to be rejected", 120, log)
        wait_for(lambda: _idle(instance), "the instance to be idle", 120, log)
        # The run-failure sensor audits the failed run on its own next tick.
        wait_for(lambda: "run_failed" in audit.read(lake)["kind"].to_pylist(),
                 "the failed run to be audited", 120, log)
        events = pl.from_arrow(audit.read(lake))
        kinds = events["kind"].to_list()
        assert "ingest_failed" in kinds and "run_failed" in kinds
        refused = events.filter(pl.col("kind") == "landing_refused")
        assert refused["message"].to_list() == [
            "unknown_agency: no source definition has this folder's name"]
        assert "Zebulon" not in "".join(events["message"].to_list() +
                                        events["details"].to_list())
        assert delta.count(lake.silver("enrollment"),
                           pc.field("source") == "hmis") == silver_before

        # 4. A corrected file flows all the way through on its own.
        src = next(p for p in (landing / "hmis").glob("hmis_client_*.csv"))
        corrected = landing / "hmis" / "hmis_client_corrected.csv"
        corrected.write_bytes(src.read_bytes() + b"\n")
        landed_at = corrected.stat().st_mtime
        wait_for(lambda: _decided(lake, "hmis/hmis_client_corrected.csv") == "accepted",
                 "the corrected file to be accepted", 120, log)
        wait_for(lambda: _refreshed_after(instance, landed_at), "a refresh after the "
                 "corrected file", 400, log)
        files = pl.from_arrow(delta.read(lake.silver("person_record"),
                                         filter=pc.field("source") == "hmis",
                                         columns=["_file"]))["_file"].unique().to_list()
        assert files == ["hmis/hmis_client_corrected.csv"]

        # 5. Who did what: every run is audited with how it was launched, the chain written
        # by the daemon, its sensors and the runs' processes verifies, and every file the
        # daemon's runs wrote has its zone's modes.
        wait_for(lambda: _idle(instance), "the instance to be idle", 120, log)
        wait_for(lambda: sum(k == "run_succeeded" for k in audit.read(lake)["kind"].to_pylist())
                 >= 3, "successful runs to be audited", 120, log)
        events = audit.read(lake).to_pylist()
        launched = {e["via"] for e in events if e["kind"] == "run_succeeded"}
        assert "run sensor:landing_sensor" in launched, launched
        assert all(e["actor"] and e["os_user"] and e["host"] for e in events)
        verified = audit.verify(lake)
        assert verified.intact, verified.problems
        assert zones.violations(lake.root) == []
