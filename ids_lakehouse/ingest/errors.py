"""Ingest failures and rejected rows. Messages name source, file, line and rule; they never
carry a delivered value, because a value may be someone's personal data."""

from __future__ import annotations

from dataclasses import dataclass


class IngestError(Exception):
    """A whole-file problem: the file is not ingested and stays where it is."""

    def __init__(self, source: str, file: str, rule: str, reason: str,
                 line: int | None = None, expected: str | None = None,
                 found: str | None = None):
        self.source, self.file, self.rule, self.reason = source, file, rule, reason
        self.line, self.expected, self.found = line, expected, found
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.file}" + (f", line {self.line}" if self.line else "")
        text = f"[{self.source}] {where}: {self.rule}: {self.reason}"
        if self.expected is not None:
            text += f" (expected {self.expected}; found {self.found})"
        return text

    def as_dict(self) -> dict[str, str | int | None]:
        return {"source": self.source, "file": self.file, "rule": self.rule,
                "reason": self.reason, "line": self.line, "expected": self.expected,
                "found": self.found}


@dataclass(frozen=True)
class Reject:
    """A row-level problem: the row goes to quarantine with its rule and reason."""

    row_number: int
    rule: str
    reason: str
    raw: str | None  # the delivered text of the row; restricted, never logged
    column: str | None = None


class BronzeWriteError(RuntimeError):
    """The Delta write of a file's rows failed for a reason other than the file (I/O, a
    commit race): transient, so the run may be retried. The message names source and file
    and the exception class only; a library's own message may quote a delivered value."""
