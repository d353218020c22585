"""A corpus of hostile and malformed deliveries, generated (never committed), each with the
outcome the ingest must give: the whole file rejected with a rule (and line), or some rows
kept and the others quarantined with their rule and line.

Every file carries a planted person (name, SSN, date of birth) so a test can prove no
message, reason, audit detail or log line ever repeats a delivered value."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

SECRET_FIRST = "Zebulonia"
SECRET_LAST = "Quuxworthy"
SECRET_SSN = "987-65-4329"
SECRET_DOB = "1911-11-11"
SECRETS = (SECRET_FIRST, SECRET_LAST, SECRET_SSN, SECRET_DOB)

COLUMNS = ["id", "first_name", "last_name", "dob", "ssn"]
BASE = {
    "source": "agency", "agency": "Hostile test agency", "description": "hostile corpus",
    "data_owner": "owner@example.gov", "steward": "steward@example.gov",
    "columns": COLUMNS, "required_columns": ["id", "last_name"], "record_id": "id",
}
HEADER = ",".join(COLUMNS)
SECRET_ROW = f"9,{SECRET_FIRST},{SECRET_LAST},{SECRET_DOB},{SECRET_SSN}"
ROWS = ["1,Ann,Lee,2001-02-03,111-22-3333", "2,Bo,Ng,1999-12-31,222-33-4444", SECRET_ROW]
CSV = HEADER + "\n" + "\n".join(ROWS) + "\n"
LAYOUT = [{"name": "id", "start": 1, "width": 3},
          {"name": "first_name", "start": 4, "width": 10},
          {"name": "last_name", "start": 14, "width": 12},
          {"name": "dob", "start": 26, "width": 10},
          {"name": "ssn", "start": 36, "width": 11}]


@dataclass(frozen=True)
class Case:
    """One hostile delivery. `rule` set: the file must fail with that rule (and `line` when
    given) and write nothing. Otherwise `kept` rows reach bronze and `quarantined` maps each
    rule to the lines quarantined under it; `kept_lines` optionally pins the kept rows."""

    id: str
    fmt: str
    build: Callable[[], bytes]
    name: str = ""
    defn: dict = field(default_factory=dict)
    rule: str | None = None
    line: int | None = None
    kept: int = 0
    quarantined: dict[str, list[int]] = field(default_factory=dict)
    kept_lines: list[int] | None = None
    bronze: dict[str, list] | None = None     # column -> values, in line order
    before: tuple[tuple[str, Callable[[], bytes]], ...] = ()   # earlier good deliveries

    @property
    def file_name(self) -> str:
        return self.name or f"{self.id}.{ {'fixed_width': 'txt'}.get(self.fmt, self.fmt)}"

    def definition(self) -> dict:
        out = {**BASE, "format": self.fmt, **self.defn}
        if self.fmt == "fixed_width":
            out.setdefault("fixed_width", LAYOUT)
        return out


def fails(id, fmt, build, rule, line=None, **kw) -> Case:
    return Case(id, fmt, build, rule=rule, line=line, **kw)


def ok(id, fmt, build, kept, quarantined=None, **kw) -> Case:
    return Case(id, fmt, build, kept=kept, quarantined=quarantined or {}, **kw)


def _b(text: str, encoding: str = "utf-8") -> Callable[[], bytes]:
    return lambda: text.encode(encoding)


# -- builders ---------------------------------------------------------------------------

def gzip_of_newlines(megabytes: int = 200) -> bytes:
    """~1000x: a few hundred KB that expand to `megabytes` of blank lines."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write((HEADER + "\n" + SECRET_ROW + "\n").encode())
        chunk = b"\n" * (1 << 20)
        for _ in range(megabytes):
            gz.write(chunk)
    return out.getvalue()


def csv_rows(n: int, start: int = 10) -> str:
    return "".join(f"{i},F{i},L{i},2000-01-01,{i:03d}-00-0000\n" for i in range(start, start + n))


