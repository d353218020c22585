"""Streaming readers, one per delivered format. Each yields Arrow record batches of the
delivered columns (text formats as strings, so nothing is lost to parsing) with the
`_row_number` of every row, and collects row-level rejects. Memory is bounded by the batch
size and the source's declared `limits`, never by the file size.

`_row_number` says where a record is in the delivered file: the physical line for
line-oriented text (CSV, JSON lines, fixed width; a line ends at LF, CRLF or a lone CR), the
sheet row for Excel, the 1-based row for Parquet. Lines without any value are not records.

A hostile or broken file is handled by one of two outcomes, never a silent null, shift, cast,
merge or overwrite:

* whole-file problems raise `IngestError` (source, file, line where meaningful, rule):
  `empty_file`, `wrong_format`, `wrong_encoding`, `corrupt_compression`,
  `decompression_limit` (expanded size or expansion ratio past the declared limits),
  `line_too_long`, `missing_header`, `invalid_header`, `duplicate_header`,
  `missing_required_columns`, `unexpected_columns`, `column_name_clash`, `missing_sheet`,
  `nested_type`, `newline_in_value` (a CSV record spanning lines in a source that does not
  declare multi-line values: a quoted line break, or an unbalanced quote), `schema_conflict`;
* row problems quarantine the row with its line number, rule and reason: `ragged_row`,
  `control_character` (NUL or another C0 control other than tab in a value),
  `value_too_long`, `invalid_json`, `duplicate_key`, `unexpected_key`,
  `tab_in_fixed_width`, `short_line`, `formula_without_value`, `merged_cells`.

No message carries delivered text: messages name declared columns, positions, counts and
rules; the exceptions of the libraries underneath (csv, json, pyarrow, openpyxl, delta-rs) are
reduced to their class name."""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ids_lakehouse.ingest.errors import BronzeWriteError, IngestError, Reject
from ids_lakehouse.sources import SourceDefinition
from ids_lakehouse.storage import LakePath

if TYPE_CHECKING:
    import zipfile

    import pyarrow.parquet as pq
    from _typeshed import WriteableBuffer

BATCH_ROWS = 65_536
PARQUET_BATCH_ROWS = 262_144  # Arrow-native batches: larger batches, less per-batch overhead
SNIFF_BYTES = 1 << 20
READ_BYTES = 1 << 20
RATIO_GRACE_BYTES = 256 << 10   # expansion ratio is checked once this much is expanded
XLSX_RATIO_PART_BYTES = 1 << 20  # ... and for xlsx parts larger than this
IntArray = npt.NDArray[np.int64]   # row numbers, line counts
Batch = tuple[pa.RecordBatch, IntArray]

BOM_UTF8 = codecs.BOM_UTF8
# C0 control characters other than tab, LF and CR are never data.
CONTROL_PATTERN = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]"
_CONTROL_RE = re.compile(CONTROL_PATTERN)
_NOT_CONTROL = bytes(b for b in range(256) if b in (9, 10, 13) or b >= 32)
BLANK = " \t\r\n"   # a line or value made only of these carries no value


def has_control(data: bytes) -> bool:
    """True when `data` (ASCII-compatible bytes) holds a C0 control other than tab/LF/CR."""
    return bool(data.translate(None, _NOT_CONTROL))


def ascii_compatible(encoding: str) -> bool:
    try:
        return "\x00\x01\t\n\r ,\"az".encode(encoding) == b"\x00\x01\t\n\r ,\"az"
    except (UnicodeError, LookupError):
        return False


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def count_line_breaks(data: bytes, after_cr: bool = False) -> int:
    """LF, CRLF and lone CR each end a line; `after_cr`: the previous block ended in CR."""
    n = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    if after_cr and data[:1] == b"\n":
        n -= 1
    return n


