"""Streaming readers, one per delivered format. Each yields Arrow record batches of the
delivered columns (text formats as strings, so nothing is lost to parsing) with the
`_row_number` of every row, and collects row-level rejects. Memory is bounded by the batch
size, never by the file size.

`_row_number` says where a record is in the delivered file: the physical line for
line-oriented text (CSV, JSON lines, fixed width), the sheet row for Excel, the 1-based row
for Parquet. Blank lines are not records."""

from __future__ import annotations

import codecs
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from ids_lakehouse.ingest.errors import IngestError, Reject
from ids_lakehouse.sources import SourceDefinition

BATCH_ROWS = 65_536
PARQUET_BATCH_ROWS = 262_144  # Arrow-native batches: larger batches, less per-batch overhead
SNIFF_BYTES = 1 << 20
Batch = tuple[pa.RecordBatch, np.ndarray]


class Reader:
    """Base: opens the file, checks the header against the definition, counts records."""

    def __init__(self, defn: SourceDefinition, path: Path, name: str):
        self.defn, self.path, self.name = defn, Path(path), name
        self.rejects: list[Reject] = []
        self.records = 0        # data records seen: ingested + rejected
        self.blank_lines = 0
        self.columns: list[str] = []
        self.missing_columns: list[str] = []
        self.extra_columns: list[str] = []
        self._schema: pa.Schema | None = None

    # -- shared helpers ---------------------------------------------------------------
    def fail(self, rule: str, reason: str, **kw) -> IngestError:
        return IngestError(self.defn.source, self.name, rule, reason, **kw)

    def compressed(self) -> bool:
        c = self.defn.compression
        return c == "gzip" or (c == "infer" and self.path.suffix == ".gz")

    def open_binary(self):
        return gzip.open(self.path, "rb") if self.compressed() else open(self.path, "rb")

    def head(self, n: int = SNIFF_BYTES) -> bytes:
        try:
            with self.open_binary() as fh:
                return fh.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise self.fail("corrupt_compression",
                            f"cannot decompress: {type(exc).__name__}") from None

    def accept_header(self, header: list[str], line: int | None = 1) -> None:
        seen, dupes = set(), []
        for col in header:
            if col in seen and col not in dupes:
                dupes.append(col)
            seen.add(col)
        if dupes:
            raise self.fail("duplicate_header", f"column names appear more than once: {dupes}",
                            line=line)
        missing_required = [c for c in self.defn.required_columns if c not in seen]
        if missing_required:
            raise self.fail("missing_required_columns",
                            f"required columns are missing: {missing_required}", line=line,
                            expected=str(self.defn.required_columns), found=str(header))
        self.missing_columns = [c for c in self.defn.columns if c not in seen]
        self.extra_columns = [c for c in header if c not in self.defn.columns]
        if self.extra_columns and self.defn.extra_columns == "fail":
            raise self.fail("unexpected_columns",
                            f"columns not in the source definition: {self.extra_columns}",
                            line=line, expected=str(self.defn.columns), found=str(header))
        self.columns = header

    def reject(self, row: int, rule: str, reason: str, raw: str | None) -> None:
        if self.defn.row_errors == "fail":
            raise self.fail(rule, reason + " (row_errors: fail)", line=row)
        self.rejects.append(Reject(row, rule, reason, raw))

    def string_schema(self) -> pa.Schema:
        return pa.schema([(c, pa.string()) for c in self.columns])

    def sniff_text(self) -> None:
        """Catch a file that is not text of the declared encoding before parsing it."""
        head = self.head()
        if not head:
            raise self.fail("empty_file", "the file is empty (0 bytes)")
        for magic, what in ((b"PAR1", "a Parquet file"), (b"PK\x03\x04", "a zip/xlsx file"),
                            (b"\x1f\x8b", "gzip-compressed data")):
            if head.startswith(magic):
                raise self.fail("wrong_format", f"declared {self.defn.format} but the file is "
                                f"{what}")
        if b"\x00" in head and codecs.lookup(self.defn.encoding).name not in ("utf-16",
                                                                               "utf-32"):
            raise self.fail("wrong_format", f"declared {self.defn.format} text but the file "
                            "contains NUL bytes (binary data or a UTF-16 file)")
        single_byte = codecs.lookup(self.defn.encoding).name in (
            "cp1252", "latin-1", "iso8859-1", "iso8859-15", "ascii")
        if single_byte and _looks_utf8(head):
            line = head[: _first_multibyte(head)].count(b"\n") + 1
            raise self.fail("wrong_encoding", f"the file looks UTF-8 but the source declares "
                            f"{self.defn.encoding}", line=line)

    def decode_error(self, exc: UnicodeDecodeError, line: int) -> IngestError:
        return self.fail("wrong_encoding", f"bytes that are not valid {self.defn.encoding} "
                         f"({exc.reason})", line=line)

    @property
    def schema(self) -> pa.Schema:
        return self.prepared()

    def prepared(self) -> pa.Schema:
        """Check the file and its header (once); returns the delivered columns."""
        if self._schema is None:
            self._schema = self.prepare()
        return self._schema

    def prepare(self) -> pa.Schema:
        raise NotImplementedError

    def batches(self) -> Iterator[Batch]:
        raise NotImplementedError


