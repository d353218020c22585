"""Ingest one landed file into `bronze/<source>`, its rejected rows into
`quarantine/<source>`, each as a single Delta commit that replaces whatever an earlier
ingest of the same file (by content hash) wrote. Re-running never duplicates rows."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import SchemaMismatchError

from ids_lakehouse import crash, delta
from ids_lakehouse.config import Lake
from ids_lakehouse.ingest import readers
from ids_lakehouse.ingest.csv_reader import CsvReader
from ids_lakehouse.ingest.errors import IngestError, Reject
from ids_lakehouse.ingest.landing import LandedFile
from ids_lakehouse.sources import SourceDefinition
from ids_lakehouse.storage import LakePath

READERS = {"csv": CsvReader, "jsonl": readers.JsonLinesReader,
           "fixed_width": readers.FixedWidthReader, "xlsx": readers.XlsxReader,
           "parquet": readers.ParquetReader}

PROVENANCE = [
    pa.field("_source", pa.string(), nullable=False),
    pa.field("_file", pa.string(), nullable=False),
    pa.field("_file_sha256", pa.string(), nullable=False),
    pa.field("_row_number", pa.int64(), nullable=False),
    pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_run_id", pa.string(), nullable=False),
]
BRONZE_ONLY = [pa.field("_landed_at", pa.timestamp("us", tz="UTC"), nullable=False)]
PROVENANCE_NAMES = [f.name for f in PROVENANCE]

QUARANTINE_SCHEMA = pa.schema(PROVENANCE + [
    pa.field("_stage", pa.string()),     # ingest | conform
    pa.field("_rule", pa.string()),
    pa.field("_column", pa.string()),
    pa.field("_reason", pa.string()),
    pa.field("_raw", pa.string()),       # the delivered row; restricted
])

_DELTA_UNSAFE = re.compile(r"[ ,;{}()\n\t=]")


def delta_column_name(name: str) -> str:
    """Delta forbids some characters in column names; they become underscores."""
    return _DELTA_UNSAFE.sub("_", name) or "_blank"


@dataclass
class IngestResult:
    source: str
    file: str
    sha256: str
    bytes: int
    rows_read: int
    rows_written: int
    rows_quarantined: int
    blank_lines: int
    duration_s: float
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    renamed_columns: dict[str, str] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        """For logs, audit and Dagster: the names of undeclared columns are delivered text
        (a headerless file makes them someone's name), so they are counted, not shown."""
        out = asdict(self)
        out["extra_columns"] = len(self.extra_columns)
        out["renamed_columns"] = len(self.renamed_columns)
        return out


def make_reader(defn: SourceDefinition, path: Path, name: str) -> readers.Reader:
    return READERS[defn.format](defn, path, name)


def file_predicate(sha256: str, extra: str = "", column: str = "_file_sha256") -> str:
    """The rows of one file version (by its content hash), optionally narrowed."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("not a SHA-256 hex digest")
    return f"{column} = '{sha256}'" + (f" AND {extra}" if extra else "")


def replace_file_rows(path: LakePath, data: pa.Table | pa.RecordBatchReader, sha256: str,
                      extra: str = "") -> None:
    """Write `data` as the rows of one file version, replacing earlier rows of that version,
    in one commit."""
    delta.replace(path, data, file_predicate(sha256, extra))


def ingest_file(defn: SourceDefinition, landed: LandedFile, lake: Lake, run_id: str
                ) -> IngestResult:
    started = time.perf_counter()
    reader = make_reader(defn, landed.path, landed.name)
    delivered = reader.schema
    renamed = {n: delta_column_name(n) for n in delivered.names if delta_column_name(n) != n}
    clash = sorted(set(renamed.values()) & set(delivered.names)) or \
        sorted(n for n in delivered.names if n in PROVENANCE_NAMES + ["_landed_at"])
    if clash:
        raise reader.fail("column_name_clash", f"delivered column names collide with stored "
                          f"names: {clash}", line=1)
    stamps = PROVENANCE + BRONZE_ONLY
    out_schema = pa.schema([f.with_name(delta_column_name(f.name)) for f in delivered]
                           + stamps)
    now = dt.datetime.now(dt.timezone.utc)
    constant = {"_source": defn.source, "_file": landed.name, "_file_sha256": landed.sha256,
                "_ingested_at": now, "_run_id": run_id, "_landed_at": landed.landed_at}
    written = 0
    failure: list[BaseException] = []

    def stamped() -> Iterator[pa.RecordBatch]:
        nonlocal written
        try:
            for batch, numbers in reader.batches():
                n = batch.num_rows
                cols = list(batch.columns) + [
                    pa.repeat(pa.scalar(constant[f.name], f.type), n)
                    if f.name != "_row_number" else pa.array(numbers, pa.int64())
                    for f in stamps]
                written += n
                yield pa.RecordBatch.from_arrays(cols, schema=out_schema)
        except BaseException as exc:  # surfaced below; delta-rs would wrap it
            failure.append(exc)
            raise

    try:
        readers.check_bronze_schema(reader, lake.bronze(defn.source), out_schema)
        replace_file_rows(lake.bronze(defn.source),
                          pa.RecordBatchReader.from_batches(out_schema, stamped()),
                          landed.sha256)
    except IngestError:
        raise
    except SchemaMismatchError as exc:
        raise reader.fail("schema_conflict", "the file's column types conflict with earlier "
                          f"deliveries of this source ({type(exc).__name__})") from None
    except Exception as exc:  # never a library's message: it may quote a delivered value
        raise readers.write_failure(reader, failure[0] if failure else exc,
                                    from_reader=bool(failure)) from None
    if failure:
        raise readers.write_failure(reader, failure[0], from_reader=True) from None
    crash.point("ingest.after_bronze")
    write_quarantine(lake, defn.source, landed, run_id, now, reader.rejects, stage="ingest")
    rules: dict[str, int] = {}
    for r in reader.rejects:
        rules[r.rule] = rules.get(r.rule, 0) + 1
    return IngestResult(
        source=defn.source, file=landed.name, sha256=landed.sha256, bytes=landed.size,
        rows_read=reader.records, rows_written=written, rows_quarantined=len(reader.rejects),
        blank_lines=reader.blank_lines, duration_s=round(time.perf_counter() - started, 3),
        missing_columns=reader.missing_columns, extra_columns=reader.extra_columns,
        renamed_columns=renamed, rules=rules)


def write_quarantine(lake: Lake, source: str, landed: LandedFile, run_id: str,
                     when: dt.datetime, rejects: list[Reject], stage: str) -> None:
    """Replace this file's quarantined rows of this stage (an empty list clears them)."""
    path = lake.quarantine(source)
    if not rejects and not delta.exists(path):
        return
    n = len(rejects)
    table = pa.Table.from_pydict({
        "_source": [source] * n, "_file": [landed.name] * n,
        "_file_sha256": [landed.sha256] * n, "_row_number": [r.row_number for r in rejects],
        "_ingested_at": [when] * n, "_run_id": [run_id] * n, "_stage": [stage] * n,
        "_rule": [r.rule for r in rejects], "_column": [r.column for r in rejects],
        "_reason": [r.reason for r in rejects], "_raw": [r.raw for r in rejects],
    }, schema=QUARANTINE_SCHEMA)
    replace_file_rows(path, table, landed.sha256, f"_stage = '{stage}'")


def count_rows(path: LakePath, sha256: str, stage: str | None = None) -> int:
    """Rows of one file version in a Delta table, read back from storage."""
    expr = pc.field("_file_sha256") == sha256
    if stage is not None:
        expr = expr & (pc.field("_stage") == stage)
    return delta.count(path, filter=expr)