class _Stream(io.RawIOBase):
    """The delivered bytes, decompressed when the file is gzip, with the declared limits
    enforced while streaming: expanded size, expansion ratio and line length. A UTF-8 BOM is
    dropped for UTF-8 sources. Raises `IngestError` from `read`, which Arrow and io pass
    through unchanged."""

    def __init__(self, reader: Reader, checked: bool = True):
        self._reader, self._checked = reader, checked
        self._file = open(reader.path, "rb")
        self._gz = gzip.GzipFile(fileobj=self._file, mode="rb") if reader.compressed() \
            else None
        self._limits = reader.defn.limits
        self._line_limit = reader.line_limit()
        self._scan_control = reader.scan_control_bytes
        self._bom = is_utf8(reader.defn.encoding)
        self.expanded = 0        # bytes handed out (after the BOM)
        self.saw_control = not self._scan_control
        self._run = 0            # bytes since the last line break
        # CSV whose quoted values may span lines: a quote left open for more than a line's
        # worth of bytes is an unbalanced quote (the parser would buffer the rest of the
        # file as one value). Tracked by quote parity, which holds for RFC 4180 quoting.
        self._quote = reader.open_quote_byte()
        self._open_since: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: WriteableBuffer) -> int:
        with memoryview(buf) as view:
            data = self.read(len(view))
            view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(READ_BYTES):
            parts.append(chunk)
        return b"".join(parts)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        try:
            data = (self._gz or self._file).read(n)
            if self._bom and self.expanded == 0 and data[:1] == b"\xef":
                while len(data) < 3 and (more := (self._gz or self._file).read(3 - len(data))):
                    data += more
                if data.startswith(BOM_UTF8):
                    data = data[3:] or (self._gz or self._file).read(n)
        except (EOFError, zlib.error, OSError) as exc:
            line = self._reader.line_at(None) if self._checked else None
            raise self._reader.fail(
                "corrupt_compression", f"the compressed file is truncated or corrupt "
                f"({type(exc).__name__})", line=line) from None
        if not data:
            return data
        start = self.expanded
        self.expanded += len(data)
        if self._checked:
            if self._gz is not None:
                self._check_expansion()
            self._check_lines(data, start)
            if self._quote is not None:
                self._check_quotes(data, start, self._quote)
            if not self.saw_control and has_control(data):
                self.saw_control = True
        return data

    def _check_expansion(self) -> None:
        lim = self._limits
        if self.expanded > lim.max_expanded_bytes:
            raise self._reader.fail(
                "decompression_limit", f"the file expands past {lim.max_expanded_bytes:,} "
                "bytes (limits.max_expanded_bytes)")
        packed = max(self._file.tell(), 1)
        if self.expanded > RATIO_GRACE_BYTES and self.expanded > lim.max_expansion_ratio * packed:
            raise self._reader.fail(
                "decompression_limit", f"the file expands more than "
                f"{lim.max_expansion_ratio:g} times its compressed size "
                "(limits.max_expansion_ratio): a compression bomb, or not an extract")

    def _check_lines(self, data: bytes, start: int) -> None:
        limit = self._line_limit
        first = _first_break(data)
        if first < 0:
            self._run += len(data)
            if self._run > limit:
                self._too_long(start - (self._run - len(data)))
            return
        if self._run + first > limit:
            self._too_long(start - self._run)
        if len(data) - first > limit:  # an interior line may be too long
            arr = np.frombuffer(data, np.uint8)
            breaks = np.flatnonzero((arr == 10) | (arr == 13))
            gaps = np.diff(breaks) - 1
            over = np.flatnonzero(gaps > limit)
            if over.size:
                self._too_long(start + int(breaks[over[0]]) + 1)
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self._run = len(data) - last - 1
        if self._run > limit:
            self._too_long(start + last + 1)

    def _check_quotes(self, data: bytes, start: int, quote: bytes) -> None:
        n = data.count(quote)
        if n:
            # Open after this block when the parity flips from closed, or stays from open;
            # then the last quote of the block is the one that opened the value.
            still_open = (n % 2 == 1) == (self._open_since is None)
            self._open_since = start + data.rfind(quote) if still_open else None
        if self._open_since is not None and \
                start + len(data) - self._open_since > self._line_limit:
            raise self._reader.fail(
                "record_too_long", f"a quoted value stays open for more than "
                f"{self._line_limit:,} bytes (limits.max_line_bytes): a quote that is never "
                "closed", line=self._reader.line_at(self._open_since))

    def _too_long(self, offset: int) -> NoReturn:
        raise self._reader.fail(
            "line_too_long", f"a line is longer than {self._line_limit:,} bytes "
            "(limits.max_line_bytes): not line-oriented text, or a missing line break",
            line=self._reader.line_at(offset))

    def close(self) -> None:
        try:
            if self._gz is not None:
                self._gz.close()
            self._file.close()
        finally:
            super().close()


def _first_break(data: bytes) -> int:
    a, b = data.find(b"\n"), data.find(b"\r")
    if a < 0:
        return b
    return a if b < 0 else min(a, b)


