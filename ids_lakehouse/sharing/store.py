"""The gateway's own state shared by its worker processes (the query budget ledger, the
per-agreement allowances): SQLite files in the restricted zone, created private, each
check-and-take one IMMEDIATE transaction (the processes queue on SQLite's lock)."""

from __future__ import annotations

import sqlite3
import time
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
        _wal(con)
        for statement in schema:
            con.execute(statement)
        _READY.add(path)
    return con


_READY: set[Path] = set()


def _wal(con: sqlite3.Connection) -> None:
    """Write-ahead logging, kept in the file. Switching to it takes the file for itself,
    without waiting: two worker processes opening a new file at once had one fail with
    "database is locked" (a lookup answered 500). Already set: nothing to take."""
    for attempt in range(100):
        if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.02)


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
