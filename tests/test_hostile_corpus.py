"""The hostile corpus (tests/hostile_files.py) through the real `ingest_file` on real Delta:
each file is rejected whole with its rule, or its rows are kept and quarantined as expected
and reconcile; no planted personal value reaches a message, a reason or a log line."""

from __future__ import annotations

import logging
import time

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.ingest.bronze import count_rows, ingest_file
from ids_lakehouse.ingest.errors import IngestError
from ids_lakehouse.ingest.landing import landed_file
from ids_lakehouse.ingest.reconcile import reconcile
from ids_lakehouse.sources import SourceDefinition
from tests.hostile_files import CASES, SECRETS, Case

CASE_SECONDS = 20


def land(root, case: Case, name: str, data: bytes):
    path = root / "agency" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a planted value leaked into {where}"


def test_the_corpus_is_broad():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.fmt for c in CASES} == {"csv", "jsonl", "fixed_width", "xlsx", "parquet"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file(case: Case, tmp_path, lake, caplog):
    caplog.set_level(logging.DEBUG)
    defn = SourceDefinition.model_validate(case.definition())
    root = tmp_path / "landing"
    for name, build in case.before:
        earlier = landed_file(root, defn, land(root, case, name, build()))
        ingest_file(defn, earlier, lake, "run-0")
    data = case.build()
    landed = landed_file(root, defn, land(root, case, case.file_name, data))
    started = time.perf_counter()
    try:
        result = ingest_file(defn, landed, lake, "run-1")
    except IngestError as err:
        elapsed = time.perf_counter() - started
        no_secret(err.message, "the error message")
        no_secret(str(err), "str(error)")
        no_secret(repr(err.as_dict()), "the error's details")
        no_secret(caplog.text, "the log")
        assert case.rule is not None, f"unexpected failure: {err.message}"
        assert err.rule == case.rule, err.message
        assert err.source == "agency" and err.file == f"agency/{case.file_name}"
        if case.line is not None:
            assert err.line == case.line, err.message
        assert count_rows(lake.bronze("agency"), landed.sha256) == 0, "rows were written"
        assert count_rows(lake.quarantine("agency"), landed.sha256) == 0
        assert elapsed < CASE_SECONDS
        return
    elapsed = time.perf_counter() - started
    assert case.rule is None, f"expected rule {case.rule}, the file was accepted"
    assert elapsed < CASE_SECONDS
    no_secret(repr(result.as_metadata()), "the ingest result")
    no_secret(caplog.text, "the log")

    rec = reconcile(defn, landed, lake, result.rows_read)
    assert rec.passed, rec
    expected_q = sum(len(v) for v in case.quarantined.values())
    assert (rec.bronze, rec.quarantined) == (case.kept, expected_q), rec
    assert (result.rows_written, result.rows_quarantined) == (case.kept, expected_q)
    assert rec.delivered in (None, case.kept + expected_q)

    if expected_q:
        q = pl.from_arrow(delta.read(lake.quarantine("agency")))
        for reason in q["_reason"].to_list() + [c for c in q["_column"].to_list() if c]:
            no_secret(reason, "a quarantine reason")
        got = {}
        for rule, line in zip(q["_rule"], q["_row_number"]):
            got.setdefault(rule, []).append(line)
        assert {r: sorted(v) for r, v in got.items()} == case.quarantined
        assert all(raw is not None for raw in q["_raw"])
    if case.kept_lines is not None or case.bronze is not None:
        df = pl.from_arrow(delta.read(lake.bronze("agency"))).sort("_row_number")
        if case.kept_lines is not None:
            assert df["_row_number"].to_list() == case.kept_lines
        for column, values in (case.bronze or {}).items():
            assert df[column].to_list() == values


@pytest.mark.timeout(30)
@pytest.mark.parametrize("raised,expected", [
    (Exception(f"Cast error: Cannot cast string '{SECRETS[0]}' to value of Int64 type"),
     "schema_conflict"),
    (OSError(f"No space left writing part for {SECRETS[1]}"), "BronzeWriteError"),
])
def test_delta_write_errors_are_wrapped(tmp_path, lake, monkeypatch, raised, expected):
    """A library's own message (delta-rs quotes the value it could not cast) never reaches
    the caller: a type clash becomes schema_conflict, anything else a retryable
    BronzeWriteError naming source, file and the exception class."""
    from ids_lakehouse.ingest import bronze
    from ids_lakehouse.ingest.errors import BronzeWriteError
    from tests.hostile_files import CSV

    def boom(*args, **kwargs):
        raise raised

    monkeypatch.setattr(bronze, "replace_file_rows", boom)
    defn = SourceDefinition.model_validate(CASES[0].definition())
    root = tmp_path / "landing"
    landed = landed_file(root, defn, land(root, CASES[0], "a.csv", CSV.encode()))
    with pytest.raises((IngestError, BronzeWriteError)) as info:
        ingest_file(defn, landed, lake, "run-1")
    err = info.value
    no_secret(str(err), "the error")
    assert (err.rule if isinstance(err, IngestError) else type(err).__name__) == expected
    assert type(raised).__name__ in str(err)


@pytest.mark.timeout(30)
def test_a_reader_crash_is_wrapped(tmp_path, lake, monkeypatch):
    from ids_lakehouse.ingest import csv_reader
    from tests.hostile_files import CSV

    def crash(self):
        yield from ()
        raise ValueError(f"unexpected {SECRETS[2]}")

    monkeypatch.setattr(csv_reader.CsvReader, "_batches", crash)
    defn = SourceDefinition.model_validate(CASES[0].definition())
    root = tmp_path / "landing"
    landed = landed_file(root, defn, land(root, CASES[0], "a.csv", CSV.encode()))
    with pytest.raises(IngestError) as info:
        ingest_file(defn, landed, lake, "run-1")
    assert info.value.rule == "unreadable_file" and "ValueError" in info.value.message
    no_secret(info.value.message, "the error")
    assert count_rows(lake.bronze("agency"), landed.sha256) == 0