class Reader:
    """Base: opens the file, checks the header against the definition, counts records."""

    @property
    def scan_control_bytes(self) -> bool:
        """Whether the raw bytes are scanned for control characters (text readers)."""
        return False

    def __init__(self, defn: SourceDefinition, path: Path, name: str):
        self.defn, self.path, self.name = defn, Path(path), name
        self.rejects: list[Reject] = []
        self.records = 0        # data records seen: ingested + rejected
        self.blank_lines = 0
        self.columns: list[str] = []
        self.missing_columns: list[str] = []
        self.extra_columns: list[str] = []
        self._schema: pa.Schema | None = None
        self._head: bytes | None = None
        self._head_is_all = False
        self._declared = set(defn.columns)

    # -- shared helpers ---------------------------------------------------------------
    def fail(self, rule: str, reason: str, *, line: int | None = None,
             expected: str | None = None, found: str | None = None) -> IngestError:
        return IngestError(self.defn.source, self.name, rule, reason, line=line,
                           expected=expected, found=found)

    def compressed(self) -> bool:
        c = self.defn.compression
        return c == "gzip" or (c == "infer" and self.path.suffix.lower() == ".gz")

    def line_limit(self) -> int:
        return self.defn.limits.max_line_bytes

    def open_quote_byte(self) -> bytes | None:
        return None

    def open_stream(self, checked: bool = True) -> _Stream:
        return _Stream(self, checked)

    def open_binary(self) -> io.BufferedReader[_Stream]:
        return io.BufferedReader(self.open_stream(), buffer_size=READ_BYTES)

    def head(self, n: int = SNIFF_BYTES) -> bytes:
        """The first `n` bytes, decompressed and checked (cached)."""
        if self._head is None or (len(self._head) < n and not self._head_is_all):
            with self.open_stream() as fh:
                parts, size = [], 0
                while size < n and (chunk := fh.read(n - size)):
                    parts.append(chunk)
                    size += len(chunk)
            self._head = b"".join(parts)
            self._head_is_all = size < n
        return self._head[:n]

    def line_at(self, offset: int | None) -> int:
        """The physical line holding byte `offset` of the (decompressed) file; with None,
        the line where the readable data stops (a truncated or corrupt file)."""
        lines, pos, after_cr = 1, 0, False
        step = READ_BYTES if offset is not None else 8192
        offset = offset if offset is not None else 1 << 62
        try:
            with self.open_stream(checked=False) as fh:
                while pos < offset and (block := fh.read(min(step, offset - pos))):
                    lines += count_line_breaks(block, after_cr)
                    after_cr = block.endswith(b"\r")
                    pos += len(block)
        except IngestError:
            pass
        return lines

    def column_label(self, name: str, position: int) -> str:
        """A column as a message may show it: its name when the definition declares it
        (then it is not delivered text), its 1-based position otherwise."""
        return repr(name) if name in self._declared else f"at position {position}"

    def _positions(self, names: list[str], header: list[str]) -> str:
        want = set(names)
        return str([i for i, h in enumerate(header, start=1) if h in want])

    def accept_header(self, header: list[str], line: int | None = 1) -> None:
        """Check delivered column names. Messages never show an undeclared name: a headerless
        file makes its first record the 'header', so the names may be someone's data."""
        n = len(header)
        bad = [i for i, h in enumerate(header, start=1)
               if _CONTROL_RE.search(h) or "\n" in h or "\r" in h or len(h) > 1024]
        if bad:
            raise self.fail("invalid_header", f"column names at positions {bad} hold control "
                            "characters or line breaks, or are longer than 1024 characters",
                            line=line)
        found = [h for h in header if h in self._declared]
        summary = f"{n} columns, {len(set(found))} of them declared"
        if header and not found and self.defn.format != "fixed_width":
            raise self.fail("missing_header", f"none of the {n} names in the header is a "
                            "declared column: the header line is missing (the first line "
                            "is data) or this is not the agency's extract", line=line,
                            expected=f"columns {self.defn.columns}", found=summary)
        seen, dupes = set(), []
        for col in header:
            if col in seen and col not in dupes:
                dupes.append(col)
            seen.add(col)
        if dupes:
            named = [d for d in dupes if d in self._declared]
            other = [d for d in dupes if d not in self._declared]
            what = (f"{named}" if named else "") + \
                (f"{' and ' if named else ''}undeclared names at positions "
                 f"{self._positions(other, header)}" if other else "")
            raise self.fail("duplicate_header", f"column names appear more than once: {what}",
                            line=line)
        missing_required = [c for c in self.defn.required_columns if c not in seen]
        if missing_required:
            raise self.fail("missing_required_columns",
                            f"required columns are missing: {missing_required}", line=line,
                            expected=str(self.defn.required_columns), found=summary)
        self.missing_columns = [c for c in self.defn.columns if c not in seen]
        self.extra_columns = [c for c in header if c not in self._declared]
        if self.extra_columns and self.defn.extra_columns == "fail":
            raise self.fail("unexpected_columns",
                            f"columns not in the source definition: {len(self.extra_columns)}, "
                            f"at positions {self._positions(self.extra_columns, header)}",
                            line=line, expected=f"columns {self.defn.columns}", found=summary)
        self._check_storable_names(header, line)
        self.columns = header

    def _check_storable_names(self, header: list[str], line: int | None) -> None:
        """Bronze keeps every delivered column; Delta forbids some characters (they become
        underscores), ignores case, and the provenance columns are reserved. A name that
        would collide fails the file rather than overwrite another column."""
        from ids_lakehouse.ingest.bronze import PROVENANCE_NAMES, delta_column_name

        reserved = {n.lower() for n in PROVENANCE_NAMES + ["_landed_at"]}
        stored: dict[str, int] = {}
        clash = []
        for i, h in enumerate(header, start=1):
            key = delta_column_name(h).lower()
            if key in reserved or h.lower() in reserved:
                clash.append(i)
            elif key in stored:
                clash.extend([stored[key], i])
            stored.setdefault(key, i)
        if clash:
            labels = ", ".join(self.column_label(header[i - 1], i) for i in sorted(set(clash)))
            raise self.fail("column_name_clash", "delivered column names collide with each "
                            "other or with provenance columns once stored in Delta (which "
                            f"ignores case and replaces unsafe characters): {labels}",
                            line=line)

    def reject(self, row: int, rule: str, reason: str, raw: str | None,
               column: str | None = None) -> None:
        if self.defn.row_errors == "fail":
            raise self.fail(rule, reason + " (row_errors: fail)", line=row)
        self.rejects.append(Reject(row, rule, reason, raw,
                                   column if column in self._declared else None))

    def value_problem(self, value: str, name: str, position: int
                      ) -> tuple[str, str] | None:
        """(rule, reason) when one delivered text value may not be stored as it is."""
        limit = self.defn.limits.max_value_chars
        if len(value) <= limit and not _CONTROL_RE.search(value):
            return None
        label = self.column_label(name, position)
        if len(value) > limit:
            return "value_too_long", (f"the value of column {label} is {len(value):,} "
                                      f"characters; the limit is {limit:,} "
                                      "(limits.max_value_chars)")
        m = _CONTROL_RE.search(value)
        if m:
            return "control_character", (f"column {label} holds control character "
                                         f"U+{ord(m.group()):04X} at character {m.start() + 1}")
        return None

    def string_schema(self) -> pa.Schema:
        return pa.schema([(c, pa.string()) for c in self.columns])

    def sniff_text(self) -> bytes:
        """Catch a file that is not text of the declared encoding before parsing it.
        Returns the head of the file (decompressed, without a UTF-8 BOM)."""
        head = self.head()
        if not head:
            raise self.fail("empty_file", "the file is empty (0 bytes)")
        for magic, what in ((b"PAR1", "a Parquet file"), (b"PK\x03\x04", "a zip/xlsx file"),
                            (b"\x1f\x8b", "gzip-compressed data"),
                            (b"\xd0\xcf\x11\xe0", "an OLE2 file (xls or an encrypted xlsx)")):
            if head.startswith(magic):
                raise self.fail("wrong_format", f"declared {self.defn.format} but the file is "
                                f"{what}")
        enc = codecs.lookup(self.defn.encoding).name
        wide = enc.startswith(("utf-16", "utf-32"))
        if not wide:
            if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise self.fail("wrong_encoding", "the file starts with a UTF-16 byte order "
                                f"mark but the source declares {self.defn.encoding}", line=1)
            if head.count(b"\x00") * 10 > len(head):
                raise self.fail("wrong_format", f"declared {self.defn.format} text but the "
                                "file is mostly NUL bytes (binary data, or UTF-16 text)")
        single_byte = enc in ("cp1252", "latin-1", "iso8859-1", "iso8859-15", "ascii")
        if single_byte and _looks_utf8(head):
            line = 1 + count_line_breaks(head[: _first_multibyte(head)])
            raise self.fail("wrong_encoding", f"the file looks UTF-8 but the source declares "
                            f"{self.defn.encoding}", line=line)
        if not head.strip(BLANK.encode()) and len(head) < SNIFF_BYTES:
            raise self.fail("empty_file", "the file has no records, only blank lines")
        return head

    def decode_error(self, exc: UnicodeDecodeError, line: int | None) -> IngestError:
        return self.fail("wrong_encoding", f"bytes that are not valid {self.defn.encoding} "
                         f"({type(exc).__name__})", line=line)

    def first_undecodable_line(self) -> int | None:
        """The line of the first byte sequence the declared encoding cannot decode."""
        decoder = codecs.getincrementaldecoder(self.defn.encoding)(errors="strict")
        pos = 0
        with self.open_stream(checked=False) as fh:
            while True:
                block = fh.read(READ_BYTES)
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    return self.line_at(pos + max(exc.start, 0))
                if not block:
                    return None
                pos += len(block)

    @property
    def schema(self) -> pa.Schema:
        return self.prepared()

    def prepared(self) -> pa.Schema:
        """Check the file and its header (once); returns the delivered columns."""
        if self._schema is None:
            try:
                self._schema = self.prepare()
            except IngestError:
                raise
            except Exception as exc:  # a library's message may quote delivered text
                raise self.fail("unreadable_file", f"the {self.defn.format} reader could not "
                                f"read the file ({type(exc).__name__})") from None
        return self._schema

    def batches(self) -> Iterator[Batch]:
        """The delivered rows; any failure is an `IngestError` without delivered text."""
        self.prepared()
        try:
            yield from self._batches()
        except IngestError:
            raise
        except Exception as exc:
            raise self.fail("unreadable_file", f"the {self.defn.format} reader stopped "
                            f"({type(exc).__name__})") from None

    def prepare(self) -> pa.Schema:
        raise NotImplementedError

    def _batches(self) -> Iterator[Batch]:
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
    """Shared by JSON lines and fixed width: decode line by line (LF, CRLF or a lone CR end
    a line), blank lines skipped, every line checked for control characters."""

    def text_lines(self) -> Iterator[tuple[int, str]]:
        line_no = 0
        try:
            with self.open_binary() as raw:
                text = io.TextIOWrapper(raw, encoding=self.defn.encoding, errors="strict",
                                        newline="")
                for line_no, line in enumerate(text, start=1):
                    line = line.rstrip("\r\n")
                    if line.strip(BLANK):
                        yield line_no, line
                    else:
                        self.blank_lines += 1
        except UnicodeDecodeError as exc:
            raise self.decode_error(exc, self.first_undecodable_line() or line_no + 1
                                    ) from None

    def emit(self, rows: list[list[str | None]], numbers: list[int]) -> Batch:
        return _string_batch(self.schema, rows, numbers)

    def line_control(self, line_no: int, line: str) -> bool:
        """Quarantine a line holding a control character; True when it did."""
        m = _CONTROL_RE.search(line)
        if m:
            self.reject(line_no, "control_character", f"the line holds control character "
                        f"U+{ord(m.group()):04X} at character {m.start() + 1}", line)
        return m is not None


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class JsonLinesReader(_LineReader):
    """One JSON object per line. The columns are the declared ones (any declared key is
    accepted on any line, in any order, or absent: a null). Undeclared keys follow the
    source's `extra_columns`: `fail` fails the file; `keep` keeps the undeclared keys of the
    first record as columns, and quarantines a later record bringing a key not seen there
    (rule `unexpected_key`: a column cannot be added mid-stream). Numbers keep their
    delivered text; nested values are kept as JSON text."""

    def prepare(self) -> pa.Schema:
        head = self.sniff_text()
        body = head.lstrip(BLANK.encode())
        if not body.startswith(b"{"):
            raise self.fail("wrong_format", "declared jsonl but the first record is not a JSON "
                            "object", line=1 + count_line_breaks(head[: len(head) - len(body)]))
        extras: list[str] = []
        for line_no, line in self.text_lines():
            obj = self._loads(line)
            if isinstance(obj, dict):
                extras = [k for k in obj if k not in self._declared]
                if extras and self.defn.extra_columns == "fail":
                    raise self.fail("unexpected_columns", f"keys not in the source "
                                    f"definition: {len(extras)}", line=line_no,
                                    expected=f"columns {self.defn.columns}")
                break
        else:
            raise self.fail("wrong_format", "no line of the file is a JSON object")
        self.blank_lines = 0
        self.accept_header(list(self.defn.columns) + extras, line=None)
        return self.string_schema()

    @staticmethod
    def _loads(line: str) -> object:
        try:
            return json.loads(line, parse_float=_Number, parse_int=_Number, parse_constant=_Number,
                              object_pairs_hook=_unique_pairs)
        except (ValueError, RecursionError, _DuplicateKey):
            return None

    def _parse(self, line_no: int, line: str) -> dict[str, object] | None:
        try:
            obj = json.loads(line, parse_float=_Number, parse_int=_Number, parse_constant=_Number,
                             object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            self.reject(line_no, "invalid_json", f"not valid JSON ({type(exc).__name__} at "
                        f"character {exc.pos + 1})", line)
            return None
        except RecursionError:
            self.reject(line_no, "invalid_json", "not valid JSON (nested too deeply)", line)
            return None
        except _DuplicateKey as exc:
            label = f"key {exc.key!r}" if exc.key in self._declared else "an undeclared key"
            self.reject(line_no, "duplicate_key", f"{label} appears more than once in the "
                        "record; which value was meant is unknown", line, column=exc.key)
            return None
        if not isinstance(obj, dict):
            self.reject(line_no, "invalid_json", "the line is not a JSON object", line)
            return None
        return obj

    def _batches(self) -> Iterator[Batch]:
        index = {c: i for i, c in enumerate(self.schema.names)}
        seen: set[str] = set()
        rows, numbers = [], []
        for line_no, line in self.text_lines():
            self.records += 1
            if self.line_control(line_no, line):
                continue
            obj = self._parse(line_no, line)
            if obj is None:
                continue
            unknown = [k for k in obj if k not in index]
            if unknown:
                if self.defn.extra_columns == "fail":
                    raise self.fail("unexpected_columns", f"keys not in the source "
                                    f"definition: {len(unknown)}", line=line_no)
                self.reject(line_no, "unexpected_key", f"keys neither declared nor in the "
                            f"first record: {len(unknown)}", line)
                continue
            row: list[str | None] = [None] * len(index)
            problem = None
            for k, v in obj.items():
                text = _json_text(v)
                if text is not None and problem is None:
                    problem = self.value_problem(text, k, index[k] + 1)
                    if problem:
                        self.reject(line_no, *problem, line, column=k)
                row[index[k]] = text
            if problem:
                continue
            seen.update(obj)
            rows.append(row)
            numbers.append(line_no)
            if len(rows) >= BATCH_ROWS:
                yield self.emit(rows, numbers)
                rows, numbers = [], []
        missing = [c for c in self.defn.required_columns if c not in seen]
        if missing and self.records:
            raise self.fail("missing_required_columns", f"required keys appear in no record: "
                            f"{missing}")
        self.missing_columns = [c for c in self.defn.columns if c not in seen]
        yield self.emit(rows, numbers)


def _string_batch(schema: pa.Schema, rows: list[list[str | None]], numbers: list[int]
                  ) -> Batch:
    cols: list[Sequence[str | None]] = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array(c, pa.string()) for c in cols]
    return (pa.RecordBatch.from_arrays(arrays, schema=schema),
            np.asarray(numbers, dtype=np.int64))


