"""Program overlap: unduplicated people per program and per pair of programs over the whole
window, plus children under six served by any early-childhood program, with suppression.

A pair count is suppressed when it is small, or when subtracting it from either program's
count would reveal a small number (people in one program but not the other)."""

from __future__ import annotations

import itertools

import polars as pl

from ids_lakehouse.deid.safe_harbor import age_on

EARLY_CHILDHOOD = ("CHILDCARE_SUBSIDY", "MEDICAID")
EARLY_CHILDHOOD_LABEL = "EARLY_CHILDHOOD_UNDER_6"


def _small(expr: pl.Expr, min_cell: int) -> pl.Expr:
    return (expr >= 1) & (expr < min_cell)


def build(program_years: pl.DataFrame, persons: pl.DataFrame, min_cell: int,
          first_year: int, last_year: int) -> pl.DataFrame:
    members = program_years.group_by("program").agg(pl.col("person_id").unique())
    sets = {p: set(ids) for p, ids in members.iter_rows()}
    rows = [(p, None, len(s)) for p, s in sorted(sets.items())]
    rows += [(a, b, len(sets[a] & sets[b])) for a, b in itertools.combinations(sorted(sets), 2)]
    young = (program_years.filter(pl.col("program").is_in(EARLY_CHILDHOOD))
             .join(persons.select("person_id", "dob"), on="person_id")
             .filter(age_on(pl.col("dob"), pl.col("year")) < 6))
    rows.append((EARLY_CHILDHOOD_LABEL, None, young["person_id"].n_unique()))
    df = pl.DataFrame(rows, schema={"program_a": pl.String, "program_b": pl.String,
                                    "persons": pl.Int64}, orient="row")
    single = df.filter(pl.col("program_b").is_null()).select("program_a", "persons")
    df = (df.join(single.rename({"persons": "n_a"}), on="program_a", how="left")
          .join(single.rename({"program_a": "program_b", "persons": "n_b"}), on="program_b",
                how="left"))
    primary = _small(pl.col("persons"), min_cell)
    complementary = pl.col("program_b").is_not_null() & ~primary & (
        _small(pl.col("n_a") - pl.col("persons"), min_cell)
        | _small(pl.col("n_b") - pl.col("persons"), min_cell))
    return df.with_columns(
        (primary | complementary).alias("suppressed"),
        pl.when(primary).then(pl.lit("primary")).when(complementary)
        .then(pl.lit("complementary")).otherwise(None).alias("suppression"),
        pl.lit(first_year).alias("first_year"), pl.lit(last_year).alias("last_year"),
    ).with_columns(pl.when(pl.col("suppressed")).then(None).otherwise(pl.col("persons"))
                   .alias("persons")).drop("n_a", "n_b")
