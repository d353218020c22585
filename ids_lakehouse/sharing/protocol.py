"""The Delta Sharing protocol over the lakehouse's releases, as data (the HTTP layer is
server.py): each agreement is a share with one schema (its purpose), each released mart a
table, each published release version a table version. Every table version is one
immutable Parquet file, whose SHA-256 the release manifest records.

Protocol: https://github.com/delta-io/delta-sharing/blob/main/PROTOCOL.md (the "parquet"
response format: a protocol line, a metaData line, one file line per data file)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ids_lakehouse import releases
from ids_lakehouse.agreements import Agreement
from ids_lakehouse.config import Lake

# Share, schema and table names are matched against the agreement's own names, never used
# to build a path; this is only the first gate (a clear 404 for anything else).
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
PROTOCOL = {"protocol": {"minReaderVersion": 1}}
DELTA_TYPES = {pa.string(): "string", pa.large_string(): "string", pa.int8(): "byte",
               pa.int16(): "short", pa.int32(): "integer", pa.int64(): "long",
               pa.float32(): "float", pa.float64(): "double", pa.bool_(): "boolean",
               pa.date32(): "date"}


class NotFound(LookupError):
    """A share, schema, table or version the principal cannot see (or that does not
    exist: the two are not told apart)."""


@dataclass(frozen=True)
class TableVersion:
    share: str
    schema: str
    table: str
    version: int
    path: Path
    sha256: str
    size: int
    rows: int


def schema_name(agreement: Agreement) -> str:
    return agreement.purpose


# An operations agreement's release holds identified contact details: its partner asks
# for one person at a time through the lookups (which answer only what the partner
# already knows enough to confirm); a Delta Sharing table would hand over everyone.
LOOKUP_ONLY = ("operations",)


def tables(agreement: Agreement) -> list[str]:
    return [] if agreement.purpose in LOOKUP_ONLY else sorted(agreement.release)


def versions(lake: Lake, agreement: Agreement) -> list[int]:
    return [int(p.name[1:]) for p in releases.published(lake, agreement)]


def _manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / releases.MANIFEST).read_text())
    return manifest


def resolve(lake: Lake, agreement: Agreement, share: str, schema: str, table: str,
            version: int | None = None) -> TableVersion:
    """The released file of `table` at `version` (the latest by default)."""
    if share != agreement.id or schema != schema_name(agreement) or \
            table not in tables(agreement):
        raise NotFound("no such table")
    published = releases.published(lake, agreement)
    if version is not None:
        published = [p for p in published if int(p.name[1:]) == version]
    if not published:
        raise NotFound("no such version" if version is not None else "nothing released yet")
    folder = published[-1]
    entry = next((f for f in _manifest(folder)["files"] if f["mart"] == table), None)
    if entry is None:
        raise NotFound("no such table in this version")
    return TableVersion(share, schema, table, int(folder.name[1:]), folder / entry["name"],
                        entry["sha256"], entry["bytes"], entry["rows"])


def _field(f: pa.Field) -> dict[str, Any]:
    kind = DELTA_TYPES.get(f.type)
    if kind is None and pa.types.is_timestamp(f.type):
        kind = "timestamp"
    if kind is None:
        raise TypeError(f"column {f.name}: type {f.type} has no Delta Sharing type")
    return {"name": f.name, "type": kind, "nullable": f.nullable, "metadata": {}}


def metadata(tv: TableVersion) -> dict[str, Any]:
    schema = pq.read_schema(tv.path)
    struct = {"type": "struct", "fields": [_field(f) for f in schema]}
    table_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ids-lakehouse:{tv.share}.{tv.table}"))
    return {"metaData": {"id": table_id, "format": {"provider": "parquet"},
                         "schemaString": json.dumps(struct), "partitionColumns": [],
                         "version": tv.version, "numFiles": 1, "size": tv.size}}


def file_line(tv: TableVersion, url: str, expires_ms: int) -> dict[str, Any]:
    return {"file": {"url": url, "id": tv.sha256, "partitionValues": {}, "size": tv.size,
                     "stats": json.dumps({"numRecords": tv.rows}), "version": tv.version,
                     "expirationTimestamp": expires_ms}}
