"""A delivery is accepted or rejected as a whole.

Ingesting a file takes several Delta commits (its bronze rows, then its quarantined rows),
and a process can die between any two of them. So no reader trusts bronze directly: the
ledger `bronze/_deliveries` says which file versions were ACCEPTED (every record is in
bronze or in quarantine, and the counts reconcile) and which were REJECTED (with rule and
reason, never a delivered value). Its row is the last commit of an ingest; until it exists
the delivery is invisible, and a re-run of the same file replaces whatever a dead attempt
left. Conform reads accepted deliveries only, so a failed delivery can never replace a
source's silver rows."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ids_lakehouse import crash, delta
from ids_lakehouse.config import Lake
from ids_lakehouse.ingest.bronze import IngestResult, file_predicate, ingest_file
from ids_lakehouse.ingest.errors import IngestError
from ids_lakehouse.ingest.landing import LandedFile
from ids_lakehouse.ingest.reconcile import Reconciliation, reconcile
from ids_lakehouse.sources import SourceDefinition
from ids_lakehouse.storage import LakePath

ACCEPTED, REJECTED = "accepted", "rejected"
LEDGER = "_deliveries"
LEDGER_SCHEMA = pa.schema([
    ("source", pa.string()), ("file", pa.string()), ("file_sha256", pa.string()),
    ("landed_at", pa.timestamp("us", tz="UTC")), ("status", pa.string()),
    ("rule", pa.string()), ("reason", pa.string()), ("line", pa.int64()),
    ("rows_read", pa.int64()), ("rows_written", pa.int64()),
    ("rows_quarantined", pa.int64()), ("run_id", pa.string()),
    ("decided_at", pa.timestamp("us", tz="UTC")),
    # JSON list of the declared columns the file did not have (declared names only).
    ("missing_columns", pa.string()),
])


def ledger_path(lake: Lake) -> LakePath:
    return lake.table("bronze", LEDGER)


@dataclass(frozen=True)
class Delivery:
    """What became of one landed file."""

    landed: LandedFile
    status: str
    result: IngestResult | None = None
    reconciliation: Reconciliation | None = None
    error: IngestError | None = None

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


def ingest_delivery(defn: SourceDefinition, landed: LandedFile, lake: Lake,
                    run_id: str) -> Delivery:
    """Ingest one landed file and decide it: accepted when every delivered record is in
    bronze or quarantine, rejected (its rows withdrawn) otherwise."""
    try:
        result = ingest_file(defn, landed, lake, run_id)
    except IngestError as exc:
        _withdraw(lake, defn.source, landed.sha256)
        _decide(lake, landed, REJECTED, run_id, rule=exc.rule, reason=exc.reason,
                line=exc.line)
        return Delivery(landed, REJECTED, error=exc)
    rec = reconcile(defn, landed, lake, result.rows_read)
    if not rec.passed:
        _withdraw(lake, defn.source, landed.sha256)
        error = IngestError(defn.source, landed.name, "file_reconciles",
                            "the records in the file do not equal the rows stored in bronze "
                            "and quarantine", expected=str(rec.delivered),
                            found=f"{rec.bronze} + {rec.quarantined}")
        _decide(lake, landed, REJECTED, run_id, rule=error.rule, reason=error.reason,
                result=result)
        return Delivery(landed, REJECTED, result, rec, error)
    crash.point("ingest.before_decision")
    _decide(lake, landed, ACCEPTED, run_id, result=result)
    return Delivery(landed, ACCEPTED, result, rec)


def _withdraw(lake: Lake, source: str, sha256: str) -> None:
    """Remove whatever rows of this file version an attempt wrote."""
    for path, extra in ((lake.bronze(source), ""),
                        (lake.quarantine(source), "_stage = 'ingest'")):
        if delta.exists(path):
            delta.table(path).delete(file_predicate(sha256, extra))


def _decide(lake: Lake, landed: LandedFile, status: str, run_id: str, *,
            rule: str | None = None, reason: str | None = None, line: int | None = None,
            result: IngestResult | None = None) -> None:
    row = {"source": landed.source, "file": landed.name, "file_sha256": landed.sha256,
           "landed_at": landed.landed_at, "status": status, "rule": rule, "reason": reason,
           "line": line, "rows_read": result.rows_read if result else None,
           "rows_written": result.rows_written if result else None,
           "rows_quarantined": result.rows_quarantined if result else None,
           "run_id": run_id, "decided_at": dt.datetime.now(dt.timezone.utc),
           "missing_columns": json.dumps(result.missing_columns) if result else None}
    delta.replace(ledger_path(lake), pa.Table.from_pylist([row], schema=LEDGER_SCHEMA),
                  file_predicate(landed.sha256, f"source = '{landed.source}'",
                                 column="file_sha256"))


def ledger(lake: Lake, source: str | None = None) -> pa.Table:
    path = ledger_path(lake)
    if not delta.exists(path):
        return LEDGER_SCHEMA.empty_table()
    return delta.read(path, filter=None if source is None else pc.field("source") == source)


def accepted(lake: Lake, source: str) -> pa.Table:
    """The accepted deliveries of a source, oldest landed first."""
    t = ledger(lake, source)
    t = t.filter(pc.field("status") == ACCEPTED)
    return t.sort_by([("landed_at", "ascending"), ("file", "ascending")])