def _looks_utf8(data: bytes) -> bool:
    """True when `data` has multi-byte UTF-8 sequences and decodes as UTF-8."""
    if not any(b >= 0x80 for b in data):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut at the end of the sample is not evidence against UTF-8.
        return exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"
    return True


def _first_multibyte(data: bytes) -> int:
    return next(i for i, b in enumerate(data) if b >= 0x80)


class _LineReader(Reader):
    """Shared by JSON lines and fixed width: decode line by line, blank lines skipped."""

    def text_lines(self) -> Iterator[tuple[int, str]]:
        line_no = 0
        try:
            with self.open_binary() as raw:
                text = io.TextIOWrapper(raw, encoding=self.defn.encoding, errors="strict",
                                        newline="")
                for line_no, line in enumerate(text, start=1):
                    line = line.rstrip("\r\n")
                    if line.strip():
                        yield line_no, line
                    else:
                        self.blank_lines += 1
        except UnicodeDecodeError as exc:
            raise self.decode_error(exc, line_no + 1) from None
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise self.fail("corrupt_compression", f"compressed file is truncated or corrupt "
                            f"({type(exc).__name__})", line=line_no + 1) from None

    def emit(self, rows: list[list[str | None]], numbers: list[int]) -> Batch:
        return _string_batch(self.schema, rows, numbers)


class JsonLinesReader(_LineReader):
    """One JSON object per line. The keys of the first object are the header; numbers keep
    their delivered text; nested values are kept as JSON text."""

    def prepare(self) -> pa.Schema:
        self.sniff_text()
        if not self.head().lstrip().startswith(b"{"):
            raise self.fail("wrong_format", "declared jsonl but the first line is not a JSON "
                            "object", line=1)
        for line_no, line in self.text_lines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                self.accept_header(list(obj), line=line_no)
                self.blank_lines = 0
                return self.string_schema()
        raise self.fail("wrong_format", "no JSON object found in the file")

    def _parse(self, line_no: int, line: str) -> dict | None:
        try:
            obj = json.loads(line, parse_float=str, parse_int=str, parse_constant=str)
        except json.JSONDecodeError as exc:
            self.reject(line_no, "invalid_json", f"not valid JSON: {exc.msg} at column "
                        f"{exc.colno}", line)
            return None
        if not isinstance(obj, dict):
            self.reject(line_no, "invalid_json", "the line is not a JSON object", line)
            return None
        return obj

    def batches(self) -> Iterator[Batch]:
        index = {c: i for i, c in enumerate(self.schema.names)}
        rows, numbers = [], []
        for line_no, line in self.text_lines():
            self.records += 1
            obj = self._parse(line_no, line)
            if obj is None:
                continue
            unknown = [k for k in obj if k not in index]
            if unknown:
                self.reject(line_no, "unexpected_key", f"keys not in the file's header: "
                            f"{unknown}", line)
                continue
            row: list[str | None] = [None] * len(index)
            for k, v in obj.items():
                row[index[k]] = _json_text(v)
            rows.append(row)
            numbers.append(line_no)
            if len(rows) >= BATCH_ROWS:
                yield self.emit(rows, numbers)
                rows, numbers = [], []
        yield self.emit(rows, numbers)


def _string_batch(schema: pa.Schema, rows: list[list[str | None]], numbers: list[int]
                  ) -> Batch:
    cols = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array(c, pa.string()) for c in cols]
    return (pa.RecordBatch.from_arrays(arrays, schema=schema),
            np.asarray(numbers, dtype=np.int64))


