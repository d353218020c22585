"""Every kind of bad delivery: a whole-file problem fails with source, file, line and rule and
writes nothing; a row-level problem quarantines the row and the rest is ingested."""

from __future__ import annotations

import gzip
import io

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.ingest import csv_reader
from ids_lakehouse.ingest.errors import IngestError
from tests.ingest_helpers import bronze_rows, definition, ingest, land

GOOD = "id,first_name,last_name,dob\n1,Ann,Lee,2001-02-03\n2,José,Muñoz,1999-12-31\n"
SECRET_NAME = "Zebulon"


def fails(defn, root, path, lake, rule: str, line: int | None = None) -> IngestError:
    with pytest.raises(IngestError) as info:
        ingest(defn, root, path, lake)
    err = info.value
    assert err.rule == rule, err.message
    assert err.source == "agency" and err.file == f"agency/{path.name}"
    if line is not None:
        assert err.line == line, err.message
    assert SECRET_NAME not in err.message
    assert bronze_rows(lake) == 0
    return err


def test_good_csv_is_ingested_whole(tmp_path, lake):
    path = land(tmp_path, "a.csv", GOOD)
    result = ingest(definition(), tmp_path, path, lake)
    assert (result.rows_read, result.rows_written, result.rows_quarantined) == (2, 2, 0)
    df = pl.from_arrow(delta.read(lake.bronze("agency")))
    assert df.sort("_row_number")["last_name"].to_list() == ["Lee", "Muñoz"]
    assert df["_row_number"].sort().to_list() == [2, 3]
    assert set(df["_file"]) == {"agency/a.csv"} and set(df["_run_id"]) == {"run-1"}
    assert df.schema["dob"] == pl.String  # text stays text: nothing lost to parsing


def test_cp1252_file_declared_cp1252_decodes(tmp_path, lake):
    path = land(tmp_path, "a.csv", GOOD + "3,Zoë,O’Neil,2000-01-01\n", encoding="cp1252")
    ingest(definition(encoding="cp1252"), tmp_path, path, lake)
    df = pl.from_arrow(delta.read(lake.bronze("agency")))
    assert "O’Neil" in df["last_name"].to_list()


def test_wrong_encoding_names_the_line(tmp_path, lake):
    data = GOOD.encode() + f"3,{SECRET_NAME},Peña,2000-01-01\n".encode("cp1252")
    path = land(tmp_path, "a.csv", data)
    fails(definition(), tmp_path, path, lake, "wrong_encoding", line=4)


def test_utf8_file_declared_cp1252_is_refused(tmp_path, lake):
    path = land(tmp_path, "a.csv", GOOD)
    fails(definition(encoding="cp1252"), tmp_path, path, lake, "wrong_encoding", line=3)


