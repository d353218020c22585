"""Analytics, research & evaluation: a linked, de-identified, longitudinal person file.

Safe Harbor: no direct identifiers; birth year only (top-coded); ZIP3 (000 for restricted
areas); program participation released per period (years at the finest), never as dates.
Pseudonyms are keyed per release. k-anonymity holds over the whole record of a person —
demographics and participation with its timing — reached by generalisation along the
declared ladder, then local suppression; what was done is returned for the asset's
metadata."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from ids_lakehouse.deid import kanon
from ids_lakehouse.deid.policy import DisclosurePolicy
from ids_lakehouse.deid.pseudonym import pseudonymise
from ids_lakehouse.deid.safe_harbor import birth_year, zip3

# The gold file's pseudonyms are keyed with this label (a release re-keys them per agreement).
PSEUDONYM_LABEL = "gold/research_person"


@dataclass(frozen=True)
class ResearchFile:
    persons: pl.DataFrame
    participation: pl.DataFrame
    anonymity: kanon.Anonymised


def build(persons: pl.DataFrame, program_years: pl.DataFrame, key: bytes,
          policy: DisclosurePolicy, first_year: int, as_of: dt.date) -> ResearchFile:
    """`program_years`: (person_id, program, year) for every year a person was in a
    program (marts.people.program_years)."""
    qis = policy.research_quasi_identifiers
    people = persons.select(
        pl.col("person_id"),
        birth_year(pl.col("dob"), as_of.year).alias("birth_year"),
        pl.col("sex").fill_null("U"),
        "race_ethnicity",
        zip3(pl.col("zip")).fill_null("UNKNOWN").alias("zip3"),
        pl.col("county_fips").fill_null("UNKNOWN"))
    result = kanon.anonymise(people, program_years, qis, policy.k_anonymity,
                             policy.generalisation, policy.max_local_suppression,
                             first_year, as_of.year, policy.participation_period_years)
    names = result.persons.select("person_id", pseudonymise(
        result.persons["person_id"], key).alias("pseudonym"))
    research_person = (result.persons.join(names, on="person_id")
                       .select("pseudonym", *qis).sort("pseudonym"))
    participation = (result.periods.join(names, on="person_id")
                     .select("pseudonym", "program", "period")
                     .sort(["pseudonym", "program", "period"]))
    return ResearchFile(persons=research_person, participation=participation,
                        anonymity=result)
