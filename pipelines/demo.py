"""`make demo`: generate a small population, ingest every landed file, materialize every
asset on the embedded instance, and print what was built."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ids_lakehouse import config
from ids_lakehouse.storage import LakePath


@dataclass
class Outcome:
    runs_ok: int = 0
    runs_failed: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)

    def add(self, label: str, result) -> None:
        if result.success:
            self.runs_ok += 1
        else:
            self.runs_failed.append(label)
        for event in result.get_asset_check_evaluations():
            name = f"{event.asset_key.to_user_string()}:{event.check_name}"
            if event.passed:
                self.checks_passed += 1
            else:
                self.checks_failed.append(name)


def ensure_landing(persons: int, seed: int) -> Path:
    """Generate only when the landing zone does not already hold this population, so a
    second `make demo` lands the same bytes (and ingests nothing twice)."""
    from ids_lakehouse.synth.generate import generate

    root = config.landing_root()
    manifest = root / "_truth" / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if (m.get("requested"), m.get("seed")) == (persons, seed):
            print(f"landing zone already holds the seed-{seed} population "
                  f"({m['persons']:,} people): {root}")
            return root
        print(f"landing zone holds another population ({m.get('persons')} people, seed "
              f"{m.get('seed')}); new extracts replace those files and land as new "
              "deliveries")
    print(f"generating {persons:,} people (seed {seed}) into {root} ...")
    generate(persons, seed, root)
    return root


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def materialize_everything(defs, instance, outcome: Outcome) -> None:
    from dagster import materialize

    from assets.keys import bronze_key, files_partitions
    from ids_lakehouse import audit
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.ingest.delivery import ledger
    from ids_lakehouse.sources import load_sources
    from pipelines.sensors import plan_landing

    sources = load_sources()
    assets = [*defs.assets, *(defs.asset_checks or [])]
    resources = defs.resources
    found = landing.survey(config.landing_root(), sources)
    for refusal in found.refused:
        print(f"  not ingested: {refusal.name}: {refusal.reason}")
        audit.record(config.lake(), "landing_refused", f"{refusal.name}: {refusal.reason}",
                     via="cli:demo", details={"entry": refusal.name, "reason": refusal.reason})
    files = found.files
    registered = {s: list(instance.get_dynamic_partitions(files_partitions(s).name))
                  for s in sources}
    new, runs, notes = plan_landing(files, registered)
    for note in notes:
        print(f"  {note}")
    for source, keys in new.items():
        instance.add_dynamic_partitions(files_partitions(source).name, keys)
    # A registered file whose ingest never reached a decision (its run died) is ingested
    # again; a decided one (accepted or rejected) is not.
    decided = set(ledger(config.lake())["file_sha256"].to_pylist())
    retry = [(f.source, f.partition_key) for f in files
             if f.partition_key in registered.get(f.source, []) and f.sha256 not in decided]
    todo = [(r.tags["ids/source"], r.partition_key) for r in runs] + retry
    if not todo:
        print("  no new files to ingest")
    for source, partition in todo:
        started = time.perf_counter()
        result = materialize(assets, selection=[bronze_key(source)],
                             partition_key=partition, instance=instance,
                             resources=resources, raise_on_error=False, run_config=QUIET,
                             tags={"ids/source": source, "ids/trigger": "demo"})
        outcome.add(f"bronze/{source} [{partition}]", result)
        status = "ok" if result.success else "FAILED"
        print(f"  ingest {source:<11} {status} ({time.perf_counter() - started:.1f}s)")
    unpartitioned = downstream_keys(defs)
    if unpartitioned:
        result = materialize(assets, selection=unpartitioned, instance=instance,
                             resources=resources, raise_on_error=False, run_config=QUIET,
                             tags={"ids/trigger": "demo"})
        outcome.add("downstream assets", result)


def downstream_keys(defs) -> list:
    """Every asset a run can build that is not a landed file: stewards' decisions are
    external (the CLI writes them)."""
    from dagster import AssetsDefinition

    return [k for a in defs.assets if isinstance(a, AssetsDefinition) and a.is_executable
            and not a.partitions_def for k in a.keys]


def table_counts(root: LakePath) -> list[tuple[str, int]]:
    from ids_lakehouse import delta

    logs: list[LakePath] = []
    logs.extend(root.glob("**/_delta_log"))
    return [(_relative(log.parent, root), delta.count(log.parent))
            for log in sorted(logs, key=str)]


def _relative(path: LakePath, root: LakePath) -> str:
    return str(path)[len(str(root)) + 1:]


def run_demo(persons: int = 5000, seed: int = 42) -> int:
    from dagster import DagsterInstance

    from pipelines.instance import ensure_instance

    config.ensure_demo_key()
    home = ensure_instance()
    ensure_landing(persons, seed)
    from pipelines.definitions import defs

    outcome = Outcome()
    with DagsterInstance.get() as instance:
        materialize_everything(defs, instance, outcome)
    lake = config.lake_root()
    print(f"\nTables in {lake}:")
    for name, rows in table_counts(lake):
        print(f"  {name:<32} {rows:>10,} rows")
    print(f"\nRuns: {outcome.runs_ok} succeeded, {len(outcome.runs_failed)} failed"
          + (f" ({', '.join(outcome.runs_failed)})" if outcome.runs_failed else ""))
    print(f"Checks: {outcome.checks_passed} passed, {len(outcome.checks_failed)} failed"
          + (f" ({', '.join(outcome.checks_failed)})" if outcome.checks_failed else ""))
    docs = config.Lake(lake).docs("data_docs") / "index.html"
    if docs.exists():
        print(f"Data Docs (Great Expectations): {docs}")
    print(f"\nDagster instance: {home}\nOpen the UI with `make ui`, then "
          "http://127.0.0.1:3000 (asset graph, runs, checks).")
    return 1 if outcome.runs_failed or outcome.checks_failed else 0
