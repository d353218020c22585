"""Scale benchmark, two parts (BENCH_SCALE_PARTS, comma-separated; default both; a part
not run is shown as last measured, from bench/out/scale/):

- `pipeline`: the whole pipeline on DuckDB at 5,000,000 people on this machine, through
  the product's own path, exactly as the pipeline benchmark runs its sizes
  (bench/pipeline.py `one_run`: land, then each layer in its own worker process, full run
  and incremental night): wall time and peak RSS per layer, or where it stopped.
- `spark`: the identity step on Spark (IDS_LINKAGE_ENGINE=spark, local mode on this
  machine) as a ratio against DuckDB, on the same records in the same run.

Inputs: the linkage benchmark's cached population (bench/linkage.py `prepared`: generated,
landed, ingested and conformed by the product's own functions). Each run is
`identity.mpi.build` in a fresh lake and a fresh process (bench/linkage_ours.py
`task_ours`): "first" trains the model, predicts, clusters and assigns IDs; "second"
re-scores every pair with the saved model (`full=True`). The engines alternate run by run.
Peak memory is the whole process tree's (Spark's JVM and Python workers are children of
the run's process), sampled every 0.2 s.

Sizes (spark): 1,000,000 people in full mode, 20,000 with --quick; (pipeline) 5,000,000
in full mode, 50,000 with --quick."""

from __future__ import annotations

import json
import os
import threading
import time

from bench.common import OUT, Sample, log, remove, run_in_subprocess, scratch_dir, summarize

SECTION = "scale"
ENGINES = ("duckdb", "spark")
PARTS = ("pipeline", "spark")
ROOT = OUT / "scale"
PIPELINE_BUDGET_MIN = float(os.environ.get("BENCH_SCALE_PIPELINE_BUDGET_MIN", "120"))


class _TreePeak:
    """The largest RSS of this process and its children, sampled in a thread."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.process, self.every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> _TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def task_identity(engine: str, records: str, truth: str, lake: str, full: bool = False
                  ) -> dict:
    """`task_ours` on the engine, with the process tree's peak RSS."""
    os.environ["IDS_LINKAGE_ENGINE"] = engine
    from bench.linkage_ours import task_ours

    with _TreePeak() as peak:
        out = task_ours(records, truth, lake, full=full)
    out["tree_peak_rss_mb"] = peak.peak / 2**20
    return out


def run(quick: bool, command: str) -> str:
    parts = [p.strip() for p in os.environ.get("BENCH_SCALE_PARTS", ",".join(PARTS)).split(",")
             if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"BENCH_SCALE_PARTS: unknown part(s) {sorted(unknown)}; "
                         f"choose from {PARTS}")
    kind = "quick" if quick else "full"
    ROOT.mkdir(parents=True, exist_ok=True)
    for part in parts:
        body = _pipeline(quick, command) if part == "pipeline" else _spark(quick, command)
        (ROOT / f"{part}_{kind}.md").write_text(body)
    sections = [f"## Scale ({kind})", ""]
    for part in PARTS:
        saved = ROOT / f"{part}_{kind}.md"
        sections += [saved.read_text() if saved.exists() else
                     f"### {part}: not measured yet (`BENCH_SCALE_PARTS={part}`)", ""]
    return "\n".join(sections)


def _pipeline(quick: bool, command: str) -> str:
    """The pipeline benchmark's run at one larger size, with its own time budget."""
    import datetime as dt

    from bench import pipeline

    persons = 50_000 if quick else 5_000_000
    pipeline._deadline = time.monotonic() + PIPELINE_BUDGET_MIN * 60
    started = time.perf_counter()
    prep = pipeline.prepared(persons)
    size: dict = {"prep": prep, "runs": [], "errors": []}
    log(f"scale pipeline {persons:,} people")
    r = pipeline.one_run(prep, incremental=True)
    if r["full"]:
        size["runs"].append(r)
    if r.get("error"):
        size["errors"].append(f"run 1: {r['error']}")
    (ROOT / f"pipeline_{persons}.json").write_text(json.dumps(size, indent=2, default=str))
    minutes = (time.perf_counter() - started) / 60
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### The pipeline on DuckDB at {persons:,} people", "",
             f"Measured {when} by `{command}` (`BENCH_SCALE_PARTS=pipeline`), "
             f"{minutes:.1f} min including generation; the same path and layers as *Full "
             f"pipeline* (IDS_DUCKDB_MEMORY {os.environ.get('IDS_DUCKDB_MEMORY', '3GiB')}, "
             f"{PIPELINE_BUDGET_MIN:.0f}-minute budget).", ""]
    lines += pipeline._size_section(persons, size)
    full = r.get("full", {})
    if len(full) == len(pipeline.LAYERS) and persons == 5_000_000:
        total = sum(v["seconds"] for v in full.values())
        peak = max(v["peak_rss_mb"] for v in full.values())
        lines += [f"Against the targets (5,000,000 people on 2 cores within 30 min, peak RSS "
                  f"within 12 GiB): full run {total / 60:.1f} min "
                  f"({'met' if total <= 1800 else 'not met'}), peak {peak / 1024:.1f} GiB "
                  f"({'met' if peak <= 12 * 1024 else 'not met'})"
                  + (f", incremental night {night / total:.1%} of it (target 15%: "
                     f"{'met' if night <= 0.15 * total else 'not met'})"
                     if (night := sum(v["seconds"] for v in r.get("incr", {}).values()))
                     and len(r["incr"]) == len(pipeline.LAYERS) else "") + ".", ""]
    return "\n".join(lines)


