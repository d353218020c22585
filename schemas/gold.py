"""Pandera (polars) contracts of the published marts, derived from data_model/marts.yaml."""

from __future__ import annotations

from functools import lru_cache

import pandera.polars as pa
import polars as pl

from ids_lakehouse.deid.pseudonym import PSEUDONYM_CHARS
from ids_lakehouse.marts.declaration import MartColumn, load_marts
from ids_lakehouse.marts.people import HOMELESS_STUDENTS
from ids_lakehouse.model import load_model

DTYPES: dict[str, type[pl.DataType]] = {"String": pl.String, "Int32": pl.Int32,
                                        "Int64": pl.Int64, "Float64": pl.Float64,
                                        "Date": pl.Date}
FORMATS = {"pseudonym": rf"^[0-9a-f]{{{PSEUDONYM_CHARS}}}$"}


def _codes(code_list: str) -> list[str]:
    """A model code list; the marts' program list also holds the derived McKinney-Vento
    program."""
    codes = load_model().codes(code_list)
    return [*codes, HOMELESS_STUDENTS] if code_list == "program" else codes


def _checks(col: MartColumn) -> list[pa.Check]:
    checks = []
    if col.non_negative:
        checks.append(pa.Check.ge(0, error="non_negative"))
    if col.code_list:
        checks.append(pa.Check.isin(_codes(col.code_list), error=f"code_list:{col.code_list}"))
    if col.values is not None:
        checks.append(pa.Check.isin(col.values, error="values"))
    if col.pattern is not None:
        checks.append(pa.Check.str_matches(f"^(?:{col.pattern})$", error="pattern"))
    if col.format is not None:
        checks.append(pa.Check.str_matches(FORMATS[col.format], error=col.format))
    return checks


@lru_cache(maxsize=None)
def contract(mart: str) -> pa.DataFrameSchema:
    declared = load_marts().marts[mart]
    return pa.DataFrameSchema(
        {name: pa.Column(DTYPES[c.type], nullable=c.nullable, unique=c.unique,
                         checks=_checks(c))
         for name, c in declared.columns.items()},
        unique=declared.unique or None, strict=declared.strict)
