"""Bronze ingest benchmark.

Three variants, each run in a fresh process, their runs interleaved (order rotated every
round) so that drift on a noisy machine hits them alike:

* floor   - the Parquet extract read into memory, the columns ingest stamps on every row
            (6 provenance columns, plus any bronze-only ones) added, then ONLY
            `deltalake.write_deltalake(fresh_path, table, mode="overwrite")` is timed;
* csv     - `ingest_file` of the CSV extract into a fresh lake;
* parquet - `ingest_file` of the Parquet extract into a fresh lake.

Then memory scaling: peak RSS of the CSV ingest at N rows (from the runs above) and at 5N.
`ingest_file` is timed alone: the SHA-256 of the file (computed by `landed_file` beforehand,
as the sensor does) is measured separately and reported as a note.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from bench.common import (
    REPO,
    Sample,
    Stats,
    log,
    remove,
    rss_mb,
    run_in_subprocess,
    scratch_dir,
    summarize,
    timed,
    warm_page_cache,
)

SECTION = "ingest"
RUN_ID = "bench-run"
SOURCE = "medicaid"
TARGET_PARQUET = 1.5     # ingest_file(Parquet) / floor
TARGET_CSV = 2.0         # ingest_file(CSV) / floor
TARGET_RSS_SCALING = 1.5  # peak RSS at 5N / at N
MEDICAID_YAML = REPO / "data_model" / "sources" / "medicaid.yaml"


# -- worker tasks (run inside `python -m bench.worker ingest:<task>`) ------------------

def _definition(fmt: str):
    from ids_lakehouse.sources import SourceDefinition, load_source

    defn = load_source(MEDICAID_YAML)
    if fmt == "csv":
        return defn
    raw = defn.model_dump()
    raw.update(format=fmt, file_pattern="*.parquet")
    return SourceDefinition.model_validate(raw)


def _stamp_fields() -> list:
    """The columns `ingest_file` adds to every bronze row: the provenance columns, plus any
    bronze-only ones the ingest module declares, so the floor writes the same shape."""
    from ids_lakehouse.ingest import bronze

    return list(bronze.PROVENANCE) + list(getattr(bronze, "BRONZE_ONLY", []))


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def task_floor(parquet: str, out: str) -> dict:
    """Time only write_deltalake of an in-memory table shaped like bronze."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from ids_lakehouse import delta

    table = pq.read_table(parquet)
    n = table.num_rows
    now = dt.datetime.now(dt.timezone.utc)
    stamps = _stamp_fields()
    constant = {f.name: now if pa.types.is_timestamp(f.type) else f"{SOURCE}-{f.name}"
                for f in stamps}
    constant.update(_file=f"{SOURCE}/{Path(parquet).name}", _file_sha256="0" * 64)
    extra = [pa.array(np.arange(1, n + 1, dtype=np.int64)) if f.name == "_row_number"
             else pa.repeat(pa.scalar(constant[f.name], f.type), n) for f in stamps]
    table = pa.Table.from_arrays(list(table.columns) + extra,
                                 schema=pa.schema(list(table.schema) + stamps))
    target = Path(out) / "bronze" / SOURCE
    base = rss_mb()
    seconds, _ = timed(lambda: write_deltalake(str(target), table, mode="overwrite"))
    peak = rss_mb()
    rows = delta.count(target)
    if rows != n:
        raise AssertionError(f"floor wrote {rows} rows, expected {n}")
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak, "rows": n,
            "delta_mb": _dir_mb(target), "stamps": [f.name for f in stamps]}


