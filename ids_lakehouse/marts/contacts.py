"""Operations & service delivery: identified contact details. Restricted: they only leave
the lakehouse through a gated release naming recipient, purpose, sources and fields.

The mart keeps one row per person *per source that knows them* (each row the values most
of that source's records agree on), so that a release can be built from the sources of its
agreement only: `for_release` keeps the agreed population and lets the rows of the agreed
sources alone decide each released value. Nothing a non-party agency delivered can reach a
recipient, not even as a tie-breaker."""

from __future__ import annotations

import polars as pl

from ids_lakehouse.marts.people import linked, survive

ATTRIBUTES = ["first_name", "last_name", "dob", "phone", "email", "street", "city", "zip",
              "county_fips"]
FIELDS = ["person_id", "source", *ATTRIBUTES]


def build(person_record: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    """One row per person and source (see `survive`)."""
    recs = linked(person_record, xref).select(FIELDS)
    return survive(recs, ["person_id", "source"], ATTRIBUTES).select(FIELDS)


def for_release(directory: pl.DataFrame, sources: list[str], population: list[str]
                ) -> pl.DataFrame:
    """One row per person seen in a `population` source, each value decided by the rows of
    `sources` only; `sources` lists the ones that contributed."""
    rows = directory.filter(pl.col("source").is_in(sources))
    people = rows.filter(pl.col("source").is_in(population)).select("person_id").unique()
    return survive(rows.join(people, on="person_id"), ["person_id"], ATTRIBUTES)