class _Number(str):
    """A JSON number, kept as its delivered text."""


def _json_text(v: object) -> str | None:
    """A top-level value as text: strings as they are, numbers as delivered, nested values
    as compact JSON with their numbers as delivered (never turned into strings)."""
    if v is None or isinstance(v, str) and not isinstance(v, _Number):
        return v
    return _json_dump(v)


def _json_dump(v: object) -> str:
    if isinstance(v, _Number):
        return str.__str__(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_json_dump(x)}"
                              for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_json_dump(x) for x in v) + "]"
    raise TypeError(f"not a JSON value: {type(v).__name__}")   # json.loads makes no other


class FixedWidthReader(_LineReader):
    """Columns cut at the declared positions (in characters); padding on the right is not
    data. A line is quarantined when it holds a tab (`tab_in_fixed_width`: it would shift
    every later column), a control character, characters past the layout other than
    trailing spaces (`ragged_row`), or when it is shorter than the layout's required extent
    (`short_line`): it must reach the first character of every required column and of the
    record identifier. A shorter line may end early only where the trailing columns are
    blank padding; those columns are then null."""

    def prepare(self) -> pa.Schema:
        self.sniff_text()
        self.accept_header([c.name for c in self.defn.fixed_width or []], line=None)
        return self.string_schema()

    def required_extent(self) -> int:
        must = set(self.defn.required_columns) | {self.defn.record_id}
        return max(c.start for c in self.defn.fixed_width or [] if c.name in must)

    def _batches(self) -> Iterator[Batch]:
        layout = self.defn.fixed_width or []
        cuts = [(c.start - 1, c.start - 1 + c.width) for c in layout]
        total = max(end for _, end in cuts)
        extent = self.required_extent()
        rows, numbers = [], []
        for line_no, line in self.text_lines():
            self.records += 1
            if "\t" in line:
                self.reject(line_no, "tab_in_fixed_width", f"the line holds a tab at character "
                            f"{line.index(chr(9)) + 1}; positions would shift", line)
                continue
            if self.line_control(line_no, line):
                continue
            body = line.rstrip(" ") if len(line) > total else line
            if len(body) > total:
                self.reject(line_no, "ragged_row", f"line is {len(body)} characters; the "
                            f"layout has {total}", line)
                continue
            if len(line) < extent:
                self.reject(line_no, "short_line", f"line is {len(line)} characters; the "
                            f"layout's required columns reach character {extent}", line)
                continue
            rows.append([line[a:b].rstrip() or None for a, b in cuts])
            numbers.append(line_no)
            if len(rows) >= BATCH_ROWS:
                yield self.emit(rows, numbers)
                rows, numbers = [], []
        yield self.emit(rows, numbers)


