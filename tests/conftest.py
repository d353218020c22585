from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ids_lakehouse.config import Lake
from ids_lakehouse.synth.generate import generate
from pipelines.demo import Outcome

TINY_PERSONS = 2000


@pytest.fixture(scope="session")
def tiny_landing(tmp_path_factory) -> Path:
    """A small generated population; read-only for tests (copy before changing)."""
    out = tmp_path_factory.mktemp("landing")
    generate(TINY_PERSONS, seed=7, out=out, chunk_size=300)
    return out


PUBLISHED_KEY = "test-only-key-" + "0" * 32

# The instance the shared build runs on: a persistent one (SQLite files under its home), so
# that tests can read its runs and event log after the build and copy it with the lake.
# Like DagsterInstance.ephemeral(): no compute-log capture; and no telemetry.
INSTANCE_YAML = """\
telemetry:
  enabled: false
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


@contextmanager
def _sqlite_without_fsync():
    """Dagster's SQLite storages commit each event with an fsync: some 3,000 of them for
    one build of the tiny graph, tens of seconds on a slow disk, where the in-memory
    instance spends nothing. A test instance needs no durability against power loss, so
    while this is open every SQLite connection opened through SQLAlchemy skips the fsyncs
    (what is written, and when it is committed, stay the same)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def no_fsync(dbapi_connection, _record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute("PRAGMA synchronous=OFF")

    event.listen(Engine, "connect", no_fsync)
    try:
        yield
    finally:
        event.remove(Engine, "connect", no_fsync)


@dataclass(frozen=True)
class Built:
    """A lake materialized by the real pipeline, with what it was built from and on: the
    landing zone, the audit anchors and the Dagster instance's home."""

    lake: Path
    landing: Path
    anchors: Path
    dagster_home: Path
    outcome: Outcome

    def instance(self):
        """A context manager: the instance the lake was built with (its runs, event log,
        dynamic partitions), opened afresh."""
        from dagster import DagsterInstance

        return DagsterInstance.from_config(str(self.dagster_home))


@pytest.fixture(scope="session")
def published_build(tmp_path_factory, tiny_landing) -> Built:
    """Every asset (marts and releases included) materialized once by the real pipeline
    from the tiny population, under PUBLISHED_KEY, on a persistent Dagster instance.
    Read-only, the instance included: tests that change anything use `published_copy`."""
    root = tmp_path_factory.mktemp("published")
    shutil.copytree(tiny_landing, root / "landing")
    (root / "dagster_home").mkdir()
    (root / "dagster_home" / "dagster.yaml").write_text(INSTANCE_YAML)
    built = Built(lake=root / "lake", landing=root / "landing",
                  anchors=root / "anchors.jsonl", dagster_home=root / "dagster_home",
                  outcome=Outcome())
    with pytest.MonkeyPatch.context() as mp:
        build_everything(mp, built, str(built.lake))
    assert not built.outcome.runs_failed and not built.outcome.checks_failed, built.outcome
    return built


def build_everything(mp: pytest.MonkeyPatch, built: Built, lake_root: str) -> None:
    """Every asset materialized by the real pipeline from `built`'s landing zone into
    `lake_root`, under PUBLISHED_KEY, on `built`'s Dagster instance; `mp` keeps the
    environment it sets until the caller's context ends."""
    from dagster import DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.demo import materialize_everything

    mp.setenv("LANDING_ROOT", str(built.landing))
    mp.setenv("LAKE_ROOT", lake_root)
    mp.setenv("IDS_PSEUDONYM_KEY", PUBLISHED_KEY)
    mp.setenv("IDS_AUDIT_ANCHORS", str(built.anchors))
    with _sqlite_without_fsync(), \
            DagsterInstance.from_config(str(built.dagster_home)) as instance:
        materialize_everything(build_definitions(), instance, built.outcome)


@pytest.fixture(scope="session")
def published(published_build) -> Path:
    """The lake of `published_build`, with its audit anchors in
    `published.parent / "anchors.jsonl"`. Read-only: copy before changing."""
    return published_build.lake


@pytest.fixture
def published_copy(tmp_path, published_build, monkeypatch) -> Iterator[Built]:
    """A private copy of `published_build` (landing zone, lake, anchors and Dagster
    instance) that a test may change, with the environment pointing at it. The copy keeps
    the lake's name (its audit signing key), as a lake that moves does."""
    root = tmp_path / "built"
    root.mkdir()
    for name in ("landing", "lake", "dagster_home"):
        shutil.copytree(published_build.lake.parent / name, root / name, symlinks=True)
    shutil.copy(published_build.anchors, root / "anchors.jsonl")
    copy = Built(lake=root / "lake", landing=root / "landing",
                 anchors=root / "anchors.jsonl", dagster_home=root / "dagster_home",
                 outcome=published_build.outcome)
    monkeypatch.setenv("LANDING_ROOT", str(copy.landing))
    monkeypatch.setenv("LAKE_ROOT", str(copy.lake))
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", PUBLISHED_KEY)
    monkeypatch.setenv("IDS_AUDIT_ANCHORS", str(copy.anchors))
    monkeypatch.setenv("IDS_LAKE_NAME", str(published_build.lake.resolve()))
    with _sqlite_without_fsync():
        yield copy


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def tiny_silver(tmp_path_factory, tiny_landing) -> Lake:
    """Bronze and silver built from the tiny population (read-only: copy before writing)."""
    from ids_lakehouse.conform import state
    from ids_lakehouse.conform.mapping import conform_source
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.ingest.delivery import ingest_delivery
    from ids_lakehouse.sources import load_sources
    from schemas.silver import contract

    lake = Lake(tmp_path_factory.mktemp("silver") / "lake")
    sources = load_sources()
    for landed in landing.scan(tiny_landing, sources):
        assert ingest_delivery(sources[landed.source], landed, lake, "setup").accepted
    for source, defn in sources.items():
        rows = state.bronze_to_conform(lake, defn)
        state.write(lake, conform_source(defn, rows, contract), "setup")
    return lake


@pytest.fixture
def silver_lake(tmp_path, tiny_silver) -> Lake:
    shutil.copytree(tiny_silver.root, tmp_path / "lake")
    return Lake(tmp_path / "lake")


@pytest.fixture(autouse=True)
def _audit_anchors_per_test(tmp_path, monkeypatch):
    """The audit log's anchors default to DAGSTER_HOME (the repository's .dagster_home
    when unset): each test keeps its own, beside its tmp_path. The log is signed with the
    pseudonym secret, which every writer needs: tests get a throwaway one unless they
    set their own."""
    monkeypatch.setenv("IDS_AUDIT_ANCHORS", str(tmp_path / "audit_anchors.jsonl"))
    if len(os.environ.get("IDS_PSEUDONYM_KEY", "")) < 32:
        monkeypatch.setenv("IDS_PSEUDONYM_KEY", "test-only-default-key-" + "9" * 32)


@pytest.fixture(autouse=True)
def _no_stale_dagster_defs_state():
    """Dagster keeps the current definitions-state storage in a context variable that
    entering an instance sets. A schedule or sensor context built from an instance
    reference enters an instance of its own and, unless the context is closed, leaves the
    variable pointing at it after it is gone; the next in-process materialization then
    fails with 'undefined DagsterInstance weakref'. Tests close such contexts; this makes
    sure each test starts and ends without one."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
    yield
    _current_storage.set(None)