def task_ingest(fmt: str, path: str, landing: str, out: str) -> dict:
    """Time ingest_file of one landed extract into a fresh lake."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.ingest.bronze import ingest_file
    from ids_lakehouse.ingest.landing import landed_file

    defn = _definition(fmt)
    sha_s, landed = timed(lambda: landed_file(Path(landing), defn, Path(path)))
    lake = Lake(Path(out))
    base = rss_mb()
    seconds, result = timed(lambda: ingest_file(defn, landed, lake, RUN_ID))
    peak = rss_mb()
    rows = delta.count(lake.bronze(SOURCE))
    columns = delta.dataset(lake.bronze(SOURCE)).schema.names
    if result.rows_quarantined or rows != result.rows_written or rows != result.rows_read:
        raise AssertionError(f"unexpected ingest result {result} (bronze has {rows} rows)")
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak, "rows": rows,
            "sha256_s": sha_s, "delta_mb": _dir_mb(lake.bronze(SOURCE)), "columns": columns}


# -- the benchmark (in the parent) -----------------------------------------------------

def _run(task: str, **params) -> Sample:
    out = scratch_dir(task.split(":")[1])
    try:
        return run_in_subprocess(task, out=str(out), **params)
    finally:
        remove(out)


def _floor(files) -> Sample:
    return _run("ingest:task_floor", parquet=str(files["parquet"]))


def _ingest(fmt: str, files, landing: Path) -> Sample:
    return _run("ingest:task_ingest", fmt=fmt, path=str(files[fmt]), landing=str(landing))


def _against(ratio: float, target: float) -> str:
    if ratio <= target:
        return f"**met** ({ratio:.2f}× ≤ {target:g}×, {(1 - ratio / target) * 100:.0f}% headroom)"
    return (f"**NOT met** ({ratio:.2f}× > {target:g}×, {(ratio / target - 1) * 100:.0f}% over "
            "the target)")


def _ratios(num: list[Sample], den: list[Sample]) -> Stats:
    return summarize([a.seconds / b.seconds for a, b in zip(num, den)])


def run(quick: bool, command: str) -> str:
    from bench.data import LANDING, medicaid_extract

    started = time.perf_counter()
    n, n_big = (200_000, 1_000_000) if quick else (1_000_000, 5_000_000)
    runs = 3 if quick else 5
    big_runs = 3 if quick else 5
    files = medicaid_extract(n)
    big = medicaid_extract(n_big, formats=("csv",))
    warm_page_cache(files["csv"], files["parquet"], big["csv"])

    samples: dict[str, list[Sample]] = {"floor": [], "csv": [], "parquet": []}
    jobs = {"floor": lambda: _floor(files), "csv": lambda: _ingest("csv", files, LANDING),
            "parquet": lambda: _ingest("parquet", files, LANDING)}
    order = list(jobs)
    for i in range(runs):
        for name in order[i % 3:] + order[:i % 3]:
            s = jobs[name]()
            samples[name].append(s)
            log(f"ingest {name} n={n:,} run {i + 1}/{runs}: {s.seconds:.2f}s, "
                f"peak RSS {s.peak_rss_mb:.0f} MiB")
    scale: list[Sample] = []
    for i in range(big_runs):
        s = _ingest("csv", big, LANDING)
        scale.append(s)
        log(f"ingest csv n={n_big:,} run {i + 1}/{big_runs}: {s.seconds:.2f}s, "
            f"peak RSS {s.peak_rss_mb:.0f} MiB")
    elapsed = time.perf_counter() - started
    return report(quick, command, n, n_big, files, big, samples, scale, elapsed)


def report(quick, command, n, n_big, files, big, samples, scale, elapsed) -> str:
    import pyarrow.parquet as pq

    mb = {k: Path(p).stat().st_size / 1e6 for k, p in files.items()}
    row_groups = pq.ParquetFile(files["parquet"]).metadata.num_row_groups
    big_mb = Path(big["csv"]).stat().st_size / 1e6
    labels = {"floor": "floor: `write_deltalake` of the in-memory table",
              "csv": "`ingest_file`, CSV", "parquet": "`ingest_file`, Parquet"}
    ratio = {"csv": _ratios(samples["csv"], samples["floor"]),
             "parquet": _ratios(samples["parquet"], samples["floor"])}
    med = {k: summarize([s.seconds for s in v]).median for k, v in samples.items()}
    runs = len(samples["floor"])
    mode = "quick" if quick else "full"
    stamps = samples["floor"][0].extra["stamps"]
    bronze_cols = samples["parquet"][0].extra["columns"]
    same_shape = sorted(bronze_cols) == sorted(
        [c for c in pq.ParquetFile(files["parquet"]).schema_arrow.names] + stamps)
    shape_note = (f"The floor table has the same {len(bronze_cols)} columns as the bronze "
                  f"table `ingest_file` writes (18 delivered + {len(stamps)} stamped: "
                  f"{', '.join(f'`{c}`' for c in stamps)})." if same_shape else
                  f"**Warning:** the floor table's columns differ from bronze's "
                  f"({bronze_cols}); the ratios compare different shapes.")
    lines = [
        f"## Bronze ingest ({mode})",
        "",
        f"Measured {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{command}` "
        f"(alone: `python -m bench --only ingest{' --quick' if quick else ''}`); "
        f"this section took {elapsed / 60:.1f} min.",
        "",
        f"Input: a synthetic Medicaid extract with the 18 delivered columns of "
        f"`data_model/sources/medicaid.yaml` (names, ISO dates, dashed SSNs, addresses, codes; "
        f"optional fields empty in 7–40% of rows), {n:,} rows: CSV {mb['csv']:.1f} MB, "
        f"Parquet {mb['parquet']:.1f} MB (all-string columns, snappy, pyarrow defaults: "
        f"{row_groups} row group{'s' if row_groups != 1 else ''}). "
        f"Generated once by `bench/data.py` and cached in `bench/out/`. {shape_note}",
        "",
        f"### Throughput, {n:,} rows ({runs} runs each, interleaved)",
        "",
        "| variant | wall s | rows/s | peak RSS MiB | ÷ floor (paired runs) |",
        "|---|---|---|---|---|",
    ]
    for k, v in samples.items():
        wall = summarize([s.seconds for s in v])
        rate = summarize([s.extra["rows"] / s.seconds for s in v])
        rss = summarize([s.peak_rss_mb for s in v])
        r = "1 (baseline)" if k == "floor" else ratio[k].fmt(".2f", "×")
        lines.append(f"| {labels[k]} | {wall.fmt('.2f')} | {rate.fmt(',.0f')} | "
                     f"{rss.fmt('.0f')} | {r} |")
    sha = summarize([s.extra["sha256_s"] for s in samples["csv"]])
    delta_mb = summarize([s.extra["delta_mb"] for s in samples["parquet"]]).median
    lines += [
        "",
        "Each cell is median (min–max). Wall time covers only the timed call (process "
        "start-up and imports excluded); peak RSS is the worker process's high-water mark "
        "(VmHWM), imports included, the floor's including the table it holds in memory. The "
        "ratio column is the median (min–max) of `ingest_i / floor_i` over the interleaved "
        "rounds.",
        "",
        f"- Against target, Parquet ingest ≤ {TARGET_PARQUET:g}× floor: "
        f"{_against(ratio['parquet'].median, TARGET_PARQUET)}; ratio of medians "
        f"{med['parquet'] / med['floor']:.2f}×.",
        f"- Against target, CSV ingest ≤ {TARGET_CSV:g}× floor: "
        f"{_against(ratio['csv'].median, TARGET_CSV)}; ratio of medians "
        f"{med['csv'] / med['floor']:.2f}×.",
        f"- Not in the timed call: hashing the CSV (`landed_file`, SHA-256) took "
        f"{sha.fmt('.2f')} s. Bronze table on disk: {delta_mb:.0f} MB.",
        "",
    ]
    small = samples["csv"]
    rss_n = summarize([s.peak_rss_mb for s in small])
    rss_big = summarize([s.peak_rss_mb for s in scale])
    base_n = summarize([s.base_rss_mb for s in small])
    base_big = summarize([s.base_rss_mb for s in scale])
    growth = rss_big.median / rss_n.median
    above = (rss_big.median - base_big.median) / max(rss_n.median - base_n.median, 1e-9)
    lines += [
        f"### Memory scaling, CSV ingest ({len(small)} runs at {n:,}, {len(scale)} at "
        f"{n_big:,})",
        "",
        "| rows | CSV MB | wall s | rows/s | peak RSS MiB | RSS before the call MiB |",
        "|---|---|---|---|---|---|",
    ]
    for rows, size, v in ((n, mb["csv"], small), (n_big, big_mb, scale)):
        lines.append(
            f"| {rows:,} | {size:.0f} | {summarize([s.seconds for s in v]).fmt('.2f')} | "
            f"{summarize([s.extra['rows'] / s.seconds for s in v]).fmt(',.0f')} | "
            f"{summarize([s.peak_rss_mb for s in v]).fmt('.0f')} | "
            f"{summarize([s.base_rss_mb for s in v]).fmt('.0f')} |")
    lines += [
        "",
        f"- Against target, peak RSS at {n_big // n}× the rows ≤ {TARGET_RSS_SCALING:g}×: "
        f"{_against(growth, TARGET_RSS_SCALING)} (ratio of median peaks "
        f"{rss_big.median:.0f} / {rss_n.median:.0f} MiB). Above the process's RSS before "
        f"the call (imports, ~{base_n.median:.0f} MiB) the growth is {above:.2f}×.",
    ]
    return "\n".join(lines)
