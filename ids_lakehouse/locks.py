"""Exclusive locks on the lake, so two runs that write the same tables never interleave:
the run queue already allows one downstream refresh at a time, but runs launched outside
it (two `make demo`s, a materialization from a notebook) are serialised here too.

A lock is an advisory `flock` on `LAKE_ROOT/restricted/_locks/<name>.lock`: the kernel releases it
when its holder dies, so a kill -9 never leaves a stale lock. For a lake on an object
store, which has no such lock, the file is in the lake's local folder (IDS_LAKE_LOCAL): it
serialises the processes of one machine; between machines the run queue is the guard
(and the audit log serialises its own commits: audit.commit)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ids_lakehouse.config import Lake


class LockTimeout(RuntimeError):
    pass


@contextmanager
def exclusive(lake: Lake, name: str, timeout_s: float = 3600.0, poll_s: float = 0.5
              ) -> Iterator[None]:
    folder = lake.locks()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"another run has held the lake's {name!r} lock for "
                                      f"over {timeout_s:.0f}s") from None
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock
