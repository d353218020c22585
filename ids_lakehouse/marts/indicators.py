"""Indicators & reporting: unduplicated person counts by year x program x county x age
band x sex x race/ethnicity, with totals over each of the last four and rates per 1,000
served, protected by cell-key perturbation with a minimum cell size (deid/cellkey.py).

The counts come from a *basis* (one row per person, year and program with the person's
attributes that year) that moves forward night to night only by transitions at least
`min_cell_size` persons share (deid/holdback.py), so two nights' tables cannot be
differenced to single anybody out."""

from __future__ import annotations

import itertools

import polars as pl

from ids_lakehouse.deid import cellkey
from ids_lakehouse.deid.policy import DisclosurePolicy
from ids_lakehouse.deid.safe_harbor import age_band, age_on
from ids_lakehouse.model import DataModel

ALL = "ALL"
FIXED = ["year", "program"]
ADDITIVE = ["county_fips", "age_band", "sex", "race_ethnicity"]
DIMENSIONS = [*FIXED, *ADDITIVE]      # what remote queries may group and filter by
UNIT = ["person_id", "year", "program"]
ATTRIBUTES = [*ADDITIVE, "under_6"]     # under_6: for the overlap mart's early childhood row
SERVED = "ANY"                          # the denominator's "program": served by any program


def facts(program_years: pl.DataFrame, persons: pl.DataFrame) -> pl.DataFrame:
    """One row per person, year and program with the person's attributes in that year."""
    age = age_on(pl.col("dob"), pl.col("year"))
    return program_years.join(persons, on="person_id", how="inner").select(
        *UNIT,
        pl.col("county_fips").fill_null("UNKNOWN"),
        age_band(age).alias("age_band"),
        pl.col("sex").fill_null("U"),
        pl.col("race_ethnicity").fill_null("UNKNOWN"),
        (age < 6).fill_null(False).alias("under_6"))


def domain(model: DataModel, policy: DisclosurePolicy) -> dict[str, list[str]]:
    """The public values of each additive attribute (ALL: the total), whatever the data."""
    bands = [f"{lo}+" if lo >= policy.age_top_code else f"{lo}-{hi}"
             for lo, hi in policy.age_bands]
    return {"county_fips": [*model.codes("county_fips"), "UNKNOWN", ALL],
            "age_band": [*bands, "UNKNOWN", ALL],
            "sex": [*model.codes("sex"), "U", ALL],
            "race_ethnicity": [*model.codes("race"), "HISPANIC", "UNKNOWN", ALL]}


def _cube(basis: pl.DataFrame, domain: dict[str, list[str]]) -> pl.DataFrame:
    """Distinct persons and the sum of their record keys for every combination, with ALL
    totals, zeros included. A person counts once per year and program (the first row in
    person order if the basis holds two), so the totals are sums of the finest cells."""
    finest = (basis.sort(UNIT).unique(UNIT, keep="first", maintain_order=True)
              .group_by([*FIXED, *ADDITIVE])
              .agg(pl.len().cast(pl.Int64).alias("persons"),
                   pl.col("record_key").cast(pl.Int64).sum().alias("key_sum")))
    parts = []
    for r in range(len(ADDITIVE) + 1):
        for kept in itertools.combinations(ADDITIVE, r):
            g = finest.group_by([*FIXED, *kept]).agg(pl.col("persons", "key_sum").sum())
            parts.append(g.with_columns([pl.lit(ALL).alias(d) for d in ADDITIVE
                                         if d not in kept])
                         .select(*FIXED, *ADDITIVE, "persons", "key_sum"))
    counts = pl.concat(parts)
    grid = basis.select(FIXED).unique()
    for d in ADDITIVE:
        grid = grid.join(pl.DataFrame({d: domain[d]}), how="cross")
    return (grid.join(counts, on=[*FIXED, *ADDITIVE], how="left")
            .with_columns(pl.col("persons", "key_sum").fill_null(0).cast(pl.Int64)))


def protect(cube: pl.DataFrame, policy: DisclosurePolicy) -> pl.DataFrame:
    """Adds `published` (null unless publishable) and `reason` to a cube of true counts."""
    published, reason = cellkey.publish(pl.col("persons"), cellkey.cell_key(pl.col("key_sum")),
                                        policy.cell_key_perturbation, policy.min_cell_size)
    return cube.with_columns(published.alias("published"), reason.alias("reason"))


def build(basis: pl.DataFrame, record_keys: pl.DataFrame, model: DataModel,
          policy: DisclosurePolicy) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(published table, restricted cell register). `basis`: facts() rows as published
    (after hold-back); `record_keys`: person_id, record_key."""
    keyed = basis.join(record_keys, on="person_id", how="inner")
    values = domain(model, policy)
    cells = protect(_cube(keyed, values), policy)
    everyone = keyed.with_columns(pl.lit(SERVED).alias("program"))
    served = protect(_cube(everyone, values), policy)
    rates = served.select("year", *ADDITIVE, pl.col("published").alias("_served"))
    table = (cells.join(rates, on=["year", *ADDITIVE], how="left")
             .select(*FIXED, *ADDITIVE, pl.col("published").alias("persons"),
                     (pl.col("published") * 1000 / pl.col("_served")).round(1)
                     .alias("rate_per_1000_served"))
             .sort([*FIXED, *ADDITIVE]))
    register = (pl.concat([cells, served])
                .select(*FIXED, *ADDITIVE, pl.col("persons").alias("true_persons"),
                        "published", "reason", cellkey.cell_key(pl.col("key_sum"))
                        .alias("cell_key"))
                .filter(pl.col("true_persons") > 0))
    return table, register
