"""Conform-and-validate benchmark: person records through standardisation and Pandera.

Input: the ingest benchmark's synthetic Medicaid extract (`bench/data.py`: one person record
and one enrollment per row, names, SSNs, phones, addresses, codes), ingested once with
`ingest_file` and cached as the bronze rows (Parquet) under bench/out/conform/. Two
variants, each in a fresh process, their runs interleaved (order alternated):

* conform  - `conform_source(medicaid, bronze)`, the whole bronze -> silver step for one
             source: map, parse dates and codes, standardise names / SSNs / phones (a Polars
             fast path on libphonenumber's metadata for North American numbers, libphone-
             number itself for the rest) / ZIPs / counties / e-mail, validate every entity
             with its row-level Pandera contract, and split rows into silver and quarantine.
             Timed in memory; Pandera validation inside it is timed as a phase. Writing the
             silver tables (`state.write`) is timed after it, separately.
* validate - the baseline: ONLY the row-level Pandera contracts (`person_record`,
             `enrollment`) on the silver frames the conform variant produces (cached), the
             same `validate(lazy=True)` call conform makes.

The ratio conform / validate says what standardisation adds on top of validation alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.common import (
    OUT,
    REPO,
    Sample,
    Stats,
    log,
    remove,
    rss_mb,
    run_in_subprocess,
    scratch_dir,
    summarize,
    time_calls,
    timed,
    warm_page_cache,
)

SECTION = "conform"
ROOT = OUT / "conform"
SOURCE = "medicaid"
ENTITIES = ("person_record", "enrollment")
MEDICAID_YAML = REPO / "data_model" / "sources" / "medicaid.yaml"
CACHE_VERSION = 1


def _definition():
    from ids_lakehouse.sources import load_source

    return load_source(MEDICAID_YAML)


# -- worker tasks ------------------------------------------------------------------------

def task_prepare(csv: str, folder: str) -> dict:
    """Ingest the extract into a scratch lake; keep its bronze rows and conform's output."""
    import polars as pl

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.conform.mapping import conform_source
    from ids_lakehouse.ingest.bronze import ingest_file
    from ids_lakehouse.ingest.landing import landed_file
    from schemas.silver import contract

    folder = Path(folder)
    work = scratch_dir("conform-prepare")
    try:
        defn = _definition()
        lake = Lake(work / "lake")
        ingest_file(defn, landed_file(Path(csv).parent.parent, defn, Path(csv)), lake,
                    "bench-prepare")
        bronze = pl.from_arrow(delta.read(lake.bronze(SOURCE)))
        bronze.write_parquet(folder / "bronze.parquet")
        result = conform_source(defn, bronze, contract)
        for entity in ENTITIES:
            result.entities[entity].write_parquet(folder / f"silver_{entity}.parquet")
    finally:
        remove(work)
    return {"seconds": 0.0, "base_rss_mb": 0.0, "rows": bronze.height}


def task_conform(folder: str, out: str) -> dict:
    import polars as pl

    from ids_lakehouse.config import Lake
    from ids_lakehouse.conform import mapping, state
    from ids_lakehouse.conform import standardise as std
    from schemas.silver import contract

    defn = _definition()
    bronze = pl.read_parquet(Path(folder) / "bronze.parquet")
    phases = {"validate_s": 0.0, "phones_s": 0.0}
    time_calls(phases, mapping, "_validate", "validate_s")
    time_calls(phases, std, "phones", "phones_s")
    base = rss_mb()
    seconds, result = timed(lambda: mapping.conform_source(defn, bronze, contract))
    peak = rss_mb()
    write_s, _ = timed(lambda: state.write(Lake(Path(out)), result, "bench-run"))
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak,
            "rows": bronze.height, **phases,
            "write_s": write_s, "distinct_phones": bronze["phone"].n_unique(),
            "silver": {e: f.height for e, f in result.entities.items()},
            "quarantined": result.quarantine.height, "failures": result.failures}


def task_validate(folder: str, out: str) -> dict:
    import polars as pl

    from schemas.silver import contract

    frames = {e: pl.read_parquet(Path(folder) / f"silver_{e}.parquet") for e in ENTITIES}
    schemas = {e: contract(e, row_level=True) for e in ENTITIES}

    def validate():
        for entity, frame in frames.items():
            schemas[entity].validate(frame, lazy=True)

    base = rss_mb()
    seconds, _ = timed(validate)
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": rss_mb(),
            "rows": {e: f.height for e, f in frames.items()}}


# -- in the parent -------------------------------------------------------------------------