_NO_CACHED_VALUE = object()   # a formula cell the workbook holds no computed value for
_MERGE_RE = re.compile(rb"<(?:\w+:)?mergeCell\s[^>]*?ref=\"([A-Za-z]{1,3})(\d{1,7})"
                       rb"(?::([A-Za-z]{1,3})(\d{1,7}))?\"")


class XlsxReader(Reader):
    """One sheet of a workbook, streamed. Cells become text: dates as ISO 8601, numbers as
    written by Python. Before the workbook is opened, the zip's declared part sizes are
    checked against `limits` (a shared-strings or sheet bomb fails `decompression_limit`).
    Rows are quarantined when a cell is a formula without a computed value
    (`formula_without_value`), when they lie in a merged range (`merged_cells`: only the
    first cell of a range holds the value, the others would read as silent nulls), and for
    over-long values or control characters."""

    def _check_zip(self) -> zipfile.ZipFile:
        import zipfile

        try:
            archive = zipfile.ZipFile(self.path)
            infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise self.fail("wrong_format", f"not a readable xlsx workbook "
                            f"({type(exc).__name__})") from None
        lim = self.defn.limits
        total = sum(i.file_size for i in infos)
        if total > lim.max_expanded_bytes:
            raise self.fail("decompression_limit", f"the workbook's parts expand to {total:,} "
                            f"bytes; the limit is {lim.max_expanded_bytes:,} "
                            "(limits.max_expanded_bytes)")
        for i in infos:
            if i.file_size > XLSX_RATIO_PART_BYTES and \
                    i.file_size > lim.max_expansion_ratio * max(i.compress_size, 1):
                raise self.fail("decompression_limit", f"a workbook part expands "
                                f"{i.file_size / max(i.compress_size, 1):,.0f} times; the "
                                f"limit is {lim.max_expansion_ratio:g} "
                                "(limits.max_expansion_ratio)")
            if i.filename.lower().endswith("sharedstrings.xml") and \
                    i.file_size > lim.max_shared_strings_bytes:
                raise self.fail("decompression_limit", f"the shared strings part is "
                                f"{i.file_size:,} bytes; the limit is "
                                f"{lim.max_shared_strings_bytes:,} "
                                "(limits.max_shared_strings_bytes)")
        return archive

    def prepare(self) -> pa.Schema:
        from openpyxl import load_workbook

        if self.path.stat().st_size == 0:
            raise self.fail("empty_file", "the file is empty (0 bytes)")
        self._check_zip().close()
        try:
            self._book = load_workbook(self.path, read_only=True, data_only=True)
        except Exception as exc:  # zip, XML, openpyxl: never their message
            raise self.fail("wrong_format", f"not a readable xlsx workbook "
                            f"({type(exc).__name__})") from None
        try:
            return self._open_sheet()
        except BaseException:
            self._book.close()
            raise

    def _open_sheet(self) -> pa.Schema:
        name = self.defn.sheet or self._book.sheetnames[0]
        if name not in self._book.sheetnames:
            raise self.fail("missing_sheet", f"sheet {name!r} not found",
                            expected=name, found=f"{len(self._book.sheetnames)} sheets")
        self._sheet = self._book[name]
        self._merged = self._merged_rows()
        self._rows = self._sheet_rows()
        header_row = next(self._rows, None)
        header = header_row[1] if header_row is not None and header_row[0] == 1 else []
        while header and header[-1] is None:
            header.pop()
        if not header:
            raise self.fail("empty_file", f"sheet {name!r} has no header row", line=1)
        if 1 in self._merged or any(h is _NO_CACHED_VALUE for h in header):
            raise self.fail("merged_cells" if 1 in self._merged else "formula_without_value",
                            "the header row has merged cells or formulas without values",
                            line=1)
        self.accept_header([h.strip(" \t") if isinstance(h, str) else "" if h is None
                            else _cell_str(h) for h in header], line=1)
        return self.string_schema()

    def _merged_rows(self) -> dict[int, str]:
        """Rows covered by a merged range (scanned from the sheet XML before any row is
        read: the ranges are stored after the cells)."""
        from openpyxl.utils import column_index_from_string

        rows: dict[int, str] = {}
        tail = b""
        with self._book._archive.open(self._sheet._worksheet_path) as fh:
            while block := fh.read(READ_BYTES):
                data = tail + block
                if b"mergeCell" in data:
                    for m in _MERGE_RE.finditer(data):
                        c1, r1 = m.group(1), int(m.group(2))
                        r2 = int(m.group(4) or r1)
                        c2 = m.group(3) or c1
                        a = column_index_from_string(c1.decode().upper())
                        b = column_index_from_string(c2.decode().upper())
                        span = f"column {a}" if a == b else f"columns {a}-{b}"
                        for r in range(r1, min(r2, 1_048_576) + 1):
                            rows.setdefault(r, span)
                tail = data[-256:]
        return rows

    def _sheet_rows(self) -> Iterator[tuple[int, list[object]]]:
        """(sheet row, cell values by column) for each row present in the sheet XML: the
        dimension the workbook declares is not trusted, and formulas without a cached
        value are marked rather than read as empty."""
        from openpyxl.worksheet._reader import FORMULA_TAG, VALUE_TAG, WorkSheetParser

        book = self._book
        with book._archive.open(self._sheet._worksheet_path) as src:
            parser = WorkSheetParser(src, self._sheet._shared_strings, data_only=True,
                                     epoch=book.epoch, date_formats=book._date_formats,
                                     timedelta_formats=book._timedelta_formats)
            parse_cell = parser.parse_cell

            def mark_uncached(element: Any) -> dict[str, Any]:
                cell: dict[str, Any] = parse_cell(element)
                if cell["value"] is None and element.find(FORMULA_TAG) is not None and \
                        not element.findtext(VALUE_TAG):
                    cell["value"] = _NO_CACHED_VALUE
                return cell

            # The parser reads every cell through its parse_cell (openpyxl has no types to
            # subclass it under mypy; the instance's method is wrapped instead).
            parser.parse_cell = mark_uncached
            for idx, cells in parser.parse():
                values: list[object] = []
                for cell in cells:
                    col = cell["column"]
                    if col > len(values):
                        values.extend([None] * (col - len(values)))
                    values[col - 1] = cell["value"]
                yield idx, values

    def _batches(self) -> Iterator[Batch]:
        width = len(self.schema)
        names = self.schema.names
        rows, numbers = [], []
        last = 1
        try:
            for row_no, values in self._rows:
                self.blank_lines += max(row_no - last - 1, 0)   # rows absent from the XML
                last = row_no
                while values and values[-1] is None:
                    values.pop()
                if not values:
                    self.blank_lines += 1
                    continue
                self.records += 1
                raw = json.dumps([None if v is _NO_CACHED_VALUE else _cell_text(v)
                                  for v in values], ensure_ascii=False)
                if len(values) > width:
                    self.reject(row_no, "ragged_row", f"row has {len(values)} cells; the "
                                f"header has {width}", raw)
                    continue
                if row_no in self._merged:
                    self.reject(row_no, "merged_cells", f"the row lies in a merged range "
                                f"({self._merged[row_no]}); merged cells read as empty "
                                "except the first", raw)
                    continue
                cells, problem = [], None
                for i, v in enumerate(values):
                    if v is _NO_CACHED_VALUE:
                        problem = ("formula_without_value", f"column "
                                   f"{self.column_label(names[i], i + 1)} is a formula the "
                                   "workbook holds no computed value for", names[i])
                        break
                    text = _cell_text(v)
                    found = self.value_problem(text, names[i], i + 1) if text is not None \
                        else None
                    if found:
                        problem = (*found, names[i])
                        break
                    cells.append(text)
                if problem:
                    self.reject(row_no, problem[0], problem[1], raw, column=problem[2])
                    continue
                rows.append(cells + [None] * (width - len(cells)))
                numbers.append(row_no)
                if len(rows) >= BATCH_ROWS:
                    yield _string_batch(self.schema, rows, numbers)
                    rows, numbers = [], []
            yield _string_batch(self.schema, rows, numbers)
        finally:
            self._book.close()


