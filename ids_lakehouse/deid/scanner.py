"""A scanner for direct identifiers in outputs that must not hold any (research and
indicator marts, releases other than operations). Findings name the column, the rule and
how many rows matched: never the value."""

from __future__ import annotations

from collections.abc import Iterable
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


# Free text people write about people (a steward's reason, a request's justification)
# must not carry identifiers into the audit log: what looks like one is refused.
_MONTH = (r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?")
TEXT_PATTERNS = {k: v for k, v in PATTERNS.items() if k != "person_id"} | {
    # Seven digits in a row, or nine with spaces or punctuation between them (an SSN or
    # a phone typed apart); legal citations ("RCW 43.70.050", "45 CFR 164.512") pass.
    "long_number": r"\d{7,}|(?:\d[\s./-]?){9,}",
    "person_id": r"\bP[0-9A-F]{16}\b",
    "date": r"\b(?:[0-3]?\d[-/.][01]?\d[-/.](?:19|20)\d{2}|(?:19|20)\d{2}[-/.][01]?\d"
            r"[-/.][0-3]?\d)\b",
    "date_in_words": rf"(?i)\b(?:{_MONTH}\s+[0-3]?\d(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}"
                     rf"|[0-3]?\d(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+(?:19|20)\d{{2}})\b"}


_WORDS = {"ssn": "an SSN", "phone": "a phone number", "email": "an e-mail address",
          "full_date": "a date", "date": "a date", "date_in_words": "a date",
          "long_number": "a long number", "person_id": "a person id"}


def in_words(rules: list[str]) -> str:
    """The rules `identifiers_in_text` found, as a reader would say them."""
    return ", ".join(dict.fromkeys(_WORDS.get(r, r) for r in rules))


def identifiers_in_text(text: str) -> list[str]:
    """The rules (names) a free text matches: ssn, phone, email, dates, long numbers."""
    import re

    return sorted(rule for rule, pattern in TEXT_PATTERNS.items() if re.search(pattern, text))


@dataclass(frozen=True)
class Finding:
    column: str
    rule: str
    rows: int


def scan(df: pl.DataFrame, full_names: Iterable[str] | pl.Series | None = None
         ) -> list[Finding]:
    """`full_names`: 'FIRST LAST' strings from the silver layer, looked for as values.
    Each distinct value of a column is tested once and its rows counted."""
    names = None if full_names is None else pl.Series(
        full_names if isinstance(full_names, pl.Series) else list(full_names),
        dtype=pl.String)
    findings = []
    for name, dtype in df.schema.items():
        if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
            findings.append(Finding(name, "full_date_column", df[name].drop_nulls().len()))
            continue
        if dtype != pl.String:
            continue
        counts = df[name].drop_nulls().value_counts(name="_rows")
        values = counts[name]
        for rule, pattern in PATTERNS.items():
            hits = int(counts["_rows"].filter(values.str.contains(pattern)).sum())
            if hits:
                findings.append(Finding(name, rule, hits))
        if names is not None and names.len():
            hits = int(counts["_rows"].filter(values.str.to_uppercase().is_in(names.implode()))
                       .sum())
            if hits:
                findings.append(Finding(name, "full_name", hits))
    return findings
