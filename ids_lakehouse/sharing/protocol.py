"""The Delta Sharing protocol over the lakehouse's releases, as data (the HTTP layer is
server.py): each agreement is a share with one schema (its purpose), each released mart a
table, each published release version a table version. Every table version is one
immutable Parquet file, whose SHA-256 the release manifest records.

Protocol: https://github.com/delta-io/delta-sharing/blob/main/PROTOCOL.md (the "parquet"
response format: a protocol line, a metaData line, one file line per data file)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ids_lakehouse import releases, storage
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


class Altered(RuntimeError):
    """A released file whose bytes no longer match its manifest's SHA-256: it is never
    served (the message names the agreement, version and table, never a value)."""


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


# A listing is trusted only when the folder's change stamp was older than this when it
# was taken: a publish within the file system's timestamp granularity of the listing
# could leave the stamp unchanged ("racy" stamps, as git handles its index).
_SETTLED_S = 2.0


class Shelf:
    """The published releases as the gateway serves them, read only when they change.

    A version is published by renaming its folder into the agreement's release folder,
    which changes that folder's stamp (mtime, number of links): the versions are listed
    again only then. A published version is immutable, so its manifest and each file's
    schema are read once. Every file is checked against its manifest's size and SHA-256
    before it is first served, and again whenever its inode, size or mtime change: altered
    bytes are never served. Files up to a quarter of `cache_bytes` are held in memory, up
    to `cache_bytes` in all (least recently served first out): a range request then costs
    no disk read or thread. The others, and files evicted, are read from disk, the range
    asked for only."""

    def __init__(self, lake: Lake, cache_bytes: int) -> None:
        self.lake = lake
        self.cache_bytes = cache_bytes
        self._listed: dict[Path, tuple[tuple[int, int], float, list[Path]]] = {}
        self._manifests: dict[Path, dict[str, Any]] = {}
        self._schemas: dict[Path, dict[str, Any]] = {}
        self._bytes: OrderedDict[Path, tuple[str, bytes]] = OrderedDict()  # sha256, bytes
        # Files checked against their manifest, as found then (stamp, sha256): a file
        # evicted from memory is served from disk without reading it whole again.
        self._verified: dict[Path, tuple[tuple[int, int, int, int], str]] = {}
        self._held = 0
        self._lock = threading.Lock()

    def published(self, agreement: Agreement) -> list[Path]:
        root = storage.local_only(releases.release_root(self.lake, agreement),
                                  "The sharing gateway")
        try:
            st = os.stat(root)
        except FileNotFoundError:
            return []
        stamp, now = (st.st_mtime_ns, st.st_nlink), time.time()
        held = self._listed.get(root)
        if held is not None and held[0] == stamp and held[1] - st.st_mtime > _SETTLED_S:
            return held[2]
        listed = [storage.local_only(p, "The sharing gateway")
                  for p in releases.published(self.lake, agreement)]
        if held is not None and held[0] != stamp:
            # Something under it changed (a version published, withdrawn or replaced):
            # nothing read from its folders before is trusted again.
            self._forget(root)
        self._listed[root] = (stamp, now, listed)
        return listed

    def _forget(self, root: Path) -> None:
        with self._lock:
            for cache in (self._manifests, self._schemas):
                for path in [p for p in cache if root in p.parents]:
                    del cache[path]
            for path in [p for p in self._bytes if root in p.parents]:
                self._held -= len(self._bytes.pop(path)[1])
            for path in [p for p in self._verified if root in p.parents]:
                del self._verified[path]

    def _manifest(self, folder: Path) -> dict[str, Any]:
        manifest = self._manifests.get(folder)
        if manifest is None:
            manifest = self._manifests[folder] = _manifest(folder)
        return manifest

    def resolve(self, agreement: Agreement, share: str, schema: str, table: str,
                version: int | None = None) -> TableVersion:
        """The released file of `table` at `version` (the latest by default)."""
        if share != agreement.id or schema != schema_name(agreement) or \
                table not in tables(agreement):
            raise NotFound("no such table")
        published = self.published(agreement)
        if version is not None:
            published = [p for p in published if int(p.name[1:]) == version]
        if not published:
            raise NotFound("no such version" if version is not None
                           else "nothing released yet")
        folder = published[-1]
        entry = next((f for f in self._manifest(folder)["files"] if f["mart"] == table),
                     None)
        if entry is None:
            raise NotFound("no such table in this version")
        return TableVersion(share, schema, table, int(folder.name[1:]),
                            folder / entry["name"], entry["sha256"], entry["bytes"],
                            entry["rows"])

    def metadata(self, tv: TableVersion) -> dict[str, Any]:
        line = self._schemas.get(tv.path)
        if line is None:
            line = self._schemas[tv.path] = metadata(tv)
        return line

    def cacheable(self, tv: TableVersion) -> bool:
        return tv.size * 4 <= self.cache_bytes

    def held(self, tv: TableVersion) -> bytes | None:
        """The file's bytes if they are in memory (the event loop may call this)."""
        with self._lock:
            held = self._bytes.get(tv.path)
            if held is None or held[0] != tv.sha256:
                return None
            self._bytes.move_to_end(tv.path)
            return held[1]

    def verified(self, tv: TableVersion, st: os.stat_result) -> bool:
        """Whether the file, as `st` finds it (inode, size, mtime), was checked against
        its manifest's SHA-256."""
        return self._verified.get(tv.path) == (_stamp(st), tv.sha256)

    def verify(self, tv: TableVersion) -> bytes | None:
        """Check the file against its manifest (blocking: a thread's work) unless it was
        checked as it is now. A file small enough to hold is read once, checked and kept
        (its bytes are returned); a larger one is hashed in 1 MiB reads. Raises Altered
        if its size or its bytes are not the released ones, or it changed while read."""
        st = os.stat(tv.path)
        if st.st_size != tv.size:
            raise self._altered(tv)
        if self.verified(tv, st):
            return None
        digest, data = hashlib.sha256(), None
        with open(tv.path, "rb") as f:
            if self.cacheable(tv):
                data = f.read(tv.size + 1)
                digest.update(data)
            else:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            after = os.fstat(f.fileno())
        if digest.hexdigest() != tv.sha256 or _stamp(after) != _stamp(st) or \
                (data is not None and len(data) != tv.size):
            raise self._altered(tv)
        self._verified[tv.path] = (_stamp(st), tv.sha256)
        if data is not None:
            self.keep(tv, data)
        return data

    def keep(self, tv: TableVersion, data: bytes) -> None:
        """Hold a checked file's bytes (the least recently served go first)."""
        with self._lock:
            replaced = self._bytes.pop(tv.path, None)
            self._held += len(data) - (len(replaced[1]) if replaced else 0)
            self._bytes[tv.path] = (tv.sha256, data)
            while self._held > self.cache_bytes and len(self._bytes) > 1:
                self._held -= len(self._bytes.popitem(last=False)[1][1])

    @staticmethod
    def _altered(tv: TableVersion) -> Altered:
        return Altered(f"release {tv.share} v{tv.version}: the file of {tv.table} does not "
                       f"match its manifest's size and SHA-256; it is not served")


CHUNK = 1024 * 1024     # reads of a file served from disk


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


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
