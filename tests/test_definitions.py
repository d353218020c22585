"""The code location loads, validates from the CLI, and its graph is pinned by a snapshot so
an accidental change to asset keys, dependencies, owners, kinds, tags, freshness, column
schemas, checks, job selections, sensors or schedules fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.txt"


def graph_summary(d: Definitions) -> str:
    repo = d.get_repository_def()
    lines = []
    for key in sorted(repo.asset_graph.get_all_asset_keys(), key=lambda k: k.path):
        node = repo.asset_graph.get(key)
        parts = node.partitions_def.name if hasattr(node.partitions_def, "name") else \
            ("-" if node.partitions_def is None else type(node.partitions_def).__name__)
        condition = node.automation_condition.get_label() if node.automation_condition \
            else "-"
        lines.append(f"asset {key.to_user_string()} group={node.group_name} partitions={parts} "
                     f"automation={condition}")
        deps = ",".join(sorted(k.to_user_string() for k in node.parent_keys)) or "-"
        fresh = node.freshness_policy
        window = (f"warn={fresh.warn_window.to_timedelta()},fail={fresh.fail_window.to_timedelta()}"
                  if fresh is not None else "-")
        tags = {k: v for k, v in sorted(node.tags.items()) if k.startswith("ids/")}
        columns = node.metadata.get("dagster/column_schema")
        schema = ",".join(f"{c.name}:{c.tags.get('classification', '-')}"
                          for c in columns.columns) if columns else "-"
        lines += [f"  deps {deps}", f"  owners {','.join(node.owners) or '-'}",
                  f"  kinds {','.join(sorted(node.kinds)) or '-'} tags {tags}",
                  f"  freshness {window}", f"  columns {schema}"]
    for check in sorted(repo.asset_graph.asset_check_keys, key=str):
        spec = repo.asset_graph.get_check_spec(check)
        lines.append(f"check {check.asset_key.to_user_string()}:{check.name} "
                     f"blocking={spec.blocking}")
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        keys = sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        lines.append(f"job {job.name} assets={','.join(keys)} tags={dict(job.run_tags)}")
    lines += [f"sensor {s.name}" for s in sorted(repo.sensor_defs, key=lambda s: s.name)]
    lines += [f"schedule {s.name} {s.cron_schedule}"
              for s in sorted(repo.schedule_defs, key=lambda s: s.name)]
    return "\n".join(lines) + "\n"


def test_definitions_load():
    Definitions.validate_loadable(defs)


def test_graph_matches_snapshot():
    current = graph_summary(defs)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(current)
    assert current == SNAPSHOT.read_text(), (
        "The asset graph changed. If that is intended, run `UPDATE_SNAPSHOTS=1 make test` "
        "and commit tests/snapshots/definitions.txt.")


def test_every_asset_is_documented_and_owned():
    repo = defs.get_repository_def()
    for key in repo.asset_graph.get_all_asset_keys():
        node = repo.asset_graph.get(key)
        assert node.description, key
        assert node.owners, key
        assert node.kinds, key


def test_cli_validates_the_workspace(tmp_path):
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LAKE_ROOT": str(tmp_path / "lake"),
           "LANDING_ROOT": str(tmp_path / "landing")}
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_group_can_be_selected_and_run_alone():
    """`dagster asset materialize --select group:<g>` (and a job per group) must resolve:
    a multi-asset cannot be split, so all of its outputs belong to one group. (Ingest is
    run per source: each source's files are its own partitions.)"""
    from dagster import AssetSelection, define_asset_job

    repo = defs.get_repository_def()
    groups = {repo.asset_graph.get(k).group_name for k in repo.asset_graph.get_all_asset_keys()}
    jobs = [define_asset_job(f"only_{g}", selection=AssetSelection.groups(g).materializable())
            for g in sorted(groups - {"ingest"})]
    one = Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=jobs,
                      resources=defs.resources)
    for job in jobs:
        assert one.resolve_job_def(job.name).asset_layer.selected_asset_keys
