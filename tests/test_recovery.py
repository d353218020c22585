"""kill -9 at every crash point of every layer, then a normal re-run: the lake converges to
what an uninterrupted run produces (same tables and row counts, the same people, no
duplicate rows, release versions or events, no orphan staging folders, and the person index
consistent with person_xref)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ids_lakehouse import crash, delta
from ids_lakehouse.config import Lake

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(1200)


def _demo(work: Path, landing: Path, crashes: Path | None = None) -> int:
    """`python -m pipelines demo` over `landing`: the product's own path."""
    manifest = json.loads((landing / "_truth" / "manifest.json").read_text())
    env = {**os.environ, "LANDING_ROOT": str(landing), "LAKE_ROOT": str(work / "lake"),
           "DAGSTER_HOME": str(work / "dagster_home"),
           "IDS_PSEUDONYM_KEY": "test-only-key-" + "0" * 32}
    env.pop("IDS_DAGSTER_PROFILE", None)
    env.pop("IDS_AUDIT_ANCHORS", None)     # each lake's own, under its DAGSTER_HOME
    if crashes is not None:
        env["IDS_CRASH_DIR"] = str(crashes)
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "demo", "--persons",
         str(manifest["requested"]), "--seed", str(manifest["seed"])],
        cwd=work, env=env, capture_output=True, timeout=600)
    return proc.returncode


def _people(lake: Lake) -> set[frozenset[str]]:
    xref = pl.from_arrow(delta.read(lake.identity("person_xref"),
                                    columns=["unique_id", "person_id"]))
    return {frozenset(g) for g in xref.group_by("person_id").agg("unique_id")["unique_id"]
            .to_list()}


def _summary(lake: Lake) -> dict:
    tables = {log.parent.relative_to(lake.root).as_posix(): delta.count(log.parent)
              for log in lake.root.glob("**/_delta_log")
              if log.parent != lake.audit()}
    events = pl.from_arrow(delta.read(lake.identity("person_id_events")))
    releases = sorted(p.relative_to(lake.root).as_posix()
                      for p in lake.root.glob("*/releases/*/*"))
    return {"tables": tables, "people": _people(lake),
            "events": dict(events.group_by("event").len().iter_rows()),
            "releases": releases}


def test_kill_at_every_crash_point_then_rerun_converges(tmp_path, tiny_landing):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for work in (reference, crashed):
        work.mkdir()
        shutil.copytree(tiny_landing, work / "landing")
    assert _demo(reference, reference / "landing") == 0

    crashes = tmp_path / "crashes"
    crashes.mkdir()
    for point in crash.POINTS:
        (crashes / point).touch()
    reached = []
    for attempt in range(len(crash.POINTS) + 1):
        before = set(p.name for p in crashes.iterdir())
        code = _demo(crashed, crashed / "landing", crashes)
        after = set(p.name for p in crashes.iterdir())
        if code != -signal.SIGKILL:
            break
        assert len(before - after) == 1, "each killed run died at exactly one point"
        reached += sorted(before - after)
    assert code == 0 and sorted(reached) == sorted(crash.POINTS), (code, reached)

    want, got = _summary(Lake(reference / "lake")), _summary(Lake(crashed / "lake"))
    assert got["tables"] == want["tables"]
    assert got["people"] == want["people"]
    assert got["events"] == want["events"]
    assert got["releases"] == want["releases"]
    lake = Lake(crashed / "lake")
    index = pl.from_arrow(delta.read(lake.identity("person_index")))["person_id"]
    xref_ids = set(pl.from_arrow(delta.read(lake.identity("person_xref")))["person_id"])
    events = pl.from_arrow(delta.read(lake.identity("person_id_events")))
    assert index.is_unique().all() and xref_ids <= set(index)
    assert set(events["person_id"]) == set(index), "every minted ID has its event, no other"
    assert not list(lake.root.glob("*/releases/*/.*.building"))
