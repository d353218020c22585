"""Indicators & reporting: unduplicated person counts by year x program x county x age
band x sex x race/ethnicity, with totals over each of the last four, rates, and small-cell
suppression (primary and complementary)."""

from __future__ import annotations

import itertools

import polars as pl

from ids_lakehouse.deid.policy import DisclosurePolicy
from ids_lakehouse.deid.safe_harbor import age_band, age_on
from ids_lakehouse.deid.suppression import ALL, suppress
from ids_lakehouse.model import DataModel

FIXED = ["year", "program"]
ADDITIVE = ["county_fips", "age_band", "sex", "race_ethnicity"]


def _facts(program_years: pl.DataFrame, persons: pl.DataFrame) -> pl.DataFrame:
    return program_years.join(persons, on="person_id", how="inner").with_columns(
        pl.col("county_fips").fill_null("UNKNOWN"),
        age_band(age_on(pl.col("dob"), pl.col("year"))).alias("age_band"),
        pl.col("sex").fill_null("U"))


def _domain(model: DataModel, policy: DisclosurePolicy) -> dict[str, list[str]]:
    bands = [f"{lo}+" if lo >= policy.age_top_code else f"{lo}-{hi}"
             for lo, hi in policy.age_bands]
    return {"county_fips": [*model.codes("county_fips"), "UNKNOWN", ALL],
            "age_band": [*bands, "UNKNOWN", ALL],
            "sex": [*model.codes("sex"), "U", ALL],
            "race_ethnicity": [*model.codes("race"), "HISPANIC", "UNKNOWN", ALL]}


def _cube(facts: pl.DataFrame, fixed_rows: pl.DataFrame, domain: dict) -> pl.DataFrame:
    """Distinct persons for every combination, with ALL totals, zeros included. A person
    has one value of each additive dimension in a year (the dimensions are attributes of
    the person, and the age band of the person in that year), so after keeping one row per
    person, year and program, distinct persons add up: the finest cells are counted once
    and every total is a sum of them."""
    finest = (facts.unique(["person_id", *FIXED]).group_by([*FIXED, *ADDITIVE])
              .agg(pl.len().cast(pl.Int64).alias("persons")))
    parts = []
    for r in range(len(ADDITIVE) + 1):
        for kept in itertools.combinations(ADDITIVE, r):
            g = finest.group_by([*FIXED, *kept]).agg(pl.col("persons").sum())
            parts.append(g.with_columns([pl.lit(ALL).alias(d) for d in ADDITIVE
                                         if d not in kept]).select(*FIXED, *ADDITIVE,
                                                                   "persons"))
    counts = pl.concat(parts)
    grid = fixed_rows
    for d in ADDITIVE:
        grid = grid.join(pl.DataFrame({d: domain[d]}), how="cross")
    return (grid.join(counts, on=[*FIXED, *ADDITIVE], how="left")
            .with_columns(pl.col("persons").fill_null(0).cast(pl.Int64)))


def build(program_years: pl.DataFrame, persons: pl.DataFrame, model: DataModel,
          policy: DisclosurePolicy) -> pl.DataFrame:
    facts = _facts(program_years, persons)
    domain = _domain(model, policy)
    fixed_rows = facts.select(FIXED).unique()
    cube = _cube(facts, fixed_rows, domain)
    # Denominator: everyone served in that year and cell, whatever the program.
    everyone = facts.with_columns(pl.lit("ANY").alias("program"))
    denominators = _cube(everyone, everyone.select(FIXED).unique(), domain).drop("program") \
        .rename({"persons": "denominator"})
    protected = suppress(cube, ADDITIVE, FIXED, "persons", policy.min_cell_size)
    return (protected.join(denominators, on=["year", *ADDITIVE], how="left")
            .with_columns(
                pl.when(pl.col("suppressed")).then(None).otherwise(pl.col("persons"))
                .alias("persons"),
                pl.when(~pl.col("suppressed") & (pl.col("denominator") >= policy.min_cell_size))
                .then((pl.col("persons") * 1000 / pl.col("denominator")).round(1))
                .otherwise(None).alias("rate_per_1000_served"))
            .drop("denominator")
            .sort([*FIXED, *ADDITIVE]))