def test_truncated_gzip_fails(tmp_path, lake):
    body = GOOD + "".join(f"{i},{SECRET_NAME},Lee,2001-01-01\n" for i in range(3, 20000))
    blob = gzip.compress(body.encode())
    path = land(tmp_path, "a.csv.gz", blob[: len(blob) // 2])
    fails(definition(file_pattern="*.csv*"), tmp_path, path, lake, "corrupt_compression")


def test_gzip_csv_is_read(tmp_path, lake):
    path = land(tmp_path, "a.csv.gz", gzip.compress(GOOD.encode()))
    assert ingest(definition(), tmp_path, path, lake).rows_written == 2


@pytest.mark.parametrize("fmt,data", [
    ("csv", b"PAR1\x00\x00binary"),
    ("csv", b"PK\x03\x04zipfile"),
    ("jsonl", GOOD.encode()),
    ("parquet", GOOD.encode()),
    ("xlsx", GOOD.encode()),
])
def test_file_not_in_declared_format(tmp_path, lake, fmt, data):
    path = land(tmp_path, f"a.{fmt}", data)
    fails(definition(format=fmt), tmp_path, path, lake, "wrong_format")


def test_missing_required_columns(tmp_path, lake):
    path = land(tmp_path, "a.csv", "id,first_name,dob\n1,Ann,2001-01-01\n")
    err = fails(definition(), tmp_path, path, lake, "missing_required_columns", line=1)
    assert "last_name" in err.message


def test_extra_columns_are_kept_and_reported(tmp_path, lake):
    path = land(tmp_path, "a.csv", "id,first_name,last_name,dob,shoe_size\n1,A,B,C,44\n")
    result = ingest(definition(), tmp_path, path, lake)
    assert result.extra_columns == ["shoe_size"]
    assert "shoe_size" in delta.table(lake.bronze("agency")).schema().to_arrow().names


def test_extra_columns_fail_when_the_definition_says_so(tmp_path, lake):
    path = land(tmp_path, "a.csv", "id,first_name,last_name,dob,shoe_size\n1,A,B,C,44\n")
    fails(definition(extra_columns="fail"), tmp_path, path, lake, "unexpected_columns")


def test_ragged_rows_go_to_quarantine_with_line_numbers(tmp_path, lake):
    data = GOOD + f"3,{SECRET_NAME},Lee\n4,A,B,C,D\n5,Eve,Ng,2002-02-02\n"
    path = land(tmp_path, "a.csv", data)
    result = ingest(definition(), tmp_path, path, lake)
    assert (result.rows_read, result.rows_written, result.rows_quarantined) == (5, 3, 2)
    q = pl.from_arrow(delta.read(lake.quarantine("agency")))
    assert q.sort("_row_number")["_row_number"].to_list() == [4, 5]
    assert set(q["_rule"]) == {"ragged_row"} and set(q["_stage"]) == {"ingest"}
    assert all(SECRET_NAME not in r for r in q["_reason"])  # values only in the raw column


def test_ragged_rows_fail_the_file_when_the_definition_says_so(tmp_path, lake):
    path = land(tmp_path, "a.csv", GOOD + "3,Ann\n")
    fails(definition(row_errors="fail"), tmp_path, path, lake, "ragged_row", line=4)


def test_line_numbers_stay_exact_across_many_blocks(tmp_path, lake, monkeypatch):
    monkeypatch.setattr(csv_reader, "BLOCK_BYTES", 2048)
    lines, good, bad = ["id,first_name,last_name,dob"], {}, set()
    for i in range(2, 6002):
        if i % 97 == 0:
            lines.append(f"{i},ragged")
            bad.add(i)
        elif i % 131 == 0:
            lines.append("" if i % 2 else ",,,")
        else:
            lines.append(f"{i},F{i},L{i},2000-01-01")
            good[i] = f"L{i}"
    path = land(tmp_path, "a.csv", "\n".join(lines) + "\n")
    result = ingest(definition(), tmp_path, path, lake)
    assert result.rows_quarantined == len(bad) and result.rows_written == len(good)
    df = pl.from_arrow(delta.read(lake.bronze("agency")))
    assert dict(zip(df["_row_number"], df["last_name"])) == good
    q = pl.from_arrow(delta.read(lake.quarantine("agency")))
    assert set(q["_row_number"]) == bad


def test_empty_file(tmp_path, lake):
    path = land(tmp_path, "a.csv", b"")
    fails(definition(), tmp_path, path, lake, "empty_file")


def test_header_only_file_is_a_delivery_of_no_rows(tmp_path, lake):
    path = land(tmp_path, "a.csv", "id,first_name,last_name,dob\n")
    result = ingest(definition(), tmp_path, path, lake)
    assert (result.rows_read, result.rows_written) == (0, 0)


def test_duplicate_header_names(tmp_path, lake):
    path = land(tmp_path, "a.csv", "id,last_name,last_name,dob\n1,A,B,C\n")
    err = fails(definition(), tmp_path, path, lake, "duplicate_header", line=1)
    assert "last_name" in err.message


def test_jsonl_bad_lines_are_quarantined(tmp_path, lake):
    data = ('{"id": "1", "last_name": "Lee", "n": 1.50}\n'
            f'{{"id": "2", "last_name": "{SECRET_NAME}"\n'
            '[1, 2]\n\n'
            '{"id": "3", "last_name": "Ng", "surprise": true}\n'
            '{"id": "4", "last_name": "Ok", "n": 7}\n')
    path = land(tmp_path, "a.jsonl", data)
    result = ingest(definition(format="jsonl", extra_columns="keep"), tmp_path, path, lake)
    assert (result.rows_written, result.rows_quarantined, result.blank_lines) == (2, 3, 1)
    df = pl.from_arrow(delta.read(lake.bronze("agency")))
    assert sorted(df["n"].to_list()) == ["1.50", "7"]  # numbers keep their delivered text
    q = pl.from_arrow(delta.read(lake.quarantine("agency")))
    assert sorted(zip(q["_row_number"], q["_rule"])) == [
        (2, "invalid_json"), (3, "invalid_json"), (5, "unexpected_key")]


def test_fixed_width_long_lines_are_quarantined(tmp_path, lake):
    layout = [{"name": "id", "start": 1, "width": 3}, {"name": "first_name", "start": 4,
              "width": 6}, {"name": "last_name", "start": 10, "width": 6},
              {"name": "dob", "start": 16, "width": 8}]
    data = "001Ann   Lee   20010203\n002Bo    Ng    2002030499\n003Cy    Oz\n"
    path = land(tmp_path, "a.txt", data)
    defn = definition(format="fixed_width", fixed_width=layout, encoding="latin-1")
    result = ingest(defn, tmp_path, path, lake)
    assert (result.rows_written, result.rows_quarantined) == (2, 1)
    df = pl.from_arrow(delta.read(lake.bronze("agency")))
    assert df.sort("id")["last_name"].to_list() == ["Lee", "Oz"]
    assert df.sort("id")["dob"].to_list() == ["20010203", None]


def test_xlsx_ragged_row_and_typed_cells(tmp_path, lake):
    import datetime as dt

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "data"
    sheet.append(["id", "first_name", "last_name", "dob"])
    sheet.append(["1", "Ann", "Lee", dt.date(2001, 2, 3)])
    sheet.append(["2", "Bo", "Ng", dt.date(2002, 3, 4), "extra"])
    sheet.append([None, None, None, None])
    sheet.append([3, "Cy", "Oz", None])
    buf = io.BytesIO()
    book.save(buf)
    path = land(tmp_path, "a.xlsx", buf.getvalue())
    result = ingest(definition(format="xlsx", sheet="data"), tmp_path, path, lake)
    assert (result.rows_written, result.rows_quarantined, result.blank_lines) == (2, 1, 1)
    df = pl.from_arrow(delta.read(lake.bronze("agency")))
    assert df.sort("_row_number")["dob"].to_list() == ["2001-02-03T00:00:00", None]
    assert df.sort("_row_number")["_row_number"].to_list() == [2, 5]


def test_missing_sheet(tmp_path, lake):
    from openpyxl import Workbook

    buf = io.BytesIO()
    Workbook().save(buf)
    path = land(tmp_path, "a.xlsx", buf.getvalue())
    fails(definition(format="xlsx", sheet="data"), tmp_path, path, lake, "missing_sheet")


def test_failure_midway_commits_nothing(tmp_path, lake, monkeypatch):
    monkeypatch.setattr(csv_reader, "BLOCK_BYTES", 4096)
    body = GOOD.encode() + b"".join(f"{i},A,B,C\n".encode() for i in range(3, 5000))
    path = land(tmp_path, "a.csv", body + b"9999,\xff\xfe,B,C\n")
    fails(definition(), tmp_path, path, lake, "wrong_encoding", line=5001)
