"""Steward console benchmark: page times as a signed-in steward sees them.

Input: the lake the lookups benchmark builds through the whole product path
(`bench.lookups.built_lake`: land -> bronze -> conform -> identity -> marts -> releases)
at the demo's size (5,000 people, `make demo`'s default) and, in full mode, at 100,000;
copied. The server is the product's `python -m ids_lakehouse serve` (one worker) in its
own process group on 127.0.0.1; the steward's account is made by `console-user add`; the
client (requests, in this process, sharing the 2 cores) signs in through the form and
opens each page in turn, round after round. A page's time is the whole request: the
session check, reading the lake, rendering, and its audit event (spooled; a reveal's is
committed to the audit log's Delta table before the values are sent)."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import log
from bench.lookups import Gateway, _copy, _pct, built_lake

SECTION = "console"
STEWARD = "bench-steward@ids.example.gov"
PASSWORD = "bench console passphrase"
REPO = Path(__file__).resolve().parents[1]


def _sign_in(url: str) -> Any:
    import requests

    s = requests.Session()
    nonce = re.search(r'name="nonce" value="([^"]+)"', s.get(url + "/console/login").text)
    assert nonce, "no sign-in form"
    r = s.post(url + "/console/login", data={"nonce": nonce[1], "next": "/console/",
                                             "email": STEWARD, "password": PASSWORD})
    if r.status_code != 200:
        raise RuntimeError(f"sign-in failed: {r.status_code}")
    return s


def measure(persons: int, rounds: int) -> dict[str, Any]:
    from bench.common import remove, scratch_dir
    from bench.lookups import env_for

    folder = built_lake(persons)
    work = scratch_dir(f"console-{persons}")
    try:
        _copy(folder, work)
        done = subprocess.run(
            [sys.executable, "-m", "ids_lakehouse", "console-user", "add", "--email", STEWARD,
             "--role", "steward", "--operator", "bench@ids.example.gov", "--password-stdin"],
            input=PASSWORD + "\n", text=True, env=env_for(work), cwd=REPO,
            capture_output=True)
        if done.returncode:
            raise RuntimeError(done.stderr)
        with Gateway(work, 1) as gw:
            s = _sign_in(gw.url)
            csrf = re.search(r'name="csrf" value="([^"]+)"', s.get(gw.url + "/console/").text)
            assert csrf
            review = s.get(gw.url + "/console/review").text
            keys = re.findall(r"/console/review/([0-9a-f]{20})", review)
            total = re.search(r"(\d+) pairs? of records", review)
            waiting = int(total[1]) if total else 0
            pages: dict[str, tuple[str, str]] = {
                "home": ("GET", "/console/"), "review queue": ("GET", "/console/review"),
                "decisions": ("GET", "/console/decisions"),
                "quarantine": ("GET", "/console/quarantine"),
                "releases ledger": ("GET", "/console/releases"),
                "catalog": ("GET", "/console/catalog"),
                "catalog search": ("GET", "/console/catalog?q=dob"),
                "table (silver/person_record)": ("GET",
                                                 "/console/catalog/silver/person_record"),
                "table (gold/research_person)": ("GET",
                                                 "/console/catalog/gold/research_person")}
            if keys:
                pages["review pair"] = ("GET", f"/console/review/{keys[0]}")
                pages["review pair, revealed"] = ("POST", f"/console/review/{keys[0]}/reveal")
            times: dict[str, list[float]] = {p: [] for p in pages}
            for _ in range(rounds):
                for name, (method, path) in pages.items():
                    t0 = time.perf_counter()
                    r = s.get(gw.url + path) if method == "GET" else \
                        s.post(gw.url + path, data={"csrf": csrf[1]})
                    times[name].append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"{name}: {r.status_code}")
        everything = [t for v in times.values() for t in v]
        return {"persons": persons, "review_pairs": waiting, "rounds": rounds,
                "pages": {p: (statistics.median(v), _pct(v, 0.95), max(v))
                          for p, v in times.items()},
                "all_p95": _pct(everything, 0.95), "all_median": statistics.median(everything)}
    finally:
        remove(work)


def run(quick: bool, command: str) -> str:
    sizes = [5_000] if quick else [5_000, 100_000]
    rounds = 10 if quick else 50
    results = []
    for persons in sizes:
        log(f"console: {persons:,} people, {rounds} rounds")
        results.append(measure(persons, rounds))
    out = ["## Steward console: page times", "",
           f"`{command}`. " + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " "), "",
           "Target (issue 19): p95 page time <= 300 ms on the demo lake.", ""]
    for r in results:
        out += [f"### {r['persons']:,} people ({r['review_pairs']} pairs in the review queue, "
                f"{r['rounds']} rounds)", "",
                f"All pages: median {r['all_median']:.0f} ms, **p95 {r['all_p95']:.0f} ms**.",
                "", "| page | median ms | p95 ms | max ms |", "|---|---:|---:|---:|"]
        out += [f"| {p} | {m:.0f} | {p95:.0f} | {mx:.0f} |"
                for p, (m, p95, mx) in r["pages"].items()]
        out.append("")
    return "\n".join(out)