def _spark(quick: bool, command: str) -> str:
    from bench.linkage import prepared

    persons = 20_000 if quick else 1_000_000
    runs = 2 if quick else 1
    paths = prepared(persons)
    samples: dict[str, list[Sample]] = {}
    started = time.perf_counter()
    for i in range(runs):
        order = ENGINES if i % 2 == 0 else ENGINES[::-1]
        for engine in order:
            lake = scratch_dir(f"scale-{engine}")
            try:
                for kind, full in (("first", False), ("second", True)):
                    s = run_in_subprocess("scale:task_identity", timeout=6 * 3600,
                                          engine=engine, records=str(paths["records"]),
                                          truth=str(paths["truth"]), lake=str(lake), full=full)
                    samples.setdefault(f"{engine}-{kind}", []).append(s)
                    log(f"scale {persons:,} {engine}-{kind}: {s.seconds:.1f}s, tree peak "
                        f"{s.extra['tree_peak_rss_mb']:.0f} MiB, cross F1 "
                        f"{s.extra['quality']['cross_source']['f1']}")
            finally:
                remove(lake)
    return _report(quick, persons, samples, (time.perf_counter() - started) / 60, command)


def _report(quick: bool, persons: int, samples: dict[str, list[Sample]], minutes: float,
            command: str) -> str:
    import datetime as dt

    def med(name: str) -> float:
        return summarize([s.seconds for s in samples[name]]).median

    def peak(name: str) -> float:
        return max(s.extra["tree_peak_rss_mb"] for s in samples[name])

    def f1(name: str) -> str:
        return ", ".join(str(s.extra["quality"]["cross_source"]["f1"]) for s in samples[name])

    rows = []
    for kind in ("first", "second"):
        duck, spark = f"duckdb-{kind}", f"spark-{kind}"
        rows.append(f"| {kind} | {med(duck):.1f} s | {med(spark):.1f} s | "
                    f"**{med(spark) / med(duck):.2f}×** | {peak(duck):,.0f} MiB | "
                    f"{peak(spark):,.0f} MiB | {f1(duck)} / {f1(spark)} |")
    phases = samples["spark-first"][0].extra.get("phases", {})
    duck_phases = samples["duckdb-first"][0].extra.get("phases", {})
    phase_rows = [f"| {p} | {duck_phases.get(p, 0):.1f} s | {phases.get(p, 0):.1f} s |"
                  for p in phases if phases.get(p, 0) >= 0.5 or duck_phases.get(p, 0) >= 0.5]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"### Linkage on Spark ({'quick' if quick else 'full'})",
        "",
        f"Measured {when} by `{command}`.",
        "",
        f"Identity (`mpi.build`) on {persons:,} people's records, DuckDB against Spark in "
        f"local mode on this machine, {len(samples['spark-first'])} run(s) each, engines "
        f"alternating; {minutes:.1f} min in all. *first*: train, predict, "
        "cluster, IDs in a fresh lake; *second*: every pair re-scored with the saved model. "
        "Peak RSS is the process tree's (Spark's JVM and Python workers included).",
        "",
        "| run | DuckDB (median) | Spark (median) | Spark / DuckDB | DuckDB peak | "
        "Spark peak | cross-source F1 (DuckDB / Spark) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Phases of the first run:",
        "",
        "| phase | DuckDB | Spark |",
        "|---|---|---|",
        *phase_rows,
    ])
