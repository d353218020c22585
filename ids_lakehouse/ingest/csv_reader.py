"""CSV through Arrow's streaming C++ reader: every column as text, ragged rows rejected with
their line number, blank lines skipped, any encoding Python knows.

The bytes reach Arrow through the checked stream of `readers` (decompression, expansion
limits, line length, a UTF-8 BOM dropped). A line ends at LF, CRLF or a lone CR. Unless the
source declares `csv.multiline_values`, a record may not span lines: a quoted line break, or
an unbalanced quote that would swallow the lines after it, fails the file with rule
`newline_in_value` and the line the record starts on. With `multiline_values`, a record's
`_row_number` is the physical line it starts on."""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv

from ids_lakehouse.ingest.errors import IngestError
from ids_lakehouse.ingest.readers import (
    BLANK,
    READ_BYTES,
    Batch,
    IntArray,
    Reader,
    _first_break,
    ascii_compatible,
    count_line_breaks,
    screen_strings,
)

BLOCK_BYTES = 1 << 20
_BREAKS = "\r\n|\r|\n"


@contextlib.contextmanager
def field_size_limit(limit: int) -> Iterator[None]:
    """Python's csv module bounds a field (a process-wide setting): raise it for a scan."""
    old = csv.field_size_limit()
    csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