def _cell_text(v: object) -> str | None:
    return None if v is None else _cell_str(v)


def _cell_str(v: object) -> str:
    import datetime as dt

    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    return str(v)


class ParquetReader(Reader):
    """Parquet is typed: its columns keep their delivered types. Nested columns (list,
    struct, map) are refused unless the source declares `allow_nested_types`; rows with an
    over-long string or a control character are quarantined as in the text formats."""

    def _file(self) -> pq.ParquetFile:
        import pyarrow.parquet as pq

        if self.path.stat().st_size == 0:
            raise self.fail("empty_file", "the file is empty (0 bytes)")
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self.fail("wrong_format", f"not a readable Parquet file "
                            f"({type(exc).__name__})") from None

    def prepare(self) -> pa.Schema:
        self._pf = self._file()
        schema = self._pf.schema_arrow
        names = schema.names
        if not self.defn.allow_nested_types:
            nested = [self.column_label(f.name, i) for i, f in enumerate(schema, start=1)
                      if pa.types.is_nested(f.type)]
            if nested:
                raise self.fail("nested_type", f"columns {', '.join(nested)} hold nested "
                                "values (list, "
                                "struct or map); the source does not declare "
                                "allow_nested_types, and they are never flattened or cast "
                                "to text")
        md, lim = self._pf.metadata, self.defn.limits
        expanded = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        packed = max(self.path.stat().st_size, 1)
        if expanded > lim.max_expanded_bytes or (
                expanded > RATIO_GRACE_BYTES and expanded > lim.max_expansion_ratio * packed):
            raise self.fail("decompression_limit", f"the file's pages expand to {expanded:,} "
                            f"bytes from {packed:,} (limits.max_expanded_bytes, "
                            "max_expansion_ratio)")
        self.accept_header(names, line=None)
        return schema

    def _batches(self) -> Iterator[Batch]:
        pf = self._pf
        start = 1
        strings = [i for i, f in enumerate(self.schema)
                   if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                n = batch.num_rows
                self.records += n
                numbers = np.arange(start, start + n, dtype=np.int64)
                start += n
                if strings:
                    batch, numbers = self._screen(batch, numbers, strings)
                yield batch, numbers
        except (pa.ArrowException, OSError) as exc:
            raise self.fail("corrupt_file", f"Parquet data could not be read "
                            f"({type(exc).__name__})", line=start) from None
        if start == 1:
            yield pa.RecordBatch.from_pylist([], schema=self.schema), np.empty(0, np.int64)

    def _screen(self, batch: pa.RecordBatch, numbers: IntArray, strings: list[int]
                ) -> Batch:
        bad = screen_strings(self, batch, strings)
        if bad is None:
            return batch, numbers
        for i, (rule, reason, col) in bad.items():
            row = {k: (str(v) if v is not None else None)
                   for k, v in batch.slice(i, 1).to_pylist()[0].items()}
            self.reject(int(numbers[i]), rule, reason, json.dumps(row, ensure_ascii=False,
                                                                  default=str), column=col)
        keep = np.ones(batch.num_rows, bool)
        keep[list(bad)] = False
        return batch.filter(pa.array(keep)), numbers[keep]


def screen_strings(reader: Reader, batch: pa.RecordBatch, columns: list[int],
                   control: bool = True) -> dict[int, tuple[str, str, str]] | None:
    """Rows of `batch` holding an over-long value or (when `control`) a control character
    in one of the string `columns`: {row index: (rule, reason, column)}. Fast path: the
    column's data buffer is checked whole before any row is looked at."""
    limit = reader.defn.limits.max_value_chars
    names = batch.schema.names
    out: dict[int, tuple[str, str, str]] = {}
    for c in columns:
        col = batch.column(c)
        if len(col) == 0:
            continue
        label = reader.column_label(names[c], c + 1)
        longest = pc.max(pc.binary_length(col)).as_py() or 0
        if longest > limit:
            over = pc.greater(pc.utf8_length(col), limit).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(over):
                out.setdefault(int(i), ("value_too_long", f"the value of column {label} is "
                                        f"longer than {limit:,} characters "
                                        "(limits.max_value_chars)", names[c]))
        if control:
            data = col.buffers()[2]
            if data is not None and has_control(data.to_pybytes()):
                hit = pc.match_substring_regex(col, CONTROL_PATTERN)
                for i in np.flatnonzero(hit.to_numpy(zero_copy_only=False)):
                    out.setdefault(int(i), ("control_character", f"column {label} holds a "
                                            "control character (NUL or another C0 control "
                                            "other than tab)", names[c]))
    return out or None


def _normal_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz)   # Delta stores microseconds
    if pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(t.value_type)
    return t


