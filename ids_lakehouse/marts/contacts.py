"""Operations & service delivery: identified contact details per person. Restricted: it
only leaves the lakehouse through a gated release naming recipient, purpose and fields."""

from __future__ import annotations

import polars as pl

FIELDS = ["person_id", "first_name", "last_name", "dob", "phone", "email", "street", "city",
          "zip", "county_fips", "sources"]


def build(persons: pl.DataFrame) -> pl.DataFrame:
    return persons.select(FIELDS).sort("person_id")
