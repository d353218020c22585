"""Crash points for recovery tests. When IDS_CRASH_DIR is set and holds a file named after a
point, the first process to reach that point removes the file and kills itself with
SIGKILL: a one-shot kill -9 at an exact place, so a test can prove that a re-run converges
to what an uninterrupted run produces. Without IDS_CRASH_DIR (production) it does nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

POINTS = (
    "ingest.after_bronze",        # bronze rows committed, quarantine and ledger not yet
    "ingest.before_decision",     # rows committed, the delivery not yet accepted
    "conform.after_first_source",  # one source's silver rows replaced, others not yet
    "identity.before_xref",       # index and events written, person_xref not yet
    "marts.after_first_mart",     # one gold mart replaced, the others not yet
    "release.after_files",        # a release's files staged, not yet published
    "audit.before_anchor",        # an audit event committed, its anchor not yet written
)
CLI_POINTS = (
    "steward.after_audit",        # a decision audited, not yet recorded
)


def point(name: str) -> None:
    folder = os.environ.get("IDS_CRASH_DIR")
    if not folder:
        return
    try:
        (Path(folder) / name).unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
