"""CSV through Arrow's streaming C++ reader: every column as text, ragged rows rejected with
their line number, blank lines skipped, any encoding Python knows."""

from __future__ import annotations

import bisect
import csv
import io
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv

from ids_lakehouse.ingest.errors import IngestError
from ids_lakehouse.ingest.readers import Batch, Reader

BLOCK_BYTES = 1 << 20


class CsvReader(Reader):
    def prepare(self) -> pa.Schema:
        self.sniff_text()
        opts = self.defn.csv
        if not opts.header:
            self.accept_header(list(self.defn.columns), line=None)
            return self.string_schema()
        first = self.head().split(b"\n", 1)[0]
        try:
            text = first.decode(self.defn.encoding).rstrip("\r")
        except UnicodeDecodeError as exc:
            raise self.decode_error(exc, 1) from None
        header = next(csv.reader([text], delimiter=opts.delimiter, quotechar=opts.quote_char),
                      [])
        if not any(h.strip() for h in header):
            raise self.fail("missing_header", "the first line is blank; expected a header",
                            line=1)
        self.accept_header(header, line=1)
        return self.string_schema()

    def _on_invalid(self, row) -> str:
        """Arrow's invalid-row callback; an exception here would be swallowed by Arrow, so a
        failure is kept and re-raised once the parser stops."""
        line = row.number
        if not row.text.strip():
            self.blank_lines += 1
        else:
            self.records += 1
            try:
                self.reject(line, "ragged_row", f"expected {row.expected_columns} fields, "
                            f"found {row.actual_columns}", row.text)
            except IngestError as exc:
                self._handler_error = exc
                return "error"
        bisect.insort(self._skipped, line)
        return "skip"

    def batches(self) -> Iterator[Batch]:
        schema = self.schema
        opts = self.defn.csv
        header_lines = 1 if opts.header else 0
        self._skipped: list[int] = []
        self._handler_error: IngestError | None = None
        read = pacsv.ReadOptions(column_names=schema.names, skip_rows=header_lines,
                                 encoding=self.defn.encoding, block_size=BLOCK_BYTES,
                                 use_threads=False)
        parse = pacsv.ParseOptions(delimiter=opts.delimiter, quote_char=opts.quote_char,
                                   newlines_in_values=opts.multiline_values,
                                   ignore_empty_lines=False,
                                   invalid_row_handler=self._on_invalid)
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in schema.names},
                                       strings_can_be_null=False)
        next_line = header_lines + 1
        emitted = False
        try:
            with self._open_stream() as stream:
                reader = pacsv.open_csv(stream, read_options=read, parse_options=parse,
                                        convert_options=convert)
                for batch in reader:
                    lines, next_line = self._line_numbers(next_line, batch.num_rows)
                    batch, lines = self._drop_valueless(batch, lines)
                    self.records += batch.num_rows
                    emitted = True
                    yield batch.cast(schema), lines
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise (self._handler_error or self._stream_error(exc, next_line)) from None
        except (EOFError, zlib.error, OSError) as exc:
            raise self.fail("corrupt_compression", f"compressed file is truncated or corrupt "
                            f"({type(exc).__name__})", line=next_line) from None
        if not emitted:
            yield pa.RecordBatch.from_pylist([], schema=schema), np.empty(0, np.int64)

    def _drop_valueless(self, batch: pa.RecordBatch, lines: np.ndarray
                        ) -> tuple[pa.RecordBatch, np.ndarray]:
        """A line without any value (blank, or only delimiters) is not a record."""
        if batch.num_rows == 0:
            return batch, lines
        empty = pc.equal(batch.column(0), "")
        for col in batch.columns[1:]:
            empty = pc.and_(empty, pc.equal(col, ""))
        n_empty = pc.sum(empty).as_py() or 0
        if not n_empty:
            return batch, lines
        self.blank_lines += n_empty
        keep = pc.invert(empty)
        return batch.filter(keep), lines[keep.to_numpy(zero_copy_only=False)]

    def _open_stream(self):
        compression = "gzip" if self.compressed() else None
        return pa.input_stream(str(self.path), compression=compression)

    def _line_numbers(self, start: int, n: int) -> tuple[np.ndarray, int]:
        """Line numbers of the `n` good rows from line `start` on, stepping over the lines
        the invalid-row handler skipped (those may already include later lines)."""
        end = start + n
        lo = bisect.bisect_left(self._skipped, start)
        skipped_here = []
        for line in self._skipped[lo:]:
            if line >= end:
                break
            skipped_here.append(line)
            end += 1
        lines = np.setdiff1d(np.arange(start, end, dtype=np.int64),
                             np.asarray(skipped_here, dtype=np.int64), assume_unique=True)
        del self._skipped[lo:lo + len(skipped_here)]
        return lines, end

    def _stream_error(self, exc: Exception, line: int):
        text = str(exc)
        if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "decode" in text:
            bad = _first_undecodable_line(self, self.defn.encoding)
            return self.fail("wrong_encoding", f"bytes that are not valid {self.defn.encoding}",
                             line=bad or line)
        if "gzip" in text.lower() or "compress" in text.lower():
            return self.fail("corrupt_compression", "compressed file is truncated or corrupt",
                             line=line)
        return self.fail("unparseable_csv", f"the CSV parser stopped: {type(exc).__name__}",
                         line=line)


def _first_undecodable_line(reader: Reader, encoding: str) -> int | None:
    decoder_cls = __import__("codecs").getincrementaldecoder(encoding)
    decoder = decoder_cls(errors="strict")
    with reader.open_binary() as fh:
        for number, line in enumerate(io.BufferedReader(fh), start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError:
                return number
    return None
