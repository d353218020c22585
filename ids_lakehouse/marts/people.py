"""One row per person from their linked records, and the years each person was in each
program: the facts every mart is built from."""

from __future__ import annotations

import datetime as dt

import polars as pl

ATTRIBUTES = ["first_name", "last_name", "dob", "sex", "race", "hispanic", "county_fips",
              "zip", "phone", "email", "street", "city"]
HOMELESS_STUDENTS = "K12_MCKINNEY_VENTO"
FIRST_YEAR = 2019       # the marts cover program years from this one to the reference date


def linked(frame: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    return frame.join(xref.select("source", "source_record_id", "person_id"),
                      on=["source", "source_record_id"], how="inner")


def survive(rows: pl.DataFrame, by: list[str], attributes: list[str]) -> pl.DataFrame:
    """One row per `by` group, sorted by it: each attribute takes the value most of the
    group's rows agree on (ties: the smallest value, so the result is deterministic), and
    `sources` lists the sources of the group's rows. A group of one row is that row (most
    people have one record); larger groups are numbered for the work: grouping by an
    integer is much faster than by string ids."""
    size = pl.len().over(by)
    single = rows.filter(size == 1).select(*by, *attributes, pl.col("source").alias("sources"))
    rows = rows.filter(size > 1)
    ids = rows.select(by).unique().sort(by).with_row_index("_p")
    rows = rows.join(ids, on=by)
    out = ids
    for a in attributes:
        counts = rows.filter(pl.col(a).is_not_null()).group_by(["_p", a]).len()
        best = (counts.filter(pl.col("len") == pl.col("len").max().over("_p"))
                .group_by("_p").agg(pl.col(a).min()))
        out = out.join(best, on="_p", how="left")
    sources = (rows.select("_p", "source").unique().sort("_p", "source")
               .group_by("_p", maintain_order=True)
               .agg(pl.col("source").str.join(",").alias("sources")))
    several = out.join(sources, on="_p").drop("_p")
    return pl.concat([single, several.select(single.columns)]).sort(by)


def golden_persons(person_record: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    """One row per person from all their linked records (see `survive`)."""
    return survive(linked(person_record, xref), ["person_id"], ATTRIBUTES).with_columns(
        pl.when(pl.col("hispanic") == "Y").then(pl.lit("HISPANIC"))
        .otherwise(pl.col("race").fill_null("UNKNOWN")).alias("race_ethnicity"))


def program_years(enrollment: pl.DataFrame, xref: pl.DataFrame, first_year: int,
                  as_of: dt.date) -> pl.DataFrame:
    """(person_id, program, year) for every year a spell overlaps, within the window.
    Students flagged homeless (McKinney-Vento) also count in K12_MCKINNEY_VENTO."""
    e = linked(enrollment, xref)
    homeless = e.filter(pl.col("homeless_flag") == "Y").with_columns(
        pl.lit(HOMELESS_STUDENTS).alias("program"))
    spells = pl.concat([e, homeless]).select(
        "person_id", "program",
        pl.col("start_date").dt.year().alias("y0"),
        pl.col("end_date").fill_null(as_of).dt.year().alias("y1"))
    spells = spells.filter((pl.col("y1") >= first_year) & (pl.col("y0") <= as_of.year))
    return (spells.with_columns(pl.int_ranges(pl.max_horizontal("y0", pl.lit(first_year)),
                                              pl.min_horizontal("y1", pl.lit(as_of.year)) + 1)
                                .alias("year"))
            .explode("year").select("person_id", "program", pl.col("year").cast(pl.Int32))
            .unique().sort(["person_id", "program", "year"]))
