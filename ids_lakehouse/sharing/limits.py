"""Per-agreement allowances shared by every process serving the lake: people looked up
and query cells answered per minute. Held in SQLite (restricted
`sharing/limits.sqlite`): one transaction checks and takes, so `serve --workers N` allows
what one worker would, not N times as much. (Per-token request rates stay per process:
they guard the server, not the data.)"""

from __future__ import annotations

import sqlite3
import threading
import time

from ids_lakehouse.config import Lake
from ids_lakehouse.sharing import store

WINDOW_S = 60.0
SCHEMA = ("CREATE TABLE IF NOT EXISTS uses (name TEXT NOT NULL, key TEXT NOT NULL, "
          "at REAL NOT NULL, units INTEGER NOT NULL)",
          "CREATE INDEX IF NOT EXISTS by_key ON uses (name, key, at)")


class SharedLimit:
    """At most `per_minute` units per key in any 60 s, across processes."""

    def __init__(self, lake: Lake, name: str, per_minute: int) -> None:
        self.lake, self.name, self.per_minute = lake, name, per_minute
        self.path = lake.table("sharing", "limits.sqlite")
        # One connection per thread, kept: opening and closing one per lookup was a fifth
        # of the gateway's time per single lookup. One thread of a process at a time in
        # the transaction: the others wait on this lock, not in SQLite's busy handler,
        # whose sleeps (up to 100 ms each) made the tail of 32 concurrent lookups.
        self.local = threading.local()
        self.one_at_a_time = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self.local, "con", None)
        if con is None:
            con = self.local.con = store.connect(self.lake, self.path, SCHEMA, durable=False)
        return con

    def allow(self, key: str, units: int = 1) -> bool:
        now = time.time()       # wall clock: the processes share it, not their monotonic
        con = self._connection()
        with self.one_at_a_time, store.transaction(con):
            con.execute("DELETE FROM uses WHERE name = ? AND key = ? AND at < ?",
                        (self.name, key, now - WINDOW_S))
            used = con.execute("SELECT coalesce(sum(units), 0) FROM uses WHERE name = ? "
                               "AND key = ?", (self.name, key)).fetchone()[0]
            if used + units > self.per_minute:
                return False
            con.execute("INSERT INTO uses VALUES (?, ?, ?, ?)", (self.name, key, now, units))
            return True