def prepared(n: int) -> Path:
    from bench.data import GEN_VERSION, medicaid_extract

    folder = ROOT / f"medicaid_{n}_g{GEN_VERSION}_v{CACHE_VERSION}"
    if not (folder / "prepared.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        csv = medicaid_extract(n, formats=("csv",))["csv"]
        s = run_in_subprocess("conform:task_prepare", timeout=3600, csv=str(csv),
                              folder=str(folder))
        (folder / "prepared.json").write_text(json.dumps({"rows": s.extra["rows"]}))
        log(f"conform: prepared {n:,} bronze rows in {s.process_s:.0f}s")
    return folder


def _run(task: str, folder: Path) -> Sample:
    out = scratch_dir(task.split(":")[1])
    try:
        return run_in_subprocess(task, folder=str(folder), out=str(out))
    finally:
        remove(out)


def run(quick: bool, command: str) -> str:
    started = time.perf_counter()
    n, runs = (200_000, 3) if quick else (1_000_000, 5)
    folder = prepared(n)
    warm_page_cache(*folder.glob("*.parquet"))
    samples: dict[str, list[Sample]] = {"conform": [], "validate": []}
    for i in range(runs):
        order = ["conform", "validate"] if i % 2 == 0 else ["validate", "conform"]
        for name in order:
            s = _run(f"conform:task_{name}", folder)
            samples[name].append(s)
            log(f"conform {name} n={n:,} run {i + 1}/{runs}: {s.seconds:.2f}s, "
                f"peak RSS {s.peak_rss_mb:.0f} MiB")
    result = {"quick": quick, "command": command, "rows": n, "runs": runs,
              "elapsed_s": time.perf_counter() - started,
              "samples": {k: [s.__dict__ for s in v] for k, v in samples.items()}}
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / ("last_quick.json" if quick else "last_full.json")).write_text(
        json.dumps(result, indent=2, default=str))
    return report(result)


def rerender(quick: bool = False) -> str:
    return report(json.loads((ROOT / ("last_quick.json" if quick else "last_full.json"))
                             .read_text()))


def _st(values) -> Stats:
    return summarize(list(values))


def report(r: dict) -> str:
    conform = [Sample(**s) for s in r["samples"]["conform"]]
    validate = [Sample(**s) for s in r["samples"]["validate"]]
    n, first = r["rows"], conform[0].extra
    silver_rows = first["silver"]
    validated = sum(validate[0].extra["rows"].values())
    t_conf = _st(s.seconds for s in conform)
    t_val = _st(s.seconds for s in validate)
    t_std = _st(s.seconds - s.extra["validate_s"] - s.extra["phones_s"] for s in conform)
    ratio = _st(a.seconds / b.seconds for a, b in zip(conform, validate))
    write = _st(s.extra["write_s"] for s in conform)
    lines = [
        f"## Conform and validate ({'quick' if r['quick'] else 'full'})", "",
        f"Command: `{r['command']}`; this section took {r['elapsed_s'] / 60:.1f} min.", "",
        f"Input: {n:,} bronze rows of the synthetic Medicaid extract the ingest benchmark "
        "uses (one person record and one enrollment per row), ingested once with "
        "`ingest_file` and cached; each run is a fresh process that loads them and times "
        "`conform_source` in memory. Output per run: person_record "
        f"{silver_rows['person_record']:,}, enrollment {silver_rows['enrollment']:,} silver "
        f"rows, {first['quarantined']:,} rows quarantined; {first['distinct_phones']:,} "
        "distinct phone values.", "",
        f"### {n:,} person records ({r['runs']} runs of each variant, interleaved)", "",
        "| variant | wall s | person records/s | peak RSS MiB |",
        "|---|---|---|---|",
        f"| `conform_source` (standardise + validate + split) | {t_conf.fmt('.2f')} | "
        f"{_st(n / s.seconds for s in conform).fmt(',.0f')} | "
        f"{_st(s.peak_rss_mb for s in conform).fmt('.0f')} |",
        f"| of which Pandera validation (phase inside the same runs) | "
        f"{_st(s.extra['validate_s'] for s in conform).fmt('.2f')} | – | – |",
        f"| of which phones to E.164 (each distinct value once: Polars fast path for North "
        "American numbers written the common ways, libphonenumber for the rest) | "
        f"{_st(s.extra['phones_s'] for s in conform).fmt('.2f')} | – | – |",
        f"| of which everything else: mapping, parsing, standardising, splitting | "
        f"{t_std.fmt('.2f')} | – | – |",
        f"| baseline: the row-level Pandera contracts alone on conform's output "
        f"({validated:,} rows of person_record + enrollment) | {t_val.fmt('.2f')} | "
        f"{_st(n / s.seconds for s in validate).fmt(',.0f')} | "
        f"{_st(s.peak_rss_mb for s in validate).fmt('.0f')} |",
        f"| (not in the timed call) `state.write` of the result to Delta | "
        f"{write.fmt('.2f')} | – | – |",
        "",
        "Each cell is median (min–max). Peak RSS is the worker's high-water mark (VmHWM), "
        "imports and the loaded bronze rows included.", "",
        f"- conform ÷ validation alone (paired runs): {ratio.fmt('.2f', '×')}: Pandera is a "
        "small part; standardising is the cost; phones are "
        f"{_st(s.extra['phones_s'] / s.seconds for s in conform).median:.0%} of the call.",
        f"- Throughput: {n / t_conf.median:,.0f} person records/s through standardisation "
        f"and validation ({n / (t_conf.median + write.median):,.0f}/s including the "
        "Delta write).",
    ]
    return "\n".join(lines)
