"""The audit log: an append-only Delta table at `LAKE_ROOT/audit/events` of runs, ingests,
failures, releases, refusals and steward decisions. Details never hold personal data."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import pyarrow as pa
from deltalake import write_deltalake

from ids_lakehouse.config import Lake

AUDIT_SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("kind", pa.string()),          # e.g. ingest_succeeded, ingest_failed, run_failed
    ("actor", pa.string()),
    ("source", pa.string()),
    ("asset", pa.string()),
    ("partition", pa.string()),
    ("run_id", pa.string()),
    ("message", pa.string()),
    ("details", pa.string()),       # JSON
])


def record(lake: Lake, kind: str, message: str, *, actor: str = "system",
           source: str | None = None, asset: str | None = None, partition: str | None = None,
           run_id: str | None = None, details: dict | None = None) -> str:
    event_id = uuid.uuid4().hex
    row = {"event_id": event_id, "recorded_at": dt.datetime.now(dt.timezone.utc),
           "kind": kind, "actor": actor, "source": source, "asset": asset,
           "partition": partition, "run_id": run_id, "message": message,
           "details": json.dumps(details or {}, sort_keys=True, default=str)}
    write_deltalake(str(lake.audit()), pa.Table.from_pylist([row], schema=AUDIT_SCHEMA),
                    mode="append")
    return event_id


def read(lake: Lake) -> pa.Table:
    from ids_lakehouse import delta

    if not delta.exists(lake.audit()):
        return AUDIT_SCHEMA.empty_table()
    return delta.read(lake.audit())
