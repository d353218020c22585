"""Where a linkage run's wrong pairs come from (run inside the worker tasks, on the first
round): false positives and false negatives by kind, and the commonest comparison patterns of
the false positives that are a direct link."""

from __future__ import annotations

from bench.linkage_params import THRESHOLD
from bench.linkage_support import read_truth

PATTERN_COLUMNS = ("first_name", "last_name", "dob", "identifier", "location")


def error_analysis(xref, truth_path: str, persons_path: str | None, links=None) -> dict:
    """Where the wrong pairs come from: false positives (same predicted person, different
    true people) and false negatives (same true person, different predicted people), each
    split by how the two true people relate (twin / same household / other) or, for false
    negatives, by what the linkage scored the pair (below the floor or never compared;
    review band; >= threshold but vetoed; ...)."""
    import polars as pl

    t = read_truth(truth_path).select(
        (pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
        "source", "true_person_id")
    df = xref.select("unique_id", "person_id").join(t, on="unique_id")
    out = _false_negatives(df, links)
    # False positives: pairs inside predicted clusters whose true people differ.
    sizes = df.group_by("person_id").len("n")
    big = int(sizes["n"].max() or 0)
    out["largest_cluster"] = big
    if big <= 200:
        out.update(_false_positives(df, persons_path, links))
    return out


def _pair_keys(links, *columns: str):
    """`links` with each pair's ids ordered (unique_id < unique_id_r), plus `columns`."""
    import polars as pl

    return links.select(pl.min_horizontal("unique_id_l", "unique_id_r").alias("unique_id"),
                        pl.max_horizontal("unique_id_l", "unique_id_r").alias("unique_id_r"),
                        *columns)


def _false_negatives(df, links) -> dict:
    """True pairs (small groups), not in one predicted cluster; by what `links` scored them."""
    import polars as pl

    tp = df.join(df, on="true_person_id", suffix="_r").filter(
        pl.col("unique_id") < pl.col("unique_id_r"))
    fn = tp.filter(pl.col("person_id") != pl.col("person_id_r"))
    out: dict = {"fn_pairs": fn.height, "fn_cross": int((fn["source"] != fn["source_r"]).sum())}
    if links is not None and fn.height:
        lk = _pair_keys(links, "match_probability", "gamma_first_name", "gamma_identifier")
        j = fn.join(lk, on=["unique_id", "unique_id_r"], how="left")
        kind = (pl.when(pl.col("match_probability").is_null())
                .then(pl.lit("not scored >= 0.5 (blocked out or low score)"))
                .when(pl.col("match_probability") < THRESHOLD)
                .then(pl.lit("review band 0.5-0.9"))
                .otherwise(pl.lit(">= 0.9 but first names disagree (vetoed)")))
        out["fn_by_kind"] = dict(j.group_by(kind.alias("k")).len().iter_rows())
    return out


def _false_positives(df, persons_path: str | None, links) -> dict:
    """Pairs in one predicted cluster whose true people differ; by how those people relate
    (from the generator's persons table) and, given `links`, by comparison pattern."""
    import polars as pl

    pp = df.join(df, on="person_id", suffix="_r").filter(
        (pl.col("unique_id") < pl.col("unique_id_r"))
        & (pl.col("true_person_id") != pl.col("true_person_id_r")))
    out: dict = {"fp_pairs": pp.height, "fp_cross": int((pp["source"] != pp["source_r"]).sum())}
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
    lk = _pair_keys(links, "match_probability", *[f"gamma_{c}" for c in levels])
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