def _json_text(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


class FixedWidthReader(_LineReader):
    """Columns cut at the declared positions; padding on the right is not data."""

    def prepare(self) -> pa.Schema:
        self.sniff_text()
        self.accept_header([c.name for c in self.defn.fixed_width or []], line=None)
        return self.string_schema()

    def batches(self) -> Iterator[Batch]:
        layout = self.defn.fixed_width or []
        self.prepared()
        cuts = [(c.start - 1, c.start - 1 + c.width) for c in layout]
        total = max(end for _, end in cuts)
        rows, numbers = [], []
        for line_no, line in self.text_lines():
            self.records += 1
            if len(line) > total:
                self.reject(line_no, "ragged_row", f"line is {len(line)} characters; the "
                            f"layout has {total}", line)
                continue
            rows.append([line[a:b].rstrip() or None for a, b in cuts])
            numbers.append(line_no)
            if len(rows) >= BATCH_ROWS:
                yield self.emit(rows, numbers)
                rows, numbers = [], []
        yield self.emit(rows, numbers)


class XlsxReader(Reader):
    """One sheet of a workbook, read in openpyxl's streaming mode. Cells become text:
    dates as ISO 8601, numbers as written by Python."""

    def prepare(self) -> pa.Schema:
        import zipfile

        from openpyxl import load_workbook

        if self.path.stat().st_size == 0:
            raise self.fail("empty_file", "the file is empty (0 bytes)")
        try:
            self._book = load_workbook(self.path, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise self.fail("wrong_format", f"not a readable xlsx workbook "
                            f"({type(exc).__name__})") from None
        name = self.defn.sheet or self._book.sheetnames[0]
        if name not in self._book.sheetnames:
            raise self.fail("missing_sheet", f"sheet {name!r} not found",
                            expected=name, found=str(self._book.sheetnames))
        self._rows = self._book[name].iter_rows(values_only=True)
        header = list(next(self._rows, None) or [])
        while header and header[-1] is None:
            header.pop()
        if not header:
            raise self.fail("empty_file", f"sheet {name!r} has no header row")
        self.accept_header([str(h) if h is not None else "" for h in header], line=1)
        return self.string_schema()

    def batches(self) -> Iterator[Batch]:
        width = len(self.schema)
        rows, numbers = [], []
        try:
            for row_no, values in enumerate(self._rows, start=2):
                values = list(values)
                while values and values[-1] is None:
                    values.pop()
                if not values:
                    self.blank_lines += 1
                    continue
                self.records += 1
                cells = [_cell_text(v) for v in values]
                if len(cells) > width:
                    self.reject(row_no, "ragged_row", f"row has {len(cells)} cells; the "
                                f"header has {width}", json.dumps(cells, ensure_ascii=False))
                    continue
                rows.append(cells + [None] * (width - len(cells)))
                numbers.append(row_no)
                if len(rows) >= BATCH_ROWS:
                    yield _string_batch(self.schema, rows, numbers)
                    rows, numbers = [], []
            yield _string_batch(self.schema, rows, numbers)
        finally:
            self._book.close()


def _cell_text(v) -> str | None:
    import datetime as dt

    if v is None:
        return None
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    return str(v)


class ParquetReader(Reader):
    """Parquet is typed: its columns keep their delivered types."""

    def _file(self):
        import pyarrow.parquet as pq

        if self.path.stat().st_size == 0:
            raise self.fail("empty_file", "the file is empty (0 bytes)")
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail("wrong_format", f"not a readable Parquet file "
                            f"({type(exc).__name__})") from None

    def prepare(self) -> pa.Schema:
        self._pf = self._file()
        self.accept_header(self._pf.schema_arrow.names, line=None)
        return self._pf.schema_arrow

    def batches(self) -> Iterator[Batch]:
        self.prepared()
        pf = self._pf
        start = 1
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                self.records += batch.num_rows
                yield batch, np.arange(start, start + batch.num_rows, dtype=np.int64)
                start += batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail("corrupt_file", f"Parquet data could not be read "
                            f"({type(exc).__name__})", line=start) from None
        if start == 1:
            yield pa.RecordBatch.from_pylist([], schema=self.schema), np.empty(0, np.int64)
