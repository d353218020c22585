"""Worker tasks for the baselines the linkage benchmark compares ours with: bare Splink
(bare-train / bare-predict) and the `recordlinkage` toolkit (rl)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import rss_mb, timed
from bench.linkage_errors import error_analysis
from bench.linkage_params import THRESHOLD
from bench.linkage_support import install_clamp_shim, read_records, read_truth

BARE_MAX_PAIRS = 2_000_000


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


# (national_id columns and street: read by our blocking and deterministic rules, which bare
# shares)
BARE_COLUMNS = ["unique_id", "source_dataset", "first_name", "last_name", "dob", "ssn", "zip",
                "sex", "phone", "national_id", "national_id_type", "street"]


def task_bare(records: str, truth: str, model_path: str, train: bool,
              persons: str | None = None, analyse: bool = False) -> dict:
    """Plain Splink on the same records; `train` False loads the model saved by a training
    run (predict + cluster only)."""
    import logging

    import duckdb
    import polars as pl
    from splink import DuckDBAPI, Linker, block_on

    from ids_lakehouse.config import duckdb_config
    from ids_lakehouse.identity.linkage import DETERMINISTIC_RULES, for_prior
    from ids_lakehouse.identity.quality import pairwise_quality

    logging.getLogger("splink").setLevel(logging.WARNING)
    clamps = install_clamp_shim()
    df = read_records(records).with_columns(
        (pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
        pl.col("source").alias("source_dataset")).select(BARE_COLUMNS)
    # Our prior's rules compare identifiers with defaults left out (`for_prior`).
    df = for_prior(df)

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
           "quality": pairwise_quality(xref, read_truth(truth)), "clamps": clamps,
           "trained": train}
    if analyse:
        out["errors"] = error_analysis(xref, truth, persons)
    return out


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

    df = read_records(records).with_columns(
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
            "quality": pairwise_quality(xref, read_truth(truth))}
