"""Shared benchmark machinery.

* `run_in_subprocess(task, **params)` runs `python -m bench.worker <task> <json>` in a fresh
  interpreter. The task times only its own measured section (`perf_counter`); the worker adds
  the process's own peak RSS (VmHWM; see `rss_mb`) and prints one JSON line.
* `Stats` / `summarize`: median, min and max of several runs (the machine is noisy, so no
  single run is quoted).
* `machine_info()`: cores, RAM, CPU, Python and key package versions, date.
* `write_section(name, body)`: replaces only the text between
  `<!-- bench:<name>:start -->` and `<!-- bench:<name>:end -->` in docs/BENCHMARKS.md, so each
  benchmark (header, ingest, conform, linkage, pipeline, ...) owns its own section.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"          # git-ignored: cached inputs and scratch lakes
SCRATCH = OUT / "scratch"
DOC = REPO / "docs" / "BENCHMARKS.md"
RESULT_PREFIX = "BENCH_RESULT "
KEY_PACKAGES = ("dagster", "deltalake", "pyarrow", "polars", "duckdb", "splink", "pandera",
                "numpy")


# -- inside the worker ------------------------------------------------------------------

def rss_mb() -> float:
    """Peak RSS of this process so far, MiB.

    Read from VmHWM in /proc/self/status: `getrusage(...).ru_maxrss` is NOT reset by execve
    on Linux, so a worker spawned by a large parent would report the parent's peak (and
    RUSAGE_CHILDREN is a maximum over all children, not something one can take deltas of).
    VmHWM belongs to the process's own address space, which exec starts afresh."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall seconds of `fn()` and its result. Use inside a worker task."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def time_calls(phases: dict[str, float], module, name: str, phase: str) -> None:
    """Replace `module.name` by a wrapper that adds each call's wall seconds to
    `phases[phase]` (callers reach it through the module attribute); no-op if absent."""
    fn = getattr(module, name, None)
    if fn is None:
        return

    def timed_fn(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - t0

    setattr(module, name, timed_fn)


# -- in the parent ----------------------------------------------------------------------

@dataclass
class Sample:
    """One run of one task in its own process."""

    seconds: float          # the measured section only
    peak_rss_mb: float      # peak RSS (VmHWM) of the whole worker process
    base_rss_mb: float      # peak RSS just before the measured section (imports, setup)
    process_s: float        # the whole subprocess, start-up and imports included
    extra: dict = field(default_factory=dict)


class BenchError(RuntimeError):
    pass


def run_in_subprocess(task: str, timeout: float = 3600, **params) -> Sample:
    """Run `bench.worker` task `task` ("module:function" under bench/) in a new process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    cmd = [sys.executable, "-m", "bench.worker", task, json.dumps(params, default=str)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"worker {task} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    data = json.loads(lines[-1][len(RESULT_PREFIX):])
    return Sample(seconds=data.pop("seconds"), peak_rss_mb=data.pop("peak_rss_mb"),
                  base_rss_mb=data.pop("base_rss_mb"), process_s=process_s, extra=data)


def scratch_dir(prefix: str) -> Path:
    """A fresh, empty directory for one run; remove it with `shutil.rmtree` afterwards."""
    path = SCRATCH / f"{prefix}-{uuid.uuid4().hex[:10]}"
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    """Delete a scratch directory; retried once, and a leftover is reported, not fatal."""
    for attempt in range(2):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if attempt:
                log(f"warning: could not remove {path}: {exc}")
            time.sleep(0.5)


def warm_page_cache(*paths: Path) -> None:
    """Read files once so the first timed run does not pay for a cold disk."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


@dataclass(frozen=True)
class Stats:
    median: float
    min: float
    max: float
    n: int

    def fmt(self, spec: str = ".2f", unit: str = "") -> str:
        return (f"{self.median:{spec}}{unit} ({self.min:{spec}}–{self.max:{spec}})")


def summarize(values: Sequence[float]) -> Stats:
    if not values:
        raise ValueError("no values")
    return Stats(statistics.median(values), min(values), max(values), len(values))


def log(msg: str) -> None:
    print(f"[bench {dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


# -- machine description ----------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return float("nan")


def machine_info() -> dict:
    versions = {}
    for pkg in KEY_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ids_lakehouse"],
                               cwd=REPO, text=True, capture_output=True,
                               timeout=10).stdout.strip()
        code = f"{rev or 'unknown'}" + (" + uncommitted changes in ids_lakehouse/"
                                        if dirty else "")
    except (OSError, subprocess.SubprocessError):
        code = "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(), "usable_cores": usable, "ram_gib": round(_ram_gib(), 1),
        "cpu": _cpu_model(), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "versions": versions, "code": code,
    }


def header_markdown(info: dict, command: str) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return "\n".join([
        f"Last run: **{info['date']}**, command `{command}`.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable) |",
        f"| RAM | {info['ram_gib']} GiB |",
        f"| OS | {info['os']} |",
        f"| Python | {info['python']} |",
        f"| packages | {pkgs} |",
        f"| code (git) | {info['code']} |",
        "",
        "The machine is shared and noisy: every figure is the **median (min–max)** of several",
        "runs, each in a fresh process, and every ratio is against a baseline measured in the",
        "same invocation, with runs of the compared variants interleaved.",
    ])


# -- docs/BENCHMARKS.md -----------------------------------------------------------------

DOC_TITLE = """# Benchmarks

Produced by `make bench` (full sizes) and `make bench-quick` (small sizes, a smoke check);
`python -m bench --only NAME` reruns one benchmark. Each section below is rewritten only by
its own benchmark, between its `bench:<name>` markers; text outside the markers is kept.
"""


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"bad section name {name!r}")
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_section(name: str, body: str, doc: Path = DOC, after: Sequence[str] = ()) -> None:
    """Replace section `name` of `doc`, or add it after the last of the sections `after`
    that the doc has (else at the end)."""
    start, end = _markers(name)
    text = doc.read_text(encoding="utf-8") if doc.exists() else DOC_TITLE
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        anchors = [_markers(a)[1] for a in after if _markers(a)[1] in text]
        anchor = anchors[-1] if anchors else None
        if anchor:
            i = text.index(anchor) + len(anchor)
            text = text[:i] + "\n\n" + block + text[i:]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def append_to_snapshot(original: Path, rows, codec: str, out: Path) -> None:
    """A snapshot source's next delivery: the original file's bytes plus `rows` (a polars
    frame with the file's columns), written to `out` in the file's encoding."""
    base = original.read_bytes()
    header = base.split(b"\n", 1)[0].decode(codec).strip().split(",")
    if header != rows.columns:
        raise ValueError(f"{original.name}: extra columns {rows.columns} != {header}")
    if not base.endswith(b"\n"):
        base += b"\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base + rows.write_csv(include_header=False).encode(codec, "replace"))
