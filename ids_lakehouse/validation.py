"""Checks of the domain's steps: a check's verdict as the domain reports it, and validating
a frame against a Pandera contract without letting a value out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandera.errors
import pandera.polars as pa
import polars as pl


@dataclass(frozen=True)
class Check:
    """A check's verdict on one table (a silver entity, a mart); metadata holds counts,
    column names and rules, never a value."""
    table: str
    name: str
    passed: bool
    metadata: dict[str, Any]


def failure_counts(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> dict[str, int]:
    """Rows failing each check, keyed "check|column"; empty when the frame passes. Only
    counts leave here: Pandera's failure_case column and its message carry the values."""
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return {f"{check}|{column}": n for check, column, n in
                cases.group_by(["check", "column"]).len().iter_rows()}
    return {}
