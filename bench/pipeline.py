"""Full-pipeline benchmark: every asset materialized on a fresh lake and a fresh Dagster
instance, layer by layer, then an incremental night on the lake that run left behind.

Inputs: a generated population (`ids_lakehouse.synth.generate`), cached per size under
bench/out/pipeline/ (git-ignored), and a small extra delivery for the incremental night:
~1% as many people generated with another seed, whose medicaid and hmis rows have their
record ids re-prefixed (the generator's ids come from a per-agency counter, so a second
population would otherwise reuse the first one's ids). Every source is a `snapshot` source
(conform reads only its latest file), so the next night's medicaid / hmis delivery is the
original file's bytes plus those new rows, landed under a new (later) file name.

One run = a fresh scratch lake, landing zone (hard links to the cached files) and Dagster
instance (`DagsterInstance.local_temp` in the scratch dir, so it persists between the
layer processes). Each layer is a separate worker process, reusing the lake and instance
the previous layer left, so wall time and peak RSS (VmHWM) are per layer:

  bronze    - every landed file's bronze partition (all sources), as the landing sensor
              would request them (`plan_landing`), one Dagster run per file;
  conform   - silver/* (and the silver expectations checks);
  identity  - identity/* (master person index: Splink predict, cluster, stable ids);
  marts     - gold/* and the DuckDB warehouse;
  releases  - releases/* and the catalog.

The full pipeline's time is the sum of the layers' measured sections (imports and Dagster
start-up of each worker excluded; the whole processes are reported too). The incremental
night lands the extra files and runs the same five layers again: only the new partitions
are ingested, everything downstream re-runs, identity is incremental. person_ids of
records that existed before and changed are counted from identity/person_xref.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import (
    OUT,
    BenchError,
    Stats,
    append_to_snapshot,
    log,
    remove,
    rss_mb,
    run_in_subprocess,
    scratch_dir,
    summarize,
)

SECTION = "pipeline"
SEED = 20250301
EXTRA_SEED = 20250302
GEN_VERSION = 2
ROOT = OUT / "pipeline"
LAYERS = ("bronze", "conform", "identity", "marts", "releases")
EXTRA_SOURCES = {"medicaid": ("member_id", "WA", "WX"), "hmis": ("PersonalID", "HM", "HX")}
EXTRA_SHARE = 0.01
EXTRA_NAMES = {"medicaid": "medicaid_enrollment_2026-01-01.csv",
               "hmis": "hmis_client_2026-01-01.csv"}
# Issue 21's targets: the full pipeline at 1,000,000 people in 3 minutes within 4.5 GiB;
# the incremental night at most 10% of the full run at 1,000,000 people, 20% at 100,000.
TARGET_1M_S = 180
TARGET_1M_RSS_MB = 4.5 * 1024
TARGET_INCR = {1_000_000: 0.10, 100_000: 0.20}
# Time budget of the whole pipeline benchmark, from its start: no layer runs past it (a
# layer still running then is killed and reported). BENCH_PIPELINE_BUDGET_MIN overrides it.
BUDGET_MIN = float(os.environ.get("BENCH_PIPELINE_BUDGET_MIN", "45"))
MIN_LEFT_1M_S = 14 * 60      # start the 1,000,000 size only with this much time left...
MIN_FREE_1M_GIB = 12         # ...and this much available RAM (identity peaks ~7 GiB)
KEY = "bench-pipeline-test-key-0123456789abcdef"


# -- preparation (cached) ---------------------------------------------------------------

def prepared(persons: int) -> dict:
    folder = ROOT / f"persons_{persons}_s{SEED}_g{GEN_VERSION}"
    info = folder / "prepared.json"
    if not info.exists():
        folder.mkdir(parents=True, exist_ok=True)
        s = run_in_subprocess("pipeline:task_prepare", timeout=4 * 3600, persons=persons,
                              folder=str(folder))
        info.write_text(json.dumps(s.extra | {"generate_s": s.seconds,
                                              "peak_rss_mb": s.peak_rss_mb}, indent=2))
        log(f"generated {persons:,} people in {s.seconds:.0f}s (+ extra delivery "
            f"{s.extra['extra_s']:.0f}s)")
    return json.loads(info.read_text()) | {"folder": str(folder)}


def task_prepare(persons: int, folder: str) -> dict:
    import polars as pl

    from ids_lakehouse.synth.generate import generate

    folder = Path(folder)
    for sub in ("landing", "extra", "extra_gen"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = generate(persons, seed=SEED, out=folder / "landing")
    gen_s = time.perf_counter() - t0
    peak = rss_mb()
    t0 = time.perf_counter()
    extra_people = max(50, int(persons * EXTRA_SHARE))
    generate(extra_people, seed=EXTRA_SEED, out=folder / "extra_gen")
    extra_rows = {}
    for source, (col, old, new) in EXTRA_SOURCES.items():
        codec = "utf-8" if source == "medicaid" else "cp1252"
        src = next((folder / "extra_gen" / source).glob("*.csv*"))
        orig = next((folder / "landing" / source).glob("*.csv*"))
        df = pl.read_csv(src.read_bytes().decode(codec).encode("utf-8"), infer_schema=False)
        df = df.with_columns(pl.col(col).str.replace(f"^{old}", new))
        # Every source is a `snapshot` source: the next night's delivery is the whole
        # extract again, i.e. yesterday's bytes plus the new rows.
        append_to_snapshot(orig, df, codec, folder / "extra" / source / EXTRA_NAMES[source])
        extra_rows[source] = df.height
    shutil.rmtree(folder / "extra_gen", ignore_errors=True)
    return {"seconds": gen_s, "base_rss_mb": 0.0, "peak_rss_mb": peak,
            "persons": manifest.get("persons", persons),
            "agencies": {k: v.get("rows") for k, v in manifest.get("agencies", {}).items()},
            "extra_people": extra_people, "extra_rows": extra_rows,
            "extra_s": time.perf_counter() - t0}


# -- one layer, in its own worker ---------------------------------------------------------

def _layer_keys(defs, layer: str) -> list:
    from pipelines.demo import downstream_keys

    keys = downstream_keys(defs)

    def top(k):
        return k.path[0]

    want = {"conform": {"silver"}, "identity": {"identity"},
            "marts": {"gold", "warehouse", "disclosure"},
            "releases": {"releases", "catalog"}}[layer]
    return [k for k in keys if top(k) in want]


def task_layer(layer: str, work: str, snapshot: str | None = None) -> dict:
    work = Path(work)
    os.environ.update({"LAKE_ROOT": str(work / "lake"), "LANDING_ROOT": str(work / "landing"),
                       "DAGSTER_HOME": str(work / "dagster_home"),
                       "IDS_PSEUDONYM_KEY": os.environ.get("IDS_PSEUDONYM_KEY", KEY)})
    (work / "dagster_home").mkdir(exist_ok=True)
    from dagster import DagsterInstance, materialize

    from assets.keys import bronze_key, files_partitions
    from ids_lakehouse import config
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.sources import load_sources
    from pipelines.definitions import build_definitions
    from pipelines.demo import QUIET, Outcome, table_counts
    from pipelines.sensors import plan_landing

    defs = build_definitions()
    assets = [*defs.assets, *(defs.asset_checks or [])]
    outcome = Outcome()
    with DagsterInstance.local_temp(tempdir=str(work / "dagster_home")) as instance:
        base = rss_mb()
        started = time.perf_counter()
        runs = 0
        if layer == "bronze":
            sources = load_sources()
            files = landing.scan(config.landing_root(), sources)
            registered = {s: list(instance.get_dynamic_partitions(files_partitions(s).name))
                          for s in sources}
            new, plan, _notes = plan_landing(files, registered)
            for source, keys in new.items():
                instance.add_dynamic_partitions(files_partitions(source).name, keys)
            for run in plan:
                source = run.tags["ids/source"]
                result = materialize(assets, selection=[bronze_key(source)],
                                     partition_key=run.partition_key, instance=instance,
                                     resources=defs.resources, raise_on_error=False,
                                     run_config=QUIET, tags={"ids/source": source,
                                                             "ids/trigger": "bench"})
                outcome.add(f"bronze/{source} [{run.partition_key}]", result)
                runs += 1
        else:
            result = materialize(assets, selection=_layer_keys(defs, layer),
                                 instance=instance, resources=defs.resources,
                                 raise_on_error=False, run_config=QUIET,
                                 tags={"ids/trigger": "bench"})
            outcome.add(layer, result)
            runs += 1
        seconds = time.perf_counter() - started
        peak = rss_mb()
    lake = config.lake_root()
    prefixes = {"bronze": ("bronze", "quarantine"), "conform": ("silver",),
                "identity": ("identity",), "marts": ("gold",), "releases": ("releases",)}
    counts = {name: rows for name, rows in table_counts(lake)
              if name.split("/")[1] in prefixes[layer]}
    if layer == "releases":
        counts["files under releases/"] = sum(1 for p in lake.glob("*/releases/**/*")
                                              if p.is_file())
    xref = config.Lake(lake).identity("person_xref")
    if snapshot and xref.exists():
        import polars as pl

        from ids_lakehouse import delta

        pl.from_arrow(delta.read(xref,
                                 columns=["unique_id", "person_id"])).write_parquet(snapshot)
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak, "runs": runs,
            "runs_failed": outcome.runs_failed, "checks_passed": outcome.checks_passed,
            "checks_failed": outcome.checks_failed, "rows": counts}


# -- one full run + incremental night, in the parent --------------------------------------

_deadline = time.monotonic() + BUDGET_MIN * 60    # reset when run() starts


def _seconds_left() -> float:
    return _deadline - time.monotonic()


def _past_stop() -> bool:
    return _seconds_left() <= 0


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024 ** 2
    return 0.0


def one_run(prep: dict, incremental: bool) -> dict:
    folder = Path(prep["folder"])
    work = scratch_dir(f"pipeline-{prep['persons']}")
    out: dict = {"full": {}, "incr": {}}
    try:
        shutil.copytree(folder / "landing", work / "landing", copy_function=os.link,
                        ignore=shutil.ignore_patterns())
        phases = [("full", None)] + ([("incr", None)] if incremental else [])
        for phase, _ in phases:
            if phase == "incr":
                if _past_stop():
                    out["incr_skipped"] = "time budget spent"
                    break
                for source in EXTRA_SOURCES:
                    src = folder / "extra" / source / EXTRA_NAMES[source]
                    shutil.copyfile(src, work / "landing" / source / src.name)
            for layer in LAYERS:
                snap = None
                if layer == "identity":
                    snap = str(work / f"xref_{phase}.parquet")
                left = _seconds_left()
                if left <= 0:
                    raise BenchError(f"{phase} {layer}: not started, time budget spent")
                try:
                    s = run_in_subprocess("pipeline:task_layer", timeout=left, layer=layer,
                                          work=str(work), snapshot=snap)
                except subprocess.TimeoutExpired:
                    raise BenchError(f"{phase} {layer}: killed at the end of the "
                                     f"{BUDGET_MIN:.0f}-minute budget after {left:.0f}s") \
                        from None
                out[phase][layer] = {"seconds": s.seconds, "peak_rss_mb": s.peak_rss_mb,
                                     "base_rss_mb": s.base_rss_mb, "process_s": s.process_s,
                                     **s.extra}
                log(f"  {phase} {layer:<9} {s.seconds:7.1f}s  peak {s.peak_rss_mb:7.0f} MiB  "
                    f"runs {s.extra['runs']} failed {len(s.extra['runs_failed'])}  checks "
                    f"{s.extra['checks_passed']} ok / {len(s.extra['checks_failed'])} failed")
        if incremental and (work / "xref_incr.parquet").exists():
            import polars as pl

            a = pl.read_parquet(work / "xref_full.parquet")
            b = pl.read_parquet(work / "xref_incr.parquet")
            j = a.join(b, on="unique_id", how="left", suffix="_after")
            j = j.with_columns(pl.col("person_id_after").fill_null("<missing>"))
            out["xref"] = {"before": a.height, "after": b.height,
                           "changed": int((j["person_id"] != j["person_id_after"]).sum()),
                           "missing_after": int((j["person_id_after"] == "<missing>").sum())}
    except BenchError as exc:
        out["error"] = str(exc)[-1500:]
        log(f"run stopped: {str(exc)[-600:]}")
    finally:
        remove(work)
    return out


def run(quick: bool, command: str) -> str:
    global _deadline
    _deadline = time.monotonic() + BUDGET_MIN * 60
    plan = [(20_000, 2)] if quick else [(100_000, 3), (1_000_000, 1)]
    results: dict = {"quick": quick, "command": command, "sizes": {}, "notes": []}
    started = time.perf_counter()
    for persons, runs in plan:
        if _past_stop():
            results["notes"].append(f"{persons:,} people: not run (time budget spent)")
            continue
        if persons >= 1_000_000 and (_seconds_left() < MIN_LEFT_1M_S
                                     or _available_gib() < MIN_FREE_1M_GIB):
            results["notes"].append(
                f"{persons:,} people: not run: it needs ~{MIN_LEFT_1M_S // 60} min and "
                f"~{MIN_FREE_1M_GIB} GiB free RAM (identity peaks ~7 GiB); "
                f"{max(0, _seconds_left()) / 60:.1f} min were left of the "
                f"{BUDGET_MIN:.0f}-minute budget and "
                f"{_available_gib():.1f} GiB were available")
            continue
        prep = prepared(persons)
        size = results["sizes"].setdefault(str(persons), {"prep": prep, "runs": [],
                                                          "errors": []})
        for i in range(runs):
            if _past_stop():
                size["errors"].append(f"run {i + 1}: not started (time budget spent)")
                break
            log(f"pipeline {persons:,} people, run {i + 1}/{runs}")
            r = one_run(prep, incremental=True)
            if r["full"]:
                size["runs"].append(r)
            if r.get("error"):
                size["errors"].append(f"run {i + 1}: {r['error']}")
            _save(results)
    results["elapsed_s"] = time.perf_counter() - started
    _save(results)
    return report(results)


def _save(results: dict) -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    name = "last_quick.json" if results["quick"] else "last_full.json"
    (ROOT / name).write_text(json.dumps(results, indent=2, default=str))


def rerender(quick: bool = False) -> str:
    name = "last_quick.json" if quick else "last_full.json"
    return report(json.loads((ROOT / name).read_text()))


# -- report -------------------------------------------------------------------------------

def _st(vals) -> Stats | None:
    vals = [v for v in vals if v is not None]
    return summarize(vals) if vals else None


def _f(st: Stats | None, spec: str = ".1f", unit: str = "") -> str:
    if st is None:
        return "–"
    if st.n == 1:
        return f"{st.median:{spec}}{unit}"
    return st.fmt(spec, unit)


def _total(run: dict, phase: str) -> float | None:
    layers = run.get(phase) or {}
    if set(layers) != set(LAYERS):
        return None
    return sum(layers[layer]["seconds"] for layer in LAYERS)


def _peak(run: dict, phase: str) -> float | None:
    layers = run.get(phase) or {}
    return max((v["peak_rss_mb"] for v in layers.values()), default=None)


def report(results: dict) -> str:
    lines = ["## Full pipeline", "",
             f"Command: `{results['command']}` (this section: "
             f"`python -m bench --only pipeline{' --quick' if results['quick'] else ''}`).",
             "",
             "Every asset materialized as `pipelines.demo.materialize_everything` does, on "
             "a fresh lake and a fresh Dagster instance (SQLite, `DagsterInstance.local_temp`) "
             "per run, one worker process per layer (each reusing the lake and instance the "
             "previous layer left) so that wall time and peak RSS (VmHWM) are per layer. "
             "Times are the layers' measured sections (Dagster `materialize` calls; the "
             "workers' imports and start-up are excluded, shown as \"process\"). The "
             "incremental night lands the next snapshot delivery of medicaid and of hmis (every "
             "source is a `snapshot` source, so each is yesterday's file plus rows for ~1% as "
             "many new people: another seed, record ids re-prefixed so they are new) on the "
             "lake the full run left, and runs the same five layers again; only the two new "
             "files are ingested.",
             "", "The machine is shared; other work may have run at the same time.", ""]
    sizes = dict(results["sizes"])
    quick_file = ROOT / "last_quick.json"
    if not results["quick"] and quick_file.exists():
        quick = json.loads(quick_file.read_text())
        lines += ["Smaller size from the last `python -m bench --only pipeline --quick` "
                  "(same code, run just before the full sizes):", ""]
        for persons, size in quick["sizes"].items():
            if persons not in sizes:
                lines += _size_section(int(persons), size)
    for persons, size in sizes.items():
        lines += _size_section(int(persons), size)
    for note in results.get("notes", []):
        lines += [f"- {note}"]
    lines += ["", *_targets(results), "", *_findings(sizes), ""]
    if "elapsed_s" in results:
        lines += [f"The benchmark took {results['elapsed_s'] / 60:.1f} min of wall time."]
    return "\n".join(lines)


def _size_section(persons: int, size: dict) -> list[str]:
    runs, prep = size["runs"], size["prep"]
    out = [f"### {persons:,} people ({len(runs)} run{'s' if len(runs) != 1 else ''})", "",
           f"Generation (once, cached): {prep['generate_s']:.1f}s, peak "
           f"{prep['peak_rss_mb']:.0f} MiB; landed rows per source: "
           + ", ".join(f"{k} {v:,}" for k, v in (prep.get("agencies") or {}).items())
           + f". Extra delivery: {prep['extra_people']:,} people -> "
           + ", ".join(f"{k} {v:,} rows" for k, v in prep["extra_rows"].items())
           + " (about 1% of those two sources' rows; fewer of all person records, since the "
           "other four sources get no new delivery).", ""]
    if not runs:
        return out + ["No run completed.", *[f"- {e}" for e in size["errors"]], ""]
    out += ["| layer | full: wall s | full: peak RSS MiB | incremental: wall s | "
            "incremental: peak RSS MiB | rows after full run |",
            "|---|---|---|---|---|---|"]
    for layer in LAYERS:
        full = [r["full"][layer] for r in runs if layer in r["full"]]
        incr = [r["incr"][layer] for r in runs if layer in r.get("incr", {})]
        rows = full[-1]["rows"] if full else {}
        rows_s = "; ".join(f"{k} {v:,}" for k, v in rows.items()) or "–"
        out.append(f"| {layer} | {_f(_st([x['seconds'] for x in full]))} | "
                   f"{_f(_st([x['peak_rss_mb'] for x in full]), '.0f')} | "
                   f"{_f(_st([x['seconds'] for x in incr]))} | "
                   f"{_f(_st([x['peak_rss_mb'] for x in incr]), '.0f')} | {rows_s} |")
    ft = _st([_total(r, "full") for r in runs])
    it = _st([_total(r, "incr") for r in runs])
    fp = _st([sum(v["process_s"] for v in r["full"].values()) for r in runs])
    ip = _st([sum(v["process_s"] for v in r.get("incr", {}).values()) or None
              for r in runs])
    full_peak = _f(_st([_peak(r, 'full') for r in runs]), '.0f')
    out.append(f"| **total** | **{_f(ft)}** | **{full_peak}** "
               f"(max of layers) | **{_f(it)}** | "
               f"**{_f(_st([_peak(r, 'incr') for r in runs]), '.0f')}** | |")
    out.append(f"| total incl. process start-up | {_f(fp)} | | {_f(ip)} | | |")
    ratios = _st([(_total(r, "incr") / _total(r, "full"))
                  if _total(r, "incr") and _total(r, "full") else None for r in runs])
    out += ["", f"Incremental night / full run (measured sections): "
            f"{_f(ratios, '.1%') if ratios else '–'}."]
    last = next((r["incr"] for r in reversed(runs) if set(r.get("incr", {})) == set(LAYERS)),
                None)
    if last:
        want = ("bronze/medicaid", "bronze/hmis", "silver/person_record", "identity/person_xref",
                "identity/person_index")
        # Tables are named with their zone (restricted/bronze/medicaid).
        got = {k.split("/", 1)[1]: v for layer in LAYERS for k, v in last[layer]["rows"].items()
               if k.split("/", 1)[-1] in want}
        out.append("Rows after the incremental night (last run): "
                   + "; ".join(f"{k} {got[k]:,}" for k in want if k in got)
                   + " (bronze keeps every delivery; silver holds each source's latest).")
    xr = [r["xref"] for r in runs if "xref" in r]
    if xr:
        out.append("person_ids of existing records changed by the incremental night: "
                   + ", ".join(f"{x['changed']:,} of {x['before']:,}"
                               + (f" ({x['missing_after']:,} missing after)"
                                  if x['missing_after'] else "") for x in xr)
                   + " (per run); person_xref rows after: "
                   + ", ".join(f"{x['after']:,}" for x in xr) + ".")
    fails, checks_ok = [], []
    for i, r in enumerate(runs, 1):
        for phase in ("full", "incr"):
            for layer, v in r.get(phase, {}).items():
                checks_ok.append(v["checks_passed"])
                for f in v["runs_failed"]:
                    fails.append(f"run {i} {phase} {layer}: Dagster run failed: {f}")
                for c in v["checks_failed"]:
                    fails.append(f"run {i} {phase} {layer}: check failed: {c}")
        if r.get("incr_skipped"):
            fails.append(f"run {i}: incremental night skipped ({r['incr_skipped']})")
    per_run = [sum(v["checks_passed"] for ph in ("full", "incr")
                   for v in r.get(ph, {}).values()) for r in runs]
    out.append(f"Asset checks passed per run (full + incremental): {per_run}; "
               + ("**failures:**" if fails else "no failed check and no failed run."))
    out += [f"- {f}" for f in fails]
    out += [f"- {e}" for e in size["errors"]]
    return out + [""]


def _targets(results: dict) -> list[str]:
    lines = ["**Against target:**", ""]
    big = results["sizes"].get("1000000")
    if big and big["runs"] and _total(big["runs"][0], "full"):
        t = _total(big["runs"][0], "full")
        p = _peak(big["runs"][0], "full")
        lines.append(f"- 1,000,000-person full pipeline within {TARGET_1M_S / 60:.0f} min: "
                     f"{'met' if t <= TARGET_1M_S else 'not met'} ({t / 60:.1f} min).")
        lines.append(f"- 1,000,000-person peak RSS within {TARGET_1M_RSS_MB / 1024:.1f} GiB: "
                     f"{'met' if p <= TARGET_1M_RSS_MB else 'not met'} ({p / 1024:.1f} GiB, "
                     "largest layer process).")
    else:
        lines.append(f"- 1,000,000-person full pipeline within {TARGET_1M_S / 60:.0f} min: "
                     "not measured.")
        lines.append(f"- 1,000,000-person peak RSS within {TARGET_1M_RSS_MB / 1024:.1f} GiB: "
                     "not measured.")
    for persons, size in results["sizes"].items():
        rs = [(_total(r, "incr") / _total(r, "full")) for r in size["runs"]
              if _total(r, "incr") and _total(r, "full")]
        target = TARGET_INCR.get(int(persons))
        if target is None:
            continue
        if rs:
            st = summarize(rs)
            lines.append(f"- incremental night within {target:.0%} of the full run "
                         f"({int(persons):,} people): "
                         f"{'met' if st.median <= target else 'not met'} "
                         f"(median {st.median:.1%}, range {st.min:.1%}–{st.max:.1%}).")
        else:
            lines.append(f"- incremental night within {target:.0%} ({int(persons):,} "
                         "people): not measured.")
    return lines


def _findings(sizes: dict) -> list[str]:
    """Which layer dominates, from the largest size measured."""
    done = [(int(k), v) for k, v in sizes.items() if v["runs"]]
    if not done:
        return []
    persons, size = max(done, key=lambda kv: kv[0])
    out = [f"**Where it goes** ({persons:,} people, medians):", ""]
    for phase, label in (("full", "full run"), ("incr", "incremental night")):
        runs = [r for r in size["runs"] if _total(r, phase)]
        if not runs:
            continue
        secs = {layer: summarize([r[phase][layer]["seconds"] for r in runs]).median
                for layer in LAYERS}
        rss = {layer: summarize([r[phase][layer]["peak_rss_mb"] for r in runs]).median
               for layer in LAYERS}
        total = sum(secs.values())
        top = max(secs, key=secs.get)
        big = max(rss, key=rss.get)
        out.append(f"- {label}: {top} takes {secs[top] / total:.0%} of the time "
                   f"({secs[top]:.1f} of {total:.1f} s); the largest peak RSS is {big}'s "
                   f"({rss[big]:.0f} MiB); " + ", ".join(
                       f"{layer} {secs[layer] / total:.0%}" for layer in LAYERS) + ".")
    out += ["- On a fresh lake the identity layer trains the linkage model (EM) before "
            "predicting every candidate pair; DuckDB's memory is capped (IDS_DUCKDB_MEMORY, "
            "3 GiB by default) and spills inside the lake. On the incremental night the saved "
            "model is reused and only new or changed records are scored; conform redoes only "
            "the two sources with a new delivery, and of those only the rows whose delivered "
            "values changed (the others are replayed from silver/_conform_rows), and the "
            "silver expectations validate only those rows (Great Expectations' import, ~3 s, "
            "is paid whatever their number); the marts and releases are rebuilt in full "
            "(golden records, hold-back, cubes, k-anonymity over the whole population): with "
            "the fixed costs of every layer, that is why the night is a larger share of the "
            "full run than its 1% of new rows."]
    return out
