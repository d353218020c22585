"""The PostgreSQL production instance profile: a real bronze partition is materialized on
an instance whose storage is a fresh PostgreSQL database, then the run, its
materialization and its check evaluation are read back from that database through a
new instance object (and directly with psycopg2)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipelines.instance import PROFILES, ensure_instance, profile_template

PG_HOST, PG_PORT, PG_ADMIN_USER = "127.0.0.1", 5432, "postgres"
START_HINT = ("PostgreSQL must be running on 127.0.0.1:5432 with trust auth (it always is "
              "on these machines). Start it with:\n"
              "    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")


def _admin_connection(dbname: str = "postgres"):
    import psycopg2

    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_ADMIN_USER,
                                dbname=dbname, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        error = str(exc).strip()
    else:
        conn.autocommit = True
        return conn
    pytest.fail(f"cannot connect to PostgreSQL: {error}\n{START_HINT}", pytrace=False)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh, uniquely named database, dropped afterwards whatever happens."""
    name = f"ids_dagster_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def pg_env(tmp_path, tiny_landing, monkeypatch):
    """DAGSTER_HOME with the postgres profile, a private copy of the tiny landing zone and
    an empty lake; the test points DAGSTER_PG_DB at its own database. (The database is
    made in the test, not in a fixture, so a server that is down is a test FAILURE.)"""
    landing = tmp_path / "landing"
    shutil.copytree(tiny_landing, landing)
    monkeypatch.setenv("LANDING_ROOT", str(landing))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", "test-only-key-" + "0" * 32)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # restored after
    monkeypatch.setenv("DAGSTER_PG_HOST", PG_HOST)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(PG_PORT))
    monkeypatch.setenv("DAGSTER_PG_USER", PG_ADMIN_USER)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")  # trust auth
    monkeypatch.delenv("IDS_DAGSTER_PROFILE", raising=False)
    home = ensure_instance("postgres")
    assert (home / "dagster.yaml").read_text() == profile_template("postgres").read_text()
    return home


def test_profiles_share_the_run_limits_and_postgres_reads_its_connection_from_env():
    embedded = yaml.safe_load(profile_template("embedded").read_text())
    postgres = yaml.safe_load(profile_template("postgres").read_text())
    for section in ("concurrency", "run_monitoring", "run_retries"):
        assert postgres[section] == embedded[section], section
    assert embedded["run_monitoring"]["enabled"] and embedded["run_retries"]["enabled"]
    assert embedded["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert postgres["telemetry"] == {"enabled": False}
    db = postgres["storage"]["postgres"]["postgres_db"]
    assert db.pop("scheme") == "postgresql+psycopg2"
    assert db == {"hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
                  "username": {"env": "DAGSTER_PG_USER"},
                  "password": {"env": "DAGSTER_PG_PASSWORD"},
                  "db_name": {"env": "DAGSTER_PG_DB"}}


def test_ensure_instance_defaults_to_embedded_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.delenv("IDS_DAGSTER_PROFILE", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "a"))
    home = ensure_instance()
    assert (home / "dagster.yaml").read_text() == profile_template("embedded").read_text()

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "b"))
    monkeypatch.setenv("IDS_DAGSTER_PROFILE", "postgres")
    home = ensure_instance()
    assert (home / "dagster.yaml").read_text() == profile_template("postgres").read_text()
    # An existing dagster.yaml is kept, whatever the profile asked for.
    assert ensure_instance("embedded") == home
    assert (home / "dagster.yaml").read_text() == profile_template("postgres").read_text()

    with pytest.raises(ValueError, match="unknown Dagster instance profile"):
        ensure_instance("sqlite")
    assert set(PROFILES) == {"embedded", "postgres", "kubernetes"}


@pytest.mark.postgres
def test_a_bronze_run_is_stored_in_and_read_back_from_postgres(pg_env, monkeypatch):
    home = pg_env
    with fresh_database() as dbname:
        monkeypatch.setenv("DAGSTER_PG_DB", dbname)
        _materialize_and_read_back(home, dbname)


def _materialize_and_read_back(home: Path, dbname: str) -> None:
    from dagster import (
        AssetCheckKey,
        AssetRecordsFilter,
        DagsterEventType,
        DagsterInstance,
        DagsterRunStatus,
        RunsFilter,
        materialize,
    )
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from assets.ingest import RECONCILE_CHECK
    from assets.keys import bronze_key, files_partitions
    from ids_lakehouse import config
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.sources import load_sources
    from pipelines.definitions import build_definitions
    from pipelines.demo import QUIET
    from pipelines.sensors import plan_landing

    defs = build_definitions()  # after LAKE_ROOT/LANDING_ROOT are set: resources read them
    sources = load_sources()
    _, runs, _ = plan_landing(landing.scan(config.landing_root(), sources),
                              {s: [] for s in sources})
    request = next(r for r in runs if r.tags["ids/source"] == "hmis")
    source, partition = "hmis", request.partition_key
    key = bronze_key(source)

    with DagsterInstance.get() as instance:  # DAGSTER_HOME -> the postgres profile
        assert Path(instance.root_directory) == home
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions(files_partitions(source).name, [partition])
        result = materialize([*defs.assets, *(defs.asset_checks or [])], selection=[key],
                             partition_key=partition, instance=instance,
                             resources=defs.resources, run_config=QUIET,
                             tags={"ids/source": source, "ids/trigger": "test"})
        assert result.success
        run_id = result.run_id

    # A new instance object for the same configuration sees only what the database holds.
    with DagsterInstance.from_config(str(home)) as fresh:
        assert isinstance(fresh.run_storage, PostgresRunStorage)
        assert fresh.get_dynamic_partitions(files_partitions(source).name) == [partition]

        [record] = fresh.get_run_records(filters=RunsFilter(run_ids=[run_id]))
        assert record.dagster_run.status == DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["ids/source"] == source
        assert record.dagster_run.tags["dagster/partition"] == partition

        mats = fresh.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=10).records
        assert [m.run_id for m in mats] == [run_id]
        metadata = mats[0].asset_materialization.metadata
        assert metadata["rows_written"].value > 0
        assert metadata["file"].value.endswith(partition.split("@")[0])
        latest = fresh.get_latest_materialization_event(key)
        assert latest is not None and latest.run_id == run_id

        [evaluation] = [e.dagster_event.asset_check_evaluation_data for e in
                        fresh.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]
        assert evaluation.check_name == RECONCILE_CHECK and evaluation.passed
        assert evaluation.asset_key == key
        check = fresh.get_latest_asset_check_evaluation_record(
            AssetCheckKey(key, RECONCILE_CHECK))
        assert check is not None and check.run_id == run_id
        assert check.event.dagster_event.asset_check_evaluation_data.passed

    conn = _admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchall() == [("SUCCESS",)]
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
            assert cur.fetchone()[0] > 5
    finally:
        conn.close()
