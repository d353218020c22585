"""Small-cell suppression for published count tables.

A table is a cube: `fixed` dimensions (published side by side, never summed) and
`additive` dimensions, each of which has an "ALL" value holding the total of its other
values. Every set of cells that differ only in one additive dimension is a *line*: its
detail cells sum to its ALL cell. A suppressed cell can be recovered by subtraction iff it
is the only suppressed cell of some line. So:

1. primary: suppress every count from 1 to `min_cell - 1` (zero is publishable);
2. complementary: while some line has exactly one suppressed cell, suppress one more cell
   of that line: the smallest positive published count (a zero only when no positive cell
   is left, since suppressing a known-small zero protects little).
"""

from __future__ import annotations

import polars as pl

ALL = "ALL"


def _lines(additive: list[str], fixed: list[str], d: str) -> list[str]:
    return [*fixed, *[a for a in additive if a != d]]


def suppress(cube: pl.DataFrame, additive: list[str], fixed: list[str], count: str,
             min_cell: int, max_rounds: int = 100) -> pl.DataFrame:
    """Adds `suppressed` (bool) and `suppression` ('primary' / 'complementary' / null).
    Cells already marked `suppressed` (e.g. a published table re-suppressed at a stricter
    minimum) stay suppressed with their reason."""
    small = ((pl.col(count) >= 1) & (pl.col(count) < min_cell)).fill_null(False)
    already = pl.col("suppressed") if "suppressed" in cube.columns else pl.lit(False)
    reason = pl.col("suppression") if "suppression" in cube.columns else \
        pl.lit(None, dtype=pl.String)
    df = cube.with_row_index("_cell").with_columns(
        (already | small).alias("suppressed"),
        pl.when(already).then(reason).when(small).then(pl.lit("primary"))
        .otherwise(None).alias("suppression"))
    for _ in range(max_rounds):
        picked = []
        for d in additive:
            keys = _lines(additive, fixed, d)
            exposed = (df.group_by(keys).agg(pl.col("suppressed").sum().alias("_n"))
                       .filter(pl.col("_n") == 1).drop("_n"))
            if exposed.height == 0:
                continue
            candidates = (df.join(exposed, on=keys, how="semi")
                          .filter(~pl.col("suppressed"))
                          .with_columns((pl.col(count) == 0).alias("_zero"))
                          .sort(["_zero", count, "_cell"]))
            picked.append(candidates.unique(keys, keep="first", maintain_order=True)
                          .select("_cell"))
        if not picked:
            return df.drop("_cell")
        chosen = pl.concat(picked).unique()
        df = df.with_columns(
            pl.col("_cell").is_in(chosen["_cell"].implode()).alias("_new")).with_columns(
            (pl.col("suppressed") | pl.col("_new")).alias("suppressed"),
            pl.when(pl.col("_new") & pl.col("suppression").is_null())
            .then(pl.lit("complementary")).otherwise(pl.col("suppression"))
            .alias("suppression")).drop("_new")
    raise RuntimeError("complementary suppression did not converge")


def audit(published: pl.DataFrame, additive: list[str], fixed: list[str], count: str,
          min_cell: int) -> dict:
    """Independent check of a published table (suppressed counts are null): no published
    count in 1..min_cell-1, no line with exactly one suppressed cell, and every line whose
    cells are all published adds up."""
    small = published.filter(pl.col(count).is_not_null() & (pl.col(count) >= 1)
                             & (pl.col(count) < min_cell)).height
    recoverable, inconsistent = 0, 0
    for d in additive:
        keys = _lines(additive, fixed, d)
        lines = published.group_by(keys).agg(
            pl.col(count).is_null().sum().alias("_hidden"),
            pl.col(count).filter(pl.col(d) != ALL).sum().alias("_parts"),
            pl.col(count).filter(pl.col(d) == ALL).first().alias("_total"))
        recoverable += lines.filter(pl.col("_hidden") == 1).height
        inconsistent += lines.filter((pl.col("_hidden") == 0)
                                     & (pl.col("_parts") != pl.col("_total"))).height
    return {"published_small_cells": small, "recoverable_cells": recoverable,
            "lines_not_adding_up": inconsistent,
            "passed": small == 0 and recoverable == 0 and inconsistent == 0}
