"""Pandera (polars) contracts of the published marts."""

from __future__ import annotations

from functools import lru_cache

import pandera.polars as pa
import polars as pl

from ids_lakehouse.deid.pseudonym import PSEUDONYM_CHARS
from ids_lakehouse.marts.people import HOMELESS_STUDENTS
from ids_lakehouse.model import load_model

PSEUDONYM = rf"^[0-9a-f]{{{PSEUDONYM_CHARS}}}$"



@lru_cache(maxsize=None)
def contract(mart: str) -> pa.DataFrameSchema:
    model = load_model()
    programs = [*model.codes("program"), HOMELESS_STUDENTS]
    count = pa.Column(pl.Int64, nullable=True, checks=pa.Check.ge(0, error="non_negative"))
    schemas = {
        "indicators": pa.DataFrameSchema({
            "year": pa.Column(pl.Int32), "program": pa.Column(pl.String, checks=pa.Check.isin(
                programs, error="code_list:program")),
            "county_fips": pa.Column(pl.String), "age_band": pa.Column(pl.String),
            "sex": pa.Column(pl.String), "race_ethnicity": pa.Column(pl.String),
            "persons": count,
            "rate_per_1000_served": pa.Column(pl.Float64, nullable=True,
                                              checks=pa.Check.ge(0, error="non_negative")),
        }, unique=["year", "program", "county_fips", "age_band", "sex", "race_ethnicity"],
            strict=True),
        "program_overlap": pa.DataFrameSchema({
            "program_a": pa.Column(pl.String), "program_b": pa.Column(pl.String, nullable=True),
            "persons": count, "first_year": pa.Column(pl.Int32),
            "last_year": pa.Column(pl.Int32),
        }, unique=["program_a", "program_b"], strict=True),
        "research_person": pa.DataFrameSchema({
            "pseudonym": pa.Column(pl.String, unique=True, checks=pa.Check.str_matches(
                PSEUDONYM, error="pseudonym")),
            "birth_year": pa.Column(pl.String), "sex": pa.Column(pl.String, checks=pa.Check.isin(
                ["F", "M", "U", "*"], error="code_list:sex")),
            "race_ethnicity": pa.Column(pl.String),
            "zip3": pa.Column(pl.String, checks=pa.Check.str_matches(
                r"^([0-9]{3}|\*|UNKNOWN)$", error="zip3")),
            "county_fips": pa.Column(pl.String),
        }, strict=True),
        "research_participation": pa.DataFrameSchema({
            "pseudonym": pa.Column(pl.String, checks=pa.Check.str_matches(
                PSEUDONYM, error="pseudonym")),
            "program": pa.Column(pl.String, checks=pa.Check.isin(programs,
                                                                 error="code_list:program")),
            "period": pa.Column(pl.String, checks=pa.Check.str_matches(
                r"^[0-9]{4}-[0-9]{4}$", error="period")),
        }, strict=True),
        "contact_directory": pa.DataFrameSchema({
            "person_id": pa.Column(pl.String),
            "source": pa.Column(pl.String),
            "phone": pa.Column(pl.String, nullable=True, checks=pa.Check.str_matches(
                r"^\+[1-9][0-9]{7,14}$", error="pattern")),
        }, unique=["person_id", "source"]),
    }
    return schemas[mart]
