"""Linkage quality against a known truth (the generator's), without enumerating pairs:
pair counts come from group sizes (n choose 2), split into cross-source and within-source
pairs."""

from __future__ import annotations

from typing import Any

import polars as pl


def _pairs(df: pl.DataFrame, keys: list[str]) -> tuple[int, int]:
    """(cross-source pairs, within-source pairs) among records sharing `keys`."""
    groups = df.group_by(keys).len("n")
    total = int((groups["n"] * (groups["n"] - 1) // 2).sum())
    per_source = df.group_by([*keys, "source"]).len("n")
    within = int((per_source["n"] * (per_source["n"] - 1) // 2).sum())
    return total - within, within


def _prf(tp: int, predicted: int, actual: int) -> dict[str, float | int]:
    precision = tp / predicted if predicted else 1.0
    recall = tp / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 5), "recall": round(recall, 5), "f1": round(f1, 5),
            "true_positive_pairs": tp, "predicted_pairs": predicted, "true_pairs": actual}


def _share(flags: pl.Series) -> float:
    """The share of true values. An empty series has none: TypeError (as float(None))."""
    share = flags.mean()
    if not isinstance(share, (int, float)):
        raise TypeError("no share of an empty series")
    return float(share)


def pairwise_quality(xref: pl.DataFrame, truth: pl.DataFrame) -> dict[str, Any]:
    """xref: unique_id, person_id. truth: source, source_record_id, true_person_id."""
    t = truth.select((pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
                     "source", "true_person_id")
    df = xref.join(t, on="unique_id", how="inner")
    pred_x, pred_w = _pairs(df, ["person_id"])
    true_x, true_w = _pairs(df, ["true_person_id"])
    tp_x, tp_w = _pairs(df, ["person_id", "true_person_id"])
    clusters = df.group_by("person_id").agg(pl.col("true_person_id").n_unique().alias("k"))
    people = df.group_by("true_person_id").agg(pl.col("person_id").n_unique().alias("k"))
    return {
        "records_scored": df.height,
        "cross_source": _prf(tp_x, pred_x, true_x),
        "within_source": _prf(tp_w, pred_w, true_w),
        "clusters": clusters.height, "true_people": people.height,
        "pure_clusters": round(_share(clusters["k"] == 1), 5),
        "people_in_one_cluster": round(_share(people["k"] == 1), 5),
    }
