"""Worker tasks that run the product's own path: `identity.mpi.build` on the generated
records (ours-first / ours-second / ours-incremental and the holdout runs) and FEBRL through
landing -> bronze -> silver -> identity (bench/febrl.py)."""

from __future__ import annotations

from pathlib import Path

from bench.common import rss_mb, time_calls, timed
from bench.linkage_errors import error_analysis
from bench.linkage_support import install_clamp_shim, read_records, read_truth

RUN1, RUN2 = "bench-run-1", "bench-run-2"


def _phase_timers(mpi, linkage, clustering) -> dict:
    """Wrap the stages `mpi.build` calls (by module attribute) to time them; the wrappers
    only add a perf_counter around each call."""
    phases: dict[str, float] = {}
    for module, name, phase in (
            (linkage, "linkage_input", "linkage input"), (linkage, "train", "train (EM)"),
            (linkage, "predict", "predict (all pairs)"),
            (linkage, "predict_changed", "predict (changed records)"),
            (mpi, "score", "score (incl. reading prior pairs)"),
            (clustering, "cluster", "clustering"),
            (mpi, "assign", "stable IDs (assign)")):
        time_calls(phases, module, name, phase)
    return phases


def task_ours(records: str, truth: str, lake: str, persons: str | None = None,
              holdout: float = 0.0, holdout_seed: int = 0, analyse: bool = False,
              full: bool = False) -> dict:
    """One `build` on `lake`: a first run when the lake is new (trains), else a rerun with
    the saved model (incremental by default, every pair re-scored with `full`); compares
    person_ids with those the lake held before."""
    import polars as pl

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.identity import mpi
    from ids_lakehouse.identity.quality import pairwise_quality

    clamps = install_clamp_shim()
    from ids_lakehouse.identity import clustering, linkage

    phases = _phase_timers(mpi, linkage, clustering)
    store = Lake(Path(lake))
    df = read_records(records, holdout, holdout_seed)
    prior_path = store.identity("person_xref")
    prior = (pl.from_arrow(delta.read(prior_path, columns=["unique_id", "person_id"]))
             if delta.exists(prior_path) else None)
    run_id = RUN1 if prior is None else RUN2
    base = rss_mb()
    kwargs = {"full": True} if full else {}
    seconds, result = timed(lambda: mpi.build(store, df, run_id, **kwargs))
    peak = rss_mb()
    write_s, _ = timed(lambda: mpi.write(store, result, run_id))
    xref = result.tables["person_xref"].select("unique_id", "person_id")
    out = {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak,
           "write_s": write_s, "records": result.records, "people": result.people,
           "trained": result.trained, "model_version": result.model_version,
           "events": result.events, "review_pairs": result.review_pairs,
           "links": result.links, "quality": pairwise_quality(xref, read_truth(truth)),
           "clamps": clamps, "phases": phases,
           "mode": getattr(result, "mode", "full"),
           "rescored": getattr(result, "rescored", result.records)}
    if prior is not None:
        out.update(_changed(prior, xref))
    if analyse:
        out["errors"] = error_analysis(xref, truth, persons, result.tables["person_link"])
    return out


def _changed(prior, xref) -> dict:
    """How many of the records the lake held before changed person_id, and how many of
    the earlier people they were."""
    import polars as pl

    j = prior.join(xref, on="unique_id", how="inner", suffix="_new")
    return {"existing_records": j.height,
            "changed": int((j["person_id"] != j["person_id_new"]).sum()),
            "existing_people_changed": int(
                j.filter(pl.col("person_id") != pl.col("person_id_new"))["person_id"]
                .n_unique())}


def task_febrl(which: str, lake: str) -> dict:
    """FEBRL through the product's own path (bench/febrl.py): landed, ingested, conformed
    and linked in a fresh lake under `lake`. Timed: identity (`mpi.update`)."""
    from bench import febrl

    clamps = install_clamp_shim()
    base = rss_mb()
    out = febrl.product_path(which, Path(lake))
    peak = rss_mb()
    out.pop("xref"), out.pop("truth")
    stages = out.pop("seconds")
    return {**out, "seconds": stages["identity"], "stage_seconds": stages,
            "base_rss_mb": base, "peak_rss_mb": peak, "clamps": clamps}
