"""Reconciliation: every record of a delivered file is either in bronze or in quarantine.
The file's record count is taken independently of the ingest readers."""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from ids_lakehouse.config import Lake
from ids_lakehouse.ingest.bronze import count_rows
from ids_lakehouse.ingest.landing import LandedFile
from ids_lakehouse.sources import SourceDefinition


def delivered_records(defn: SourceDefinition, landed: LandedFile) -> int | None:
    """Records in the file by a count that shares no code with the readers: non-blank lines
    (less the header) for line-oriented text, the footer row count for Parquet. None where
    no independent count exists (Excel; CSV whose values may span lines)."""
    if defn.format == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(landed.path).metadata.num_rows
    if defn.format == "xlsx" or (defn.format == "csv" and defn.csv.multiline_values):
        return None
    gz = defn.compression == "gzip" or (defn.compression == "infer"
                                        and landed.path.suffix == ".gz")
    opener = gzip.open if gz else open
    # A line with no value (only whitespace, or for CSV only delimiters and quotes) is not a
    # record.
    empty = b" \t\r\n" + (f"{defn.csv.delimiter}{defn.csv.quote_char}".encode()
                            if defn.format == "csv" else b"")
    with opener(landed.path, "rb") as fh:
        lines = sum(1 for line in fh if line.strip(empty))
    header = 1 if defn.format == "csv" and defn.csv.header else 0
    return max(lines - header, 0)


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