def xlsx(rows: list[list], sheet: str = "data", merge: str | None = None,
         extra_sheets: tuple[str, ...] = ()) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    ws.title = sheet
    for r in rows:
        ws.append(r)
    if merge:
        ws.merge_cells(merge)
    for name in extra_sheets:
        book.create_sheet(name)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def rezip(data: bytes, edit: Callable[[str, bytes], bytes],
          add: dict[str, bytes] | None = None) -> bytes:
    """Rewrite the parts of a zip (an xlsx) through `edit(name, bytes)`."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info.filename)))
        for name, body in (add or {}).items():
            dst.writestr(name, body)
    return out.getvalue()


GOOD_XLSX_ROWS = [COLUMNS, ["1", "Ann", "Lee", "2001-02-03", "111-22-3333"],
                  ["9", SECRET_FIRST, SECRET_LAST, SECRET_DOB, SECRET_SSN]]


def xlsx_formula_without_value() -> bytes:
    # openpyxl writes formulas without a cached value, as a script-generated workbook does.
    return xlsx(GOOD_XLSX_ROWS + [["3", "Cy", "=UPPER(B2)", SECRET_DOB, SECRET_SSN]])


def xlsx_merged() -> bytes:
    return xlsx(GOOD_XLSX_ROWS + [["4", "Di", "Oz", SECRET_DOB, "x"], ["5", "Ed", None, None,
                                                                      None]],
                merge="C4:C5")


SST = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="http://schemas.'
       b'openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>%s</t>'
       b'</si></sst>')


def xlsx_shared_string(text: bytes) -> bytes:
    """A workbook whose cell B3 (the planted first name) is shared string 0 = `text`."""
    import re

    def edit(name: str, body: bytes) -> bytes:
        if name.startswith("xl/worksheets/"):
            return re.sub(rb'<c r="B3" t="inlineStr"><is><t>[^<]*</t></is></c>',
                          b'<c r="B3" t="s"><v>0</v></c>', body)
        if name == "[Content_Types].xml":
            return body.replace(b"</Types>", b'<Override PartName="/xl/sharedStrings.xml" '
                                b'ContentType="application/vnd.openxmlformats-officedocument.'
                                b'spreadsheetml.sharedStrings+xml"/></Types>')
        if name == "xl/_rels/workbook.xml.rels":
            return body.replace(b"</Relationships>", b'<Relationship Id="rIdSS" Type="http://'
                                b'schemas.openxmlformats.org/officeDocument/2006/relationships'
                                b'/sharedStrings" Target="sharedStrings.xml"/></Relationships>')
        return body
    return rezip(xlsx(GOOD_XLSX_ROWS), edit, add={"xl/sharedStrings.xml": SST % text})


def xlsx_shared_strings_bomb(size: int = 24 << 20, incompressible: bool = False) -> bytes:
    """A single shared string of `size` characters: deflates ~1000x (or hardly at all)."""
    import os

    huge = os.urandom(size // 2).hex().encode() if incompressible else b"A" * size
    return xlsx_shared_string(huge + SECRET_FIRST.encode())


def xlsx_huge_cell() -> bytes:
    """A 200,000-character cell (openpyxl itself cuts what it writes at 32,767)."""
    return xlsx_shared_string(b"E" * 200_000 + SECRET_FIRST.encode())


def xlsx_billion_laughs() -> bytes:
    """Entity expansion in the shared strings part (a few KB that expand to gigabytes)."""
    dtd = b'<!DOCTYPE sst [<!ENTITY a "%s">' % (SECRET_SSN.encode() * 10)
    for i in range(1, 10):
        this, prev = chr(97 + i).encode(), chr(96 + i).encode()
        dtd += b'<!ENTITY %s "%s">' % (this, b"&%s;" % prev * 10)
    body = SST.replace(b"?>\n", b"?>\n" + dtd + b"]>\n") % b"&j;"
    return rezip(xlsx_shared_string(b"x"),
                 lambda name, part: body if name == "xl/sharedStrings.xml" else part)


def xlsx_malformed_sheet() -> bytes:
    def edit(name: str, body: bytes) -> bytes:
        if name.startswith("xl/worksheets/"):
            return body.replace(b"</row><row", b"</row><rowx", 1)
        return body
    return rezip(xlsx(GOOD_XLSX_ROWS), edit)


def xlsx_lying_dimension() -> bytes:
    """The sheet claims the whole grid (A1:XFD1048576); a reader trusting it pads every row
    to 16,384 cells and walks a million rows."""
    def edit(name: str, body: bytes) -> bytes:
        if name.startswith("xl/worksheets/"):
            import re

            return re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:XFD1048576"/>',
                          body)
        return body
    return rezip(xlsx(GOOD_XLSX_ROWS), edit)


def xlsx_far_row() -> bytes:
    """A last cell at row 1,048,576: a million absent rows, which are not records."""
    def edit(name: str, body: bytes) -> bytes:
        if name.startswith("xl/worksheets/"):
            return body.replace(b"</sheetData>", b'<row r="1048576"><c r="A1048576" '
                                b't="inlineStr"><is><t>7</t></is></c><c r="C1048576" '
                                b't="inlineStr"><is><t>Far</t></is></c></row></sheetData>')
        return body
    return rezip(xlsx(GOOD_XLSX_ROWS), edit)


def parquet(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def pq_table(**cols):
    import pyarrow as pa

    return pa.table(cols)


def pa_array(values: list, type_name: str):
    import pyarrow as pa

    return pa.array(values, getattr(pa, type_name)())


def pq_good() -> bytes:
    return parquet(pq_table(id=["1", "9"], first_name=["Ann", SECRET_FIRST],
                            last_name=["Lee", SECRET_LAST], dob=["2001-02-03", SECRET_DOB],
                            ssn=["1", SECRET_SSN]))


def pq_nested_list() -> bytes:
    import pyarrow as pa

    return parquet(pa.table({"id": ["1", "9"], "last_name": ["Lee", SECRET_LAST],
                             "first_name": pa.array([["Ann", "B"], [SECRET_FIRST]])}))


def pq_struct() -> bytes:
    import pyarrow as pa

    return parquet(pa.table({"id": ["1"], "last_name": ["Lee"],
                             "dob": pa.array([{"y": 1911, "s": SECRET_SSN}])}))


def pq_dob_as_int() -> bytes:
    import pyarrow as pa

    return parquet(pa.table({"id": ["2"], "last_name": [SECRET_LAST],
                             "dob": pa.array([19111111], pa.int64())}))


def pq_score(kind: str) -> bytes:
    import pyarrow as pa

    values = {"int": pa.array([5, 6], pa.int64()), "float": pa.array([1.5, 2.5]),
              "text": pa.array([SECRET_SSN, SECRET_FIRST])}[kind]
    return parquet(pa.table({"id": ["1", "9"], "last_name": ["Lee", SECRET_LAST],
                             "score": values}))


def pq_control() -> bytes:
    return parquet(pq_table(id=["1", "9", "3"], last_name=["Lee", SECRET_LAST + "\x00",
                                                           "Ng"]))


def utf16_csv() -> bytes:
    return CSV.encode("utf-16")


def fixed(rows: list[tuple]) -> str:
    out = []
    for r in rows:
        line = "".join(str(v).ljust(c["width"])[: c["width"]] for v, c in zip(r, LAYOUT))
        out.append(line.rstrip())
    return "\n".join(out) + "\n"


FW_GOOD = [("001", "Ann", "Lee", "20010203", "111-22-3333"),
           ("009", SECRET_FIRST, SECRET_LAST, SECRET_DOB, SECRET_SSN)]


def jsonl(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


J1 = {"id": "1", "first_name": "Ann", "last_name": "Lee", "dob": "2001-02-03"}
JS = {"id": "9", "first_name": SECRET_FIRST, "last_name": SECRET_LAST, "dob": SECRET_DOB,
      "ssn": SECRET_SSN}


# -- the corpus -------------------------------------------------------------------------

CASES: list[Case] = [
    # BOM, line endings
    ok("csv_utf8_bom", "csv", lambda: b"\xef\xbb\xbf" + CSV.encode(), 3, kept_lines=[2, 3, 4],
       bronze={"id": ["1", "2", "9"]}),
    ok("csv_utf8_bom_gzip", "csv", lambda: gzip.compress(b"\xef\xbb\xbf" + CSV.encode()), 3,
       name="csv_utf8_bom_gzip.csv.gz"),
    ok("csv_bom_headerless_declared", "csv", lambda: b"\xef\xbb\xbf" + "\n".join(ROWS).encode(),
       3, defn={"csv": {"header": False}}, bronze={"id": ["1", "2", "9"]}),
    ok("csv_cr_only_line_endings", "csv", lambda: CSV.replace("\n", "\r").encode(), 3,
       kept_lines=[2, 3, 4], bronze={"last_name": ["Lee", "Ng", SECRET_LAST]}),
    ok("csv_crlf_with_stray_cr", "csv",
       _b(HEADER + "\r\n" + ROWS[0] + "\r\n2,Bo\rNg,1999,x\r\n" + SECRET_ROW + "\r\n"), 2,
       {"ragged_row": [3, 4]}, kept_lines=[2, 5]),
    # NUL and control characters: the row is quarantined, named by its line
    ok("csv_nul_byte", "csv", _b(HEADER + "\n" + ROWS[0] + "\n2,B\x00o,Ng,x,y\n" + SECRET_ROW
                                 + "\n"), 2, {"control_character": [3]}),
    ok("csv_nul_in_secret_row", "csv", _b(HEADER + "\n" + ROWS[0] + "\n" + SECRET_ROW + "\x00\n"),
       1, {"control_character": [3]}),
    ok("csv_escape_and_formfeed", "csv", _b(HEADER + "\n" + ROWS[0] + "\n2,\x1b[31mBo,Ng,x,y\n"
                                            "3,Cy,\x0c,x,y\n" + SECRET_ROW + "\n"),
       2, {"control_character": [3, 4]}),
    fails("csv_mostly_nul_binary", "csv", lambda: HEADER.encode() + b"\n" + b"\x00" * 4000,
          "wrong_format"),
    fails("csv_nul_with_row_errors_fail", "csv",
          _b(HEADER + "\n" + ROWS[0] + "\n2,B\x00o,Ng,x,y\n" + SECRET_ROW + "\n"),
          "control_character", line=3, defn={"row_errors": "fail"}),
    fails("csv_header_with_nul", "csv", _b("id,first_name,last\x00name,dob,ssn\n" + ROWS[0]
                                          + "\n"), "invalid_header", line=1),
    # quotes spanning lines
    fails("csv_quoted_newline", "csv",
          _b(HEADER + "\n" + ROWS[0] + '\n2,"Bo\nBo",Ng,x,y\n' + SECRET_ROW + "\n"),
          "newline_in_value", line=3),
    ok("csv_quoted_newline_multiline_declared", "csv",
       _b(HEADER + "\n" + ROWS[0] + '\n2,"Bo\r\nBo",Ng,x,y\n\n' + SECRET_ROW + "\n4,A,B\n"), 3,
       {"ragged_row": [7]}, defn={"csv": {"multiline_values": True}}, kept_lines=[2, 3, 6]),
    fails("csv_unbalanced_quote", "csv",
          _b(HEADER + "\n" + ROWS[0] + '\n2,"Bo,Ng,x,y\n' + SECRET_ROW + "\n3,Cy,Oz,x,y\n"),
          "newline_in_value", line=3),
    fails("csv_unbalanced_quote_same_width", "csv",
          _b(HEADER + "\n" + ROWS[0] + '\n2,"Bo,Ng\n' + SECRET_ROW + '",x\n3,Cy,Oz,x,y\n'),
          "newline_in_value", line=3),
    fails("csv_quoted_newline_then_unbalanced_quote", "csv",
          _b(HEADER + "\n" + ROWS[0] + '\n2,"Bo\nBo",Ng,x,y\n3,Cy,Oz,x,y\n4,"Di,Ng\n'
             + SECRET_ROW + "\n"), "newline_in_value", line=3),
    fails("csv_unbalanced_quote_across_blocks", "csv",
          lambda: (HEADER + "\n" + csv_rows(5) + '2,"Bo,Ng,x,y\n' + SECRET_ROW + "\n"
                   + csv_rows(40_000, 100)).encode(), "newline_in_value", line=7),
    fails("csv_unbalanced_quote_multiline_source", "csv",
          lambda: (HEADER + "\n" + csv_rows(5) + '2,"Bo,Ng,x,y\n' + SECRET_ROW + "\n"
                   + csv_rows(40_000, 100)).encode(), "record_too_long", line=7,
          defn={"csv": {"multiline_values": True}}),
    ok("csv_multiline_unbalanced_quote_small", "csv",
       _b(HEADER + "\n" + ROWS[0] + '\n2,"Bo,Ng,x,y\n' + SECRET_ROW + "\n"), 1,
       {"ragged_row": [3]}, defn={"csv": {"multiline_values": True}}),
    # headers that are data, or carry delivered text
    fails("csv_headerless", "csv", _b(SECRET_ROW + "\n" + "\n".join(ROWS[:2]) + "\n"),
          "missing_header", line=1),
    fails("csv_headerless_nothing_required", "csv", _b(SECRET_ROW + "\n" + ROWS[0] + "\n"),
          "missing_header", line=1, defn={"required_columns": []}),
    fails("csv_unexpected_column_fail", "csv",
          _b(HEADER + f",{SECRET_FIRST}\n" + ROWS[0] + ",x\n"), "unexpected_columns", line=1,
          defn={"extra_columns": "fail"}),
    fails("csv_duplicate_undeclared_header", "csv",
          _b(HEADER + f",{SECRET_SSN},{SECRET_SSN}\n" + ROWS[0] + ",x,y\n"),
          "duplicate_header", line=1),
    fails("csv_header_case_clash", "csv", _b(HEADER + ",Last_Name\n" + ROWS[0] + ",x\n"),
          "column_name_clash", line=1),
    fails("csv_header_reserved_name", "csv", _b(HEADER + ",_run id\n" + ROWS[0] + ",x\n"),
          "column_name_clash", line=1),
    fails("csv_missing_required", "csv", _b(f"id,first_name,{SECRET_LAST}\n1,Ann,Lee\n"),
          "missing_required_columns", line=1),
    # compression
    fails("csv_gzip_bomb_of_newlines", "csv", gzip_of_newlines, "decompression_limit",
          name="csv_gzip_bomb_of_newlines.csv.gz"),
    fails("csv_gzip_past_declared_size", "csv",
          lambda: gzip.compress((HEADER + "\n" + csv_rows(3000)).encode()),
          "decompression_limit", name="csv_gzip_past_declared_size.csv.gz",
          defn={"limits": {"max_expanded_bytes": 20_000}}),
    fails("csv_truncated_gzip", "csv",
          lambda: gzip.compress((CSV + csv_rows(20_000)).encode())[:30_000],
          "corrupt_compression", name="csv_truncated_gzip.csv.gz"),
    fails("csv_gzip_that_is_not_gzip", "csv", _b(CSV), "corrupt_compression",
          name="csv_gzip_that_is_not_gzip.csv.gz"),
    ok("csv_gzip_multi_member", "csv", lambda: gzip.compress((HEADER + "\n" + ROWS[0] + "\n")
                                                          .encode())
       + gzip.compress(("\n".join(ROWS[1:]) + "\n").encode()), 3,
       name="csv_gzip_multi_member.csv.gz"),
    fails("csv_gzip_trailing_garbage", "csv", lambda: gzip.compress(CSV.encode()) + b"garbage",
          "corrupt_compression", name="csv_gzip_trailing_garbage.csv.gz"),
    fails("csv_gzip_not_named_gz", "csv", lambda: gzip.compress(CSV.encode()), "wrong_format"),
    # empty and blank
    fails("csv_empty_file", "csv", lambda: b"", "empty_file"),
    ok("csv_header_only", "csv", _b(HEADER + "\n"), 0),
    fails("csv_only_blank_lines", "csv", _b("\n\r\n  \n\n"), "empty_file"),
    fails("csv_blank_first_line", "csv", _b("\n" + CSV), "missing_header", line=1),
    ok("csv_valueless_lines", "csv", _b(HEADER + "\n" + ROWS[0] + "\n,,,,\n \t\n\"\",\" \",,,\n"
                                        + SECRET_ROW + "\n"), 2, kept_lines=[2, 6]),
    # encodings
    fails("csv_wrong_encoding_midway", "csv",
          lambda: (CSV + csv_rows(50)).encode() + "60,Zoë,Peña,x,y\n".encode("cp1252"),
          "wrong_encoding", line=55),
    fails("csv_invalid_utf8_sequence", "csv",
          lambda: (CSV.encode() + b"4,A\xc3\x28B,C,x,y\n"), "wrong_encoding", line=5),
    fails("csv_utf16_declared_utf8", "csv", utf16_csv, "wrong_encoding", line=1),
    ok("csv_utf16_declared_utf16", "csv", utf16_csv, 3, defn={"encoding": "utf-16"}),
    # rows
    ok("csv_ragged_rows", "csv", _b(HEADER + "\n" + ROWS[0] + "\n2,Bo\n" + SECRET_ROW
                                    + ",extra\n3,Cy,Oz,x,y\n"), 2, {"ragged_row": [3, 4]}),
    fails("csv_very_long_line", "csv", lambda: (CSV + "4," + "x" * (2 << 20) + "\n").encode(),
          "line_too_long", line=5),
    fails("csv_no_line_breaks_at_all", "csv", lambda: (HEADER + ",") .encode() * 200_000,
          "line_too_long", line=1),
    ok("csv_value_too_long", "csv", _b(HEADER + "\n" + ROWS[0] + "\n2," + "B" * 40_000
                                       + ",Ng,x,y\n" + SECRET_ROW + "\n"),
       2, {"value_too_long": [3]}),
    # not the declared format
    fails("csv_that_is_xlsx", "csv", lambda: xlsx(GOOD_XLSX_ROWS), "wrong_format"),
    fails("csv_that_is_parquet", "csv", pq_good, "wrong_format"),
    # JSON lines
    ok("jsonl_utf8_bom", "jsonl", lambda: b"\xef\xbb\xbf" + jsonl(J1, JS).encode(), 2),
    ok("jsonl_first_record_omits_optional_keys", "jsonl",
       _b(jsonl({"id": "1", "last_name": "Lee"}, JS, J1)), 3,
       bronze={"ssn": [None, SECRET_SSN, None]}),
    ok("jsonl_duplicate_key", "jsonl",
       _b(jsonl(J1, '{"id": "9", "last_name": "Lee", "last_name": "%s"}' % SECRET_LAST, JS)),
       2, {"duplicate_key": [2]}),
    ok("jsonl_duplicate_undeclared_key", "jsonl",
       _b(jsonl(J1, '{"id": "9", "last_name": "Ng", "%s": 1, "%s": 2}' % (SECRET_SSN,
                                                                             SECRET_SSN))),
       1, {"duplicate_key": [2]}),
    fails("jsonl_undeclared_key_fail", "jsonl", _b(jsonl(J1, {**JS, SECRET_FIRST: "x"})),
          "unexpected_columns", line=2, defn={"extra_columns": "fail"}),
    ok("jsonl_undeclared_key_later", "jsonl", _b(jsonl(J1, {**JS, SECRET_FIRST: "x"}, J1)), 2,
       {"unexpected_key": [2]}),
    ok("jsonl_escaped_nul", "jsonl", _b(jsonl(J1, {**JS, "last_name": SECRET_LAST + "\x00"})),
       1, {"control_character": [2]}),
    ok("jsonl_raw_control_character", "jsonl",
       _b(jsonl(J1) + '{"id": "9", "last_name": "\x1b' + SECRET_LAST + '"}\n'), 1,
       {"control_character": [2]}),
    ok("jsonl_deep_nesting", "jsonl", _b(jsonl(J1) + '{"id": "9", "dob": ' + "[" * 100_000
                                         + "]" * 100_000 + "}\n" + jsonl(JS)), 2,
       {"invalid_json": [2]}),
    ok("jsonl_invalid_line", "jsonl", _b(jsonl(J1) + '{"id": "9", "last_name": "%s"\n'
                                         % SECRET_LAST + jsonl(JS)), 2, {"invalid_json": [2]}),
    ok("jsonl_cr_only", "jsonl", _b(jsonl(J1, JS).replace("\n", "\r")), 2, kept_lines=[1, 2]),
    fails("jsonl_only_blank_lines", "jsonl", _b("\n \n\r\n"), "empty_file"),
    ok("jsonl_value_too_long", "jsonl", _b(jsonl(J1, {**JS, "first_name": "F" * 40_000}, J1)),
       2, {"value_too_long": [2]}),
    fails("jsonl_that_is_csv", "jsonl", _b(CSV), "wrong_format", line=1),
    ok("jsonl_nested_kept_as_text", "jsonl",
       _b(jsonl(J1).replace('"2001-02-03"', '{"y": 2001, "z": [1.50, "2"]}') + jsonl(JS)), 2,
       bronze={"dob": ['{"y":2001,"z":[1.50,"2"]}', SECRET_DOB]}),
    # fixed width
    ok("fixed_width_tab", "fixed_width", _b(fixed(FW_GOOD) + "002\tBo  Ng        19991231\n"), 2,
       {"tab_in_fixed_width": [3]}),
    ok("fixed_width_cut_short", "fixed_width", _b(fixed(FW_GOOD) + "003Cy\n"), 2,
       {"short_line": [3]}),
    ok("fixed_width_trailing_padding", "fixed_width",
       _b(fixed(FW_GOOD).replace("\n", "     \n", 1)), 2,
       bronze={"ssn": ["111-22-3333", SECRET_SSN]}),
    ok("fixed_width_cr_only", "fixed_width", lambda: fixed(FW_GOOD).replace("\n", "\r").encode(),
       2, kept_lines=[1, 2], bronze={"ssn": ["111-22-3333", SECRET_SSN]}),
    ok("fixed_width_bom", "fixed_width", lambda: b"\xef\xbb\xbf" + fixed(FW_GOOD).encode(), 2,
       bronze={"id": ["001", "009"], "first_name": ["Ann", SECRET_FIRST]}),
    ok("fixed_width_nul", "fixed_width", _b(fixed(FW_GOOD) + "004Di\x00       Oz\n"), 2,
       {"control_character": [3]}),
    ok("fixed_width_too_long", "fixed_width", _b(fixed(FW_GOOD) + "005" + "x" * 60 + "\n"), 2,
       {"ragged_row": [3]}),
    # Excel
    ok("xlsx_formula_without_value", "xlsx", xlsx_formula_without_value, 2,
       {"formula_without_value": [4]}),
    ok("xlsx_merged_cells", "xlsx", xlsx_merged, 2, {"merged_cells": [4, 5]}),
    fails("xlsx_shared_strings_bomb", "xlsx", xlsx_shared_strings_bomb, "decompression_limit"),
    fails("xlsx_shared_strings_past_declared_limit", "xlsx",
          lambda: xlsx_shared_strings_bomb(2 << 20, incompressible=True), "decompression_limit",
          defn={"limits": {"max_shared_strings_bytes": 1 << 20}}),
    ok("xlsx_huge_cell", "xlsx", xlsx_huge_cell, 1, {"value_too_long": [3]}),
    ok("xlsx_shared_string_ok", "xlsx", lambda: xlsx_shared_string(SECRET_FIRST.encode()), 2,
       bronze={"first_name": ["Ann", SECRET_FIRST]}),
    ok("xlsx_lying_dimension", "xlsx", xlsx_lying_dimension, 2),
    ok("xlsx_far_last_row", "xlsx", xlsx_far_row, 3, kept_lines=[2, 3, 1_048_576]),
    fails("xlsx_billion_laughs", "xlsx", xlsx_billion_laughs, "wrong_format"),
    fails("xlsx_malformed_sheet_xml", "xlsx", xlsx_malformed_sheet, "unreadable_file"),
    fails("xlsx_headerless", "xlsx", lambda: xlsx(GOOD_XLSX_ROWS[1:]), "missing_header",
          line=1),
    fails("xlsx_that_is_csv", "xlsx", _b(CSV), "wrong_format"),
    fails("xlsx_truncated", "xlsx", lambda: xlsx(GOOD_XLSX_ROWS)[:2000], "wrong_format"),
    fails("xlsx_missing_sheet", "xlsx", lambda: xlsx(GOOD_XLSX_ROWS, sheet=SECRET_LAST),
          "missing_sheet", defn={"sheet": "data"}),
    # Parquet
    fails("parquet_nested_list", "parquet", pq_nested_list, "nested_type"),
    fails("parquet_struct", "parquet", pq_struct, "nested_type"),
    ok("parquet_nested_declared", "parquet", pq_nested_list, 2,
       defn={"allow_nested_types": True}),
    fails("parquet_type_conflict_with_earlier", "parquet", pq_dob_as_int, "schema_conflict",
          before=(("earlier.parquet", pq_good),)),
    fails("parquet_float_into_int_column", "parquet", lambda: pq_score("float"),
          "schema_conflict", before=(("earlier.parquet", lambda: pq_score("int")),),
          defn={"columns": COLUMNS + ["score"]}),
    fails("parquet_text_into_int_column", "parquet", lambda: pq_score("text"),
          "schema_conflict", before=(("earlier.parquet", lambda: pq_score("int")),),
          defn={"columns": COLUMNS + ["score"]}),
    ok("parquet_int32_into_int64_column", "parquet",
       lambda: parquet(pq_table(id=["3"], last_name=["Ng"], score=pa_array([7], "int32"))), 1,
       before=(("earlier.parquet", lambda: pq_score("int")),),
       defn={"columns": COLUMNS + ["score"]}),
    ok("parquet_control_character", "parquet", pq_control, 2, {"control_character": [2]}),
    fails("parquet_that_is_csv", "parquet", _b(CSV), "wrong_format"),
    fails("parquet_truncated", "parquet", lambda: pq_good()[:-40], "wrong_format"),
]
