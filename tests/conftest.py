from __future__ import annotations

import os
from pathlib import Path

import pytest

from ids_lakehouse.config import Lake
from ids_lakehouse.synth.generate import generate

TINY_PERSONS = 2000


@pytest.fixture(scope="session")
def tiny_landing(tmp_path_factory) -> Path:
    """A small generated population; read-only for tests (copy before changing)."""
    out = tmp_path_factory.mktemp("landing")
    generate(TINY_PERSONS, seed=7, out=out, chunk_size=300)
    return out


PUBLISHED_KEY = "test-only-key-" + "0" * 32


@pytest.fixture(scope="session")
def published(tmp_path_factory, tiny_landing) -> Path:
    """A lake with every asset (marts and releases included) materialized by the real
    pipeline from the tiny population, under PUBLISHED_KEY, with its audit anchors in
    `published.parent / "anchors.jsonl"`. Read-only: copy before changing."""
    import shutil

    from dagster import DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.demo import Outcome, materialize_everything

    root = tmp_path_factory.mktemp("published")
    shutil.copytree(tiny_landing, root / "landing")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDING_ROOT", str(root / "landing"))
        mp.setenv("LAKE_ROOT", str(root / "lake"))
        mp.setenv("IDS_PSEUDONYM_KEY", PUBLISHED_KEY)
        mp.setenv("IDS_AUDIT_ANCHORS", str(root / "anchors.jsonl"))
        with DagsterInstance.ephemeral() as instance:
            outcome = Outcome()
            materialize_everything(build_definitions(), instance, outcome)
    assert not outcome.runs_failed and not outcome.checks_failed, outcome
    return root / "lake"


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
    import shutil

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