def _widens(delivered: pa.DataType, stored: pa.DataType) -> bool:
    """A lossless cast from what the file holds to what bronze stores."""
    if pa.types.is_null(delivered):
        return True
    if pa.types.is_integer(delivered) and pa.types.is_signed_integer(stored):
        signed = pa.types.is_signed_integer(delivered)
        return bool(delivered.bit_width < stored.bit_width or
                    (signed and delivered.bit_width == stored.bit_width))
    return bool(pa.types.is_float32(delivered) and pa.types.is_float64(stored))


def check_bronze_schema(reader: Reader, table_path: LakePath, out_schema: pa.Schema) -> None:
    """Fail with `schema_conflict` when a column of the file has a type the bronze table
    stores differently for earlier deliveries. delta-rs would otherwise cast silently
    (1.5 -> 1, a list -> its text) or fail with a message that quotes a value."""
    from ids_lakehouse import delta

    if not delta.exists(table_path):
        return
    stored = pa.schema(delta.table(table_path).schema().to_arrow())
    conflicts = []
    for i, f in enumerate(out_schema, start=1):
        if f.name not in stored.names:
            continue
        have, want = _normal_type(f.type), _normal_type(stored.field(f.name).type)
        if have != want and not _widens(have, want):
            label = reader.column_label(f.name, i) if i <= len(reader.columns) \
                else repr(f.name)
            conflicts.append(f"{label} is {have} here but {want} in earlier deliveries")
    if conflicts:
        raise reader.fail("schema_conflict", "the file's column types conflict with earlier "
                          f"deliveries of this source: {'; '.join(conflicts)}")


def write_failure(reader: Reader, exc: BaseException, from_reader: bool) -> BaseException:
    """What `ingest_file` raises when the bronze write fails: the reader's own
    `IngestError`; `schema_conflict` for a type clash delta-rs found; an `IngestError` for a
    reader that crashed; otherwise a `BronzeWriteError` (retried as transient). Never the
    library's message, which may quote a delivered value."""
    if isinstance(exc, IngestError) or not isinstance(exc, Exception):
        return exc
    name = type(exc).__name__
    if from_reader:
        return reader.fail("unreadable_file", f"the {reader.defn.format} reader stopped "
                           f"({name})")
    text = str(exc).lower()
    if "schema" in name.lower() or "cast" in text or "schema" in text:
        return reader.fail("schema_conflict", "the file's column types conflict with earlier "
                           f"deliveries of this source ({name})")
    return BronzeWriteError(f"[{reader.defn.source}] {reader.name}: writing bronze failed "
                            f"({name})")
