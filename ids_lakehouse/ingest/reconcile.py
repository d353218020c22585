"""Reconciliation: every record of a delivered file is either in bronze or in quarantine.
The file's record count is taken independently of the ingest readers."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from collections.abc import Iterable
from dataclasses import dataclass

from ids_lakehouse.config import Lake
from ids_lakehouse.ingest.bronze import count_rows
from ids_lakehouse.ingest.landing import LandedFile
from ids_lakehouse.sources import SourceDefinition


def delivered_records(defn: SourceDefinition, landed: LandedFile) -> int | None:
    """Records in the file by a count that shares no code with the readers: non-blank lines
    (less the header) for line-oriented text, records by Python's csv module for CSV whose
    values may span lines, the footer row count for Parquet. None where no independent count
    exists (Excel). A line ends at LF, CRLF or a lone CR, as in the readers."""
    if defn.format == "parquet":
        import pyarrow.parquet as pq

        rows: int = pq.ParquetFile(landed.path).metadata.num_rows
        return rows
    if defn.format == "xlsx":
        return None
    gz = defn.compression == "gzip" or (defn.compression == "infer"
                                        and landed.path.suffix.lower() == ".gz")
    # A UTF-8 BOM is not data; "utf-8-sig" drops it.
    encoding = "utf-8-sig" if codecs.lookup(defn.encoding).name == "utf-8" else defn.encoding
    raw = gzip.open(landed.path, "rb") if gz else open(landed.path, "rb")
    with raw, io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="") as text:
        if defn.format == "csv" and defn.csv.multiline_values:
            return _csv_records(defn, text)
        # A line with no value (only white space, or for CSV only delimiters and quotes) is
        # not a record.
        empty = " \t\r\n" + (f"{defn.csv.delimiter}{defn.csv.quote_char}"
                              if defn.format == "csv" else "")
        lines = sum(1 for line in text if line.strip(empty))
    header = 1 if defn.format == "csv" and defn.csv.header else 0
    return max(lines - header, 0)


def _csv_records(defn: SourceDefinition, text: Iterable[str]) -> int:
    """Records of a CSV whose quoted values may span lines; a record whose every field is
    blank is not one."""
    old = csv.field_size_limit()
    csv.field_size_limit((1 << 31) - 1)
    try:
        rows = csv.reader(text, delimiter=defn.csv.delimiter, quotechar=defn.csv.quote_char)
        records = sum(1 for row in rows if any(f.strip(" \t\r\n") for f in row))
    finally:
        csv.field_size_limit(old)
    return max(records - (1 if defn.csv.header else 0), 0)


@dataclass(frozen=True)
class Reconciliation:
    delivered: int | None
    reader_records: int
    bronze: int
    quarantined: int

    @property
    def passed(self) -> bool:
        stored = self.bronze + self.quarantined
        return stored == self.reader_records and self.delivered in (None, stored)


def reconcile(defn: SourceDefinition, landed: LandedFile, lake: Lake,
              reader_records: int) -> Reconciliation:
    return Reconciliation(
        delivered=delivered_records(defn, landed), reader_records=reader_records,
        bronze=count_rows(lake.bronze(defn.source), landed.sha256),
        quarantined=count_rows(lake.quarantine(defn.source), landed.sha256, stage="ingest"))
