"""A scanner for direct identifiers in outputs that must not hold any (research and
indicator marts, releases other than operations). Findings name the column, the rule and
how many rows matched: never the value."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

PATTERNS = {
    "ssn": r"(?:^|[^0-9A-Za-z])\d{3}-?\d{2}-?\d{4}(?:$|[^0-9A-Za-z])",
    "phone": r"(?:^|[^0-9A-Za-z])(?:\+?1[-. ]?)?\(?\d{3}\)?[-. ]\d{3}[-. ]\d{4}(?:$|[^0-9])"
             r"|^\+1\d{10}$",
    "email": r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}",
    "full_date": r"(?:^|[^0-9])(?:19|20)\d{2}-[01]\d-[0-3]\d(?:$|[^0-9])"
                 r"|(?:^|[^0-9])[01]?\d/[0-3]?\d/(?:19|20)\d{2}(?:$|[^0-9])",
    "person_id": r"^P[0-9A-F]{16}$",
}


@dataclass(frozen=True)
class Finding:
    column: str
    rule: str
    rows: int


def scan(df: pl.DataFrame, full_names: set[str] | None = None) -> list[Finding]:
    """`full_names`: 'FIRST LAST' strings from the silver layer, looked for as values."""
    findings = []
    for name, dtype in df.schema.items():
        if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
            findings.append(Finding(name, "full_date_column", df[name].drop_nulls().len()))
            continue
        if dtype != pl.String:
            continue
        col = df[name].drop_nulls()
        for rule, pattern in PATTERNS.items():
            hits = int(col.str.contains(pattern).sum())
            if hits:
                findings.append(Finding(name, rule, hits))
        if full_names:
            hits = int(col.str.to_uppercase().is_in(list(full_names)).sum())
            if hits:
                findings.append(Finding(name, "full_name", hits))
    return findings
