"""Analytics, research & evaluation: a linked, de-identified, longitudinal person file.

Safe Harbor: no direct identifiers; birth year only (top-coded); ZIP3 (000 for restricted
areas); dates of spells as years (or months where policy allows). Pseudonyms are keyed per
release. k-anonymity over the declared quasi-identifiers by generalisation, then local
suppression; what was done is returned for the asset's metadata."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from ids_lakehouse.deid import kanon
from ids_lakehouse.deid.policy import DisclosurePolicy
from ids_lakehouse.deid.pseudonym import pseudonymise
from ids_lakehouse.deid.safe_harbor import birth_year, zip3


@dataclass(frozen=True)
class ResearchFile:
    persons: pl.DataFrame
    spells: pl.DataFrame
    anonymity: kanon.Anonymised


def _coarse(date: pl.Expr, precision: str) -> pl.Expr:
    return date.dt.strftime("%Y-%m") if precision == "month" else date.dt.year().cast(pl.String)


def build(persons: pl.DataFrame, enrollment_linked: pl.DataFrame, key: bytes,
          policy: DisclosurePolicy, as_of: dt.date) -> ResearchFile:
    qis = policy.research_quasi_identifiers
    people = persons.select(
        pseudonymise(persons["person_id"], key).alias("pseudonym"),
        birth_year(pl.col("dob"), as_of.year).alias("birth_year"),
        pl.col("sex").fill_null("U"),
        "race_ethnicity",
        zip3(pl.col("zip")).fill_null("UNKNOWN").alias("zip3"),
        pl.col("county_fips").fill_null("UNKNOWN"),
        pl.col("person_id"))
    result = kanon.anonymise(people, qis, policy.k_anonymity, policy.generalisation,
                             policy.max_local_suppression)
    kept = result.frame.select("person_id", "pseudonym")
    precision = policy.research_date_precision
    spells = (enrollment_linked.join(kept, on="person_id", how="inner")
              .select("pseudonym", "program",
                      _coarse(pl.col("start_date"), precision).alias("start"),
                      _coarse(pl.col("end_date"), precision).alias("end"))
              .unique().sort(["pseudonym", "program", "start", "end"], nulls_last=True))
    return ResearchFile(persons=result.frame.drop("person_id").sort("pseudonym"),
                        spells=spells, anonymity=result)
