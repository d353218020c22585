"""A real `dagster-daemon` for tests: started as a subprocess in its own process group on a
temporary instance, bounded in time, and stopped (SIGTERM, then SIGKILL) whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_daemon(env: dict[str, str], log: Path, lifetime_s: int = 900
                   ) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` over the repository's workspace with `env`; it is killed after
    `lifetime_s` even if the test hangs (`timeout`), and on leaving the block."""
    daemon = Path(sys.executable).parent / "dagster-daemon"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["timeout", "-s", "TERM", str(lifetime_s), str(daemon), "run",
             "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            # The group may outlive its leader (code server, run workers): make sure.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(condition: Callable[[], object], what: str, timeout_s: float, log: Path,
             poll_s: float = 1.0):
    """Poll until `condition()` is truthy; fail with the daemon's last lines otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n"
                         f"--- daemon log (tail) ---\n{tail}")