class CsvReader(Reader):
    # Parser state of one pass over the file, set up by `_batches`.
    _blank_chars: str
    _skipped: dict[int, tuple[int, int | None]]   # Arrow row ordinal -> (lines, reject)
    _handler_error: IngestError | None
    _spanning_at: int | None

    @property
    def scan_control_bytes(self) -> bool:
        return ascii_compatible(self.defn.encoding)

    def line_limit(self) -> int:
        # Arrow cannot parse a row longer than its block.
        return min(self.defn.limits.max_line_bytes, BLOCK_BYTES - 2)

    def open_quote_byte(self) -> bytes | None:
        if self.defn.csv.multiline_values and ascii_compatible(self.defn.encoding):
            return self.defn.csv.quote_char.encode(self.defn.encoding)
        return None

    def prepare(self) -> pa.Schema:
        head = self.sniff_text()
        opts = self.defn.csv
        if not opts.header:
            self.accept_header(list(self.defn.columns), line=None)
            return self.string_schema()
        try:
            if ascii_compatible(self.defn.encoding):
                end = _first_break(head)
                text = (head if end < 0 else head[:end]).decode(self.defn.encoding)
            else:
                decoded = codecs.getincrementaldecoder(self.defn.encoding)().decode(head)
                text = decoded.splitlines()[0] if decoded else ""
        except UnicodeDecodeError as exc:
            raise self.decode_error(exc, self.first_undecodable_line() or 1) from None
        try:
            header = next(csv.reader([text], delimiter=opts.delimiter,
                                     quotechar=opts.quote_char), [])
        except csv.Error as exc:
            raise self.fail("invalid_header", f"the header line cannot be parsed "
                            f"({type(exc).__name__})", line=1) from None
        if not any(h.strip() for h in header):
            raise self.fail("missing_header", "the first line is blank; expected a header",
                            line=1)
        # "id, name, dob": spaces around a name are layout, not part of it.
        self.accept_header([h.strip(" \t") for h in header], line=1)
        return self.string_schema()

    def _on_invalid(self, row: pacsv.InvalidRow) -> str:
        """Arrow's invalid-row callback; an exception here would be swallowed by Arrow, so a
        failure is kept and re-raised once the parser stops. Rows are placed on their
        physical lines once their batch arrives (`_place`)."""
        text = row.text
        span = 1 + count_line_breaks(text.encode("utf-8", "surrogatepass"))
        if span > 1 and not self.defn.csv.multiline_values:
            # Arrow's row number is a line only while every earlier record was one line;
            # the exact line comes from an independent scan once the parser has stopped.
            self._spanning_at = row.number
            return "error"
        if not text.strip(self._blank_chars):
            self.blank_lines += 1
            self._skipped[row.number] = (span, None)
            return "skip"
        self.records += 1
        spans = (f" (the record spans {span} lines: a quoted line break, or a quote that is "
                 "not closed)") if span > 1 else ""
        try:
            self.reject(row.number, "ragged_row", f"expected {row.expected_columns} fields, "
                        f"found {row.actual_columns}{spans}", text)
        except IngestError as exc:
            self._handler_error = exc
            return "error"
        self._skipped[row.number] = (span, len(self.rejects) - 1)
        return "skip"

    def _spanning(self, line: int) -> IngestError:
        return self.fail("newline_in_value", "a record spans more than one line: a quoted "
                         "value holds a line break, or a quote is not closed. The source does "
                         "not declare csv.multiline_values, so records are single lines",
                         line=line)

    def _batches(self) -> Iterator[Batch]:
        schema = self.schema
        opts = self.defn.csv
        header_lines = 1 if opts.header else 0
        self._blank_chars = BLANK + opts.delimiter + opts.quote_char
        self._skipped = {}
        self._handler_error = None
        self._spanning_at = None
        read = pacsv.ReadOptions(column_names=schema.names, skip_rows=header_lines,
                                 encoding=self.defn.encoding, block_size=BLOCK_BYTES,
                                 use_threads=False)
        parse = pacsv.ParseOptions(delimiter=opts.delimiter, quote_char=opts.quote_char,
                                   newlines_in_values=opts.multiline_values,
                                   ignore_empty_lines=False,
                                   invalid_row_handler=self._on_invalid)
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in schema.names},
                                       strings_can_be_null=False)
        position = (header_lines + 1, header_lines + 1)   # (Arrow's row ordinal, line)
        emitted = False
        stream = self.open_stream()
        try:
            with stream:
                reader = pacsv.open_csv(stream, read_options=read, parse_options=parse,
                                        convert_options=convert)
                for batch in reader:
                    spans = self._spans(batch) if opts.multiline_values else None
                    lines, position = self._place(position, batch.num_rows, spans)
                    if not opts.multiline_values:
                        self._no_line_breaks(batch, lines)
                    batch, lines = self._drop_valueless(batch, lines)
                    self.records += batch.num_rows
                    batch, lines = self._screen(batch, lines, stream.saw_control)
                    emitted = True
                    yield batch.cast(schema), lines
                self._place(position, 0, None, final=True)   # skipped rows at the end
        except IngestError:
            raise
        except UnicodeDecodeError as exc:
            raise self.decode_error(exc, self.first_undecodable_line() or position[1]
                                    ) from None
        except pa.ArrowInvalid as exc:
            if self._spanning_at is not None:
                raise self._spanning(self._first_spanning_record() or self._spanning_at
                                     ) from None
            raise (self._handler_error or self._stream_error(exc, position[1])) from None
        if not emitted:
            yield pa.RecordBatch.from_pylist([], schema=schema), np.empty(0, np.int64)

    # -- placing rows on lines ---------------------------------------------------------
    def _spans(self, batch: pa.RecordBatch) -> IntArray | None:
        """Physical lines each row covers (multi-line sources); None when all are one."""
        spans = None
        for col in _columns_with_breaks(batch):
            n = pc.count_substring_regex(col, _BREAKS).to_numpy(zero_copy_only=False)
            spans = n if spans is None else spans + n
        return None if spans is None else spans.astype(np.int64) + 1

    def _place(self, position: tuple[int, int], n: int, spans: IntArray | None,
               final: bool = False) -> tuple[IntArray, tuple[int, int]]:
        """Lines of the `n` rows of a batch, from Arrow's row ordinal `position[0]` (at
        line `position[1]`) on, stepping over the rows the invalid-row handler skipped
        (which may already include later rows) and over the lines multi-line records
        cover. Rejects of skipped rows get their physical line."""
        ordinal, line = position
        end = ordinal + n
        skipped = []
        for o in sorted(k for k in self._skipped if k >= ordinal):
            if o >= end and not (final and o == end):
                break
            skipped.append(o)
            end += 1
        total = n + len(skipped)
        if total == 0:
            return np.empty(0, np.int64), position
        seq = np.ones(total, np.int64)
        good = np.ones(total, bool)
        idx = np.asarray([s - ordinal for s in skipped], np.int64)
        if skipped:
            good[idx] = False
            seq[idx] = [self._skipped[s][0] for s in skipped]
        if spans is not None:
            seq[good] = spans
        starts = line + np.concatenate(([0], np.cumsum(seq)[:-1]))
        for s, at in zip(skipped, starts[idx] if skipped else []):
            _, reject = self._skipped.pop(s)
            if reject is not None and self.rejects[reject].row_number != at:
                self.rejects[reject] = dataclasses.replace(self.rejects[reject],
                                                           row_number=int(at))
        return starts[good], (end, int(starts[-1] + seq[-1]))

    # -- checks on parsed rows ----------------------------------------------------------
    def _no_line_breaks(self, batch: pa.RecordBatch, lines: IntArray) -> None:
        """A single-line source: a value holding a line break means the parser merged
        lines (a quoted line break, or an unbalanced quote)."""
        first = None
        for col in _columns_with_breaks(batch):
            hit = pc.match_substring_regex(col, "[\\r\\n]").to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(hit)
            if rows.size and (first is None or rows[0] < first):
                first = int(rows[0])
        if first is not None:
            raise self._spanning(int(lines[first]))

    def _drop_valueless(self, batch: pa.RecordBatch, lines: IntArray
                        ) -> tuple[pa.RecordBatch, IntArray]:
        """A row without any value (blank, or only delimiters, quotes and white space) is
        not a record."""
        if batch.num_rows == 0:
            return batch, lines
        empty = pc.equal(pc.utf8_trim(batch.column(0), BLANK), "")
        if not pc.any(empty).as_py():
            return batch, lines
        for col in batch.columns[1:]:
            empty = pc.and_(empty, pc.equal(pc.utf8_trim(col, BLANK), ""))
        n_empty = pc.sum(empty).as_py() or 0
        if not n_empty:
            return batch, lines
        self.blank_lines += n_empty
        keep = pc.invert(empty)
        return batch.filter(keep), lines[keep.to_numpy(zero_copy_only=False)]

    def _screen(self, batch: pa.RecordBatch, lines: IntArray, control: bool) -> Batch:
        """Quarantine rows with an over-long value or a control character."""
        bad = screen_strings(self, batch, list(range(batch.num_columns)), control=control)
        if bad is None:
            return batch, lines
        for i, (rule, reason, col) in sorted(bad.items()):
            values = [v if v is not None else "" for v in
                      batch.slice(i, 1).to_pylist()[0].values()]
            self.reject(int(lines[i]), rule, reason, self._csv_text(values), column=col)
        keep = np.ones(batch.num_rows, bool)
        keep[list(bad)] = False
        return batch.filter(pa.array(keep)), lines[keep]

    def _csv_text(self, values: list[str]) -> str:
        out = io.StringIO()
        csv.writer(out, delimiter=self.defn.csv.delimiter, quotechar=self.defn.csv.quote_char,
                   lineterminator="").writerow(values)
        return out.getvalue()

    # -- failures -------------------------------------------------------------------------
    def _stream_error(self, exc: Exception, line: int) -> IngestError:
        text = str(exc)
        if "UTF8" in text or "decode" in text.lower():
            return self.fail("wrong_encoding", f"bytes that are not valid {self.defn.encoding}",
                             line=self.first_undecodable_line() or line)
        if "chunker" in text or "straddl" in text:
            # The parser lost track of rows: a record crossing its blocks.
            found = self._first_spanning_record()
            if not self.defn.csv.multiline_values:
                return self._spanning(found or line)
            return self.fail("record_too_long", f"a record is longer than the parser's block "
                             f"({BLOCK_BYTES:,} bytes): a quote that is never closed, or "
                             "values longer than allowed", line=found)
        return self.fail("unparseable_csv", f"the CSV parser stopped ({type(exc).__name__})",
                         line=line)

    def _first_spanning_record(self) -> int | None:
        """The line of the first record that spans lines or holds a field longer than the
        parser's block, by Python's csv module (error path only)."""
        opts = self.defn.csv
        multiline = opts.multiline_values
        with field_size_limit(BLOCK_BYTES), self.open_stream(checked=False) as raw:
            text = io.TextIOWrapper(io.BufferedReader(raw, READ_BYTES),
                                    encoding=self.defn.encoding, errors="replace", newline="")
            rows = csv.reader(text, delimiter=opts.delimiter, quotechar=opts.quote_char)
            before = 0
            while True:
                try:
                    next(rows)
                except StopIteration:
                    return None
                except csv.Error:
                    return before + 1
                if not multiline and rows.line_num - before > 1:
                    return before + 1
                before = rows.line_num


def _columns_with_breaks(batch: pa.RecordBatch) -> Iterator[pa.Array]:
    """The string columns of a batch whose data holds a CR or LF somewhere (a cheap scan of
    the raw buffer before any per-value work)."""
    for col in batch.columns:
        data = col.buffers()[2]
        if data is not None and (b"\n" in (raw := data.to_pybytes()) or b"\r" in raw):
            yield col
