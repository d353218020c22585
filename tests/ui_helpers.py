"""Helpers for the UI check: run `dagster dev` in its own process group and drive the
system Chromium with Playwright (its own browser download is not used).

Both helpers clean up after themselves even when the test fails, and report any process that
outlived the normal shutdown (found by a marker unique to the run) so a leak fails the test
instead of piling up on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import psutil

ROOT = Path(__file__).resolve().parents[1]

# Without the background-networking flags Chromium's own connections are refused on a closed
# network and slow start-up; a fresh user-data dir per run keeps state out of the test.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace {
  locationEntries { name loadStatus locationOrLoadError { __typename
    ... on PythonError { message } } } } } }"""


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(base: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{base}/graphql", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        payload = json.loads(resp.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    """`dagster dev` ignores SIGTERM when started in the background: interrupt the whole
    process group (it shuts its webserver, code server and daemon down), then kill it."""
    pgid = proc.pid
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def sweep(match) -> list[str]:
    """Kill every process for which match(process) holds; return what was found."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and match(p):
                found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])[:200]}")
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class DagsterDev:
    """A running `dagster dev`; `leftovers` lists processes that outlived the shutdown."""

    def __init__(self, base: str, home: Path, log: Path):
        self.base, self.home, self.log = base, home, log
        self.leftovers: list[str] = []


def _wait_ready(server: DagsterDev, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({proc.returncode}):\n"
                               f"{server.log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{server.base}/server_info", timeout=5):
                pass
            ws = graphql(server.base, WORKSPACE_QUERY, timeout=10)["workspaceOrError"]
            entries = ws.get("locationEntries", [])
            last = repr(entries)
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries
                          if e["locationOrLoadError"]["__typename"] == "PythonError"]
                if errors:
                    raise RuntimeError(f"code location failed to load: {errors}")
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.5)  # polling interval, not a wait for an event
    raise TimeoutError(f"dagster dev not ready after {timeout}s ({last}):\n"
                       f"{server.log.read_text()[-4000:]}")


@contextlib.contextmanager
def dagster_dev(workdir: Path, timeout: float = 120) -> Iterator[DagsterDev]:
    """Start `dagster dev -w workspace.yaml` on a free port of 127.0.0.1 with throwaway lake,
    landing and instance dirs; yield once the code location is LOADED; always stop every
    process it started."""
    from pipelines.instance import ensure_instance

    home = (workdir / "dagster_home").resolve()
    env = {**os.environ,
           "LAKE_ROOT": str(workdir / "lake"),
           "LANDING_ROOT": str(workdir / "landing"),
           "DAGSTER_HOME": str(home),
           "IDS_PSEUDONYM_KEY": os.environ.get("IDS_PSEUDONYM_KEY", "")
           if len(os.environ.get("IDS_PSEUDONYM_KEY", "")) >= 32
           else "ui-test-only-key-" + "0" * 32}
    (workdir / "landing").mkdir(parents=True, exist_ok=True)
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        ensure_instance()  # writes the embedded (SQLite) dagster.yaml into the fresh home
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved

    port = free_port()
    server = DagsterDev(f"http://127.0.0.1:{port}", home, workdir / "dagster_dev.log")
    dagster = Path(sys.executable).parent / "dagster"
    with open(server.log, "wb") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        _wait_ready(server, proc, timeout)
        yield server
    finally:
        _kill_group(proc)

        def ours(p: psutil.Process) -> bool:
            # Anything that left the process group but still runs on this run's instance.
            return p.environ().get("DAGSTER_HOME") == str(home)

        server.leftovers = sweep(ours)


class Browser:
    """A Playwright page in the system Chromium; `leftovers` as for DagsterDev."""

    def __init__(self, page, profile: Path):
        self.page, self.profile = page, profile
        self.leftovers: list[str] = []


@contextlib.contextmanager
def chromium(workdir: Path, viewport=(1920, 1080), init_script: str = "",
             scale: float = 2) -> Iterator[Browser]:
    """The system Chromium with a fresh profile, closed (and checked closed) afterwards."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    assert exe, "Chromium is not installed: run `make browser` (part of `make test`)"
    profile = (workdir / "chromium-profile").resolve()
    browser = None
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=exe, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
                device_scale_factor=scale)  # sharper screenshots; same CSS layout
            try:
                if init_script:
                    context.add_init_script(init_script)
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(60_000)
                browser = Browser(page, profile)
                yield browser
            finally:
                context.close()
    finally:
        found = sweep(lambda p: any(str(profile) in a for a in (p.info["cmdline"] or [])))
        if browser is not None:
            browser.leftovers = found
