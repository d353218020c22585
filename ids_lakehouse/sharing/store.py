"""The gateway's own state shared by its worker processes (the query budget ledger, the
per-agreement allowances): SQLite files in the restricted zone, created private, each
check-and-take one IMMEDIATE transaction (the processes queue on SQLite's lock)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ids_lakehouse import zones
from ids_lakehouse.config import Lake


def connect(lake: Lake, path: Path, schema: Sequence[str], durable: bool) -> sqlite3.Connection:
    """A connection (the caller closes it) with `schema` (CREATE ... IF NOT EXISTS) in
    place. `durable`: a committed transaction survives a power cut, not only kill -9."""
    fresh = not path.exists()
    if fresh:
        zones.prepare(lake.root)    # private umask: restricted like its zone
        path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    if fresh or path not in _READY:     # once per file and process, not per request
        con.execute("PRAGMA journal_mode=WAL")      # kept in the file
        for statement in schema:
            con.execute(statement)
        _READY.add(path)
    return con


_READY: set[Path] = set()


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
