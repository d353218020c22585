"""Validating a frame against a Pandera contract without letting a value out."""

from __future__ import annotations

import pandera.errors
import pandera.polars as pa
import polars as pl


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
