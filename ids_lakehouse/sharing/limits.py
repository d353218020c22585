"""Per-agreement allowances shared by every process serving the lake: people looked up
and query cells answered per minute. Held in SQLite (restricted
`sharing/limits.sqlite`): one transaction checks and takes, so `serve --workers N` allows
what one worker would, not N times as much. (Per-token request rates stay per process:
they guard the server, not the data.)

Units are counted in one row per key and second, and a check counts the current second
and the 60 before it: every use of the last 60 s counts (and some up to 61 s old: the
limit errs strict). A row per use made every check sum a minute of rows (30,000 at 500
lookups a second, a millisecond each, growing with the load it guards)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence

from ids_lakehouse.config import Lake
from ids_lakehouse.sharing import store

WINDOW_S = 60
SCHEMA = ("CREATE TABLE IF NOT EXISTS per_second (name TEXT NOT NULL, key TEXT NOT NULL, "
          "second INTEGER NOT NULL, units INTEGER NOT NULL, "
          "PRIMARY KEY (name, key, second)) WITHOUT ROWID",)


class SharedLimit:
    """At most `per_minute` units per key in any 60 seconds, across processes."""

    def __init__(self, lake: Lake, name: str, per_minute: int) -> None:
        self.lake, self.name, self.per_minute = lake, name, per_minute
        self.path = lake.local("sharing", "limits.sqlite")
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
        return self.allow_each(key, [units])[0]

    def allow_each(self, key: str, asks: Sequence[int]) -> list[bool]:
        """For each ask in turn (one transaction for all), whether its units fit in what
        is left of the key's allowance; those that fit are taken."""
        # Wall clock: the processes share it, not their monotonic clocks.
        second = int(time.time())
        con = self._connection()
        with self.one_at_a_time, store.transaction(con):
            con.execute("DELETE FROM per_second WHERE name = ? AND key = ? AND second < ?",
                        (self.name, key, second - WINDOW_S))
            used = con.execute("SELECT coalesce(sum(units), 0) FROM per_second WHERE "
                               "name = ? AND key = ?", (self.name, key)).fetchone()[0]
            out = []
            for units in asks:
                out.append(used + units <= self.per_minute)
                used += units if out[-1] else 0
            taken = sum(u for u, ok in zip(asks, out, strict=True) if ok)
            if taken:
                con.execute("INSERT INTO per_second VALUES (?, ?, ?, ?) ON CONFLICT "
                            "(name, key, second) DO UPDATE SET units = units + excluded.units",
                            (self.name, key, second, taken))
            return out
