"""k-anonymity over declared quasi-identifiers: generalise along a ladder until few enough
records sit in classes smaller than k, then suppress (remove) those records."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

BROAD_RACE = {"HISPANIC": "HISPANIC", "WHITE": "WHITE", "BLACK": "BLACK", "ASIAN": "ASIAN"}


def k_of(df: pl.DataFrame, qis: list[str]) -> int:
    """The smallest equivalence class over the quasi-identifiers (0 for an empty table)."""
    if df.height == 0:
        return 0
    return int(df.group_by(qis).len()["len"].min())


def _generalise(df: pl.DataFrame, step: dict[str, int | str]) -> pl.DataFrame:
    out = df
    for column, how in step.items():
        if column == "birth_year" and isinstance(how, int):
            year = pl.col("birth_year").cast(pl.Int32, strict=False)
            band = ((year // how) * how).cast(pl.String) + "-" + \
                ((year // how) * how + how - 1).cast(pl.String)
            out = out.with_columns(pl.when(year.is_null()).then(pl.col("birth_year"))
                                   .otherwise(band).alias("birth_year"))
        elif how == "drop":
            out = out.with_columns(pl.lit("*").alias(column))
        elif column == "race_ethnicity" and how == "broad":
            out = out.with_columns(pl.col(column).replace_strict(
                BROAD_RACE, default="OTHER").alias(column))
        else:
            raise ValueError(f"unknown generalisation {column}: {how!r}")
    return out


@dataclass(frozen=True)
class Anonymised:
    frame: pl.DataFrame
    k: int
    level: int              # rungs of the ladder applied
    suppressed: int         # records removed by local suppression
    suppression_rate: float


def anonymise(df: pl.DataFrame, qis: list[str], k: int, ladder: list[dict],
              max_suppression: float) -> Anonymised:
    """Climb the ladder until local suppression would remove at most `max_suppression` of
    the records (or the ladder ends), then remove the records in classes below k."""
    current, level = df, 0
    while True:
        sizes = current.group_by(qis).len("_class_size")
        small = int(sizes.filter(pl.col("_class_size") < k)["_class_size"].sum() or 0)
        if small <= max_suppression * df.height or level == len(ladder):
            break
        current = _generalise(current, ladder[level])
        level += 1
    kept = (current.join(sizes, on=qis).filter(pl.col("_class_size") >= k)
            .drop("_class_size"))
    removed = df.height - kept.height
    return Anonymised(frame=kept, k=k_of(kept, qis), level=level, suppressed=removed,
                      suppression_rate=round(removed / df.height, 5) if df.height else 0.0)
