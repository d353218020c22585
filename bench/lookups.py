"""Sharing gateway benchmark: real-time lookups against the master person index, and a
Delta Sharing read of a released table against reading its Parquet file directly.

Input: a generated population taken through the whole product path by the pipeline
benchmark's own layer workers (land -> bronze -> conform -> identity -> marts -> releases,
`bench.pipeline.task_layer`), the built lake cached per size under bench/out/lookups/
(git-ignored). The gateway is the product's `python -m ids_lakehouse serve` in its own
process group (uvicorn, `--workers`), on 127.0.0.1; recipients' tokens are issued by
`python -m ids_lakehouse share-profile`.

Lookups: people as the requesting (health) agency knows them, made by the generator's own
error model (`synth.agencies.demographics`: typos, nicknames, swapped names, transposed
or missing dates of birth, movers at an old address, missing SSNs; no SSN at all for half
of them) for three kinds of people: travellers (inside the agreement's population: a
match is expected), people the index holds from other agencies only (outside it: "no
match" is the only right answer), and people of another generated population (nowhere:
"no match"). Precision: of the answers "match", the share whose person_id's records are
the submitted person's (by the generator's truth, the person holding most of the
person_id's records). Throughput and latency from client threads in another process
(they share the 2 cores with the server: the figures include the client's cost).

Delta Sharing read: the stock `delta-sharing` client (`load_as_pandas` of the release's
research person file) through the gateway, against `pyarrow.parquet.read_table` of the
same file then `to_pandas`, interleaved."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import OUT, REPO, BenchError, log, run_in_subprocess

SECTION = "lookups"
ROOT = OUT / "lookups"
GEN_VERSION = 1
KEY = "bench-pipeline-test-key-0123456789abcdef"
OPERATIONS = "dsa-traveller-followup"
RESEARCH = "dsa-housing-education-research"
OPERATOR = "bench@ids.example.gov"


# -- preparation (cached) ---------------------------------------------------------------

def built_lake(persons: int) -> Path:
    """A lake (and its Dagster home and landing zone) built through the product's path
    from `persons` generated people; cached."""
    from bench import pipeline

    # The lake holds a trained linkage model: a lake built with other comparisons is
    # another lake (the gateway's scorer refuses its model).
    from ids_lakehouse.identity import linkage

    design = hashlib.sha256(repr(linkage.current_design()).encode()).hexdigest()[:8]
    folder = ROOT / f"persons_{persons}_s{pipeline.SEED}_g{GEN_VERSION}_m{design}"
    done = folder / "built.json"
    if done.exists():
        return folder
    prep = pipeline.prepared(persons)
    progress = folder / "layers.json"       # layers built so far: a failed build resumes
    layers = json.loads(progress.read_text()) if progress.exists() else {}
    if not layers:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copytree(Path(prep["folder"]) / "landing", folder / "landing",
                        copy_function=os.link)
    for layer in pipeline.LAYERS:
        if layer in layers:
            continue
        t0 = time.perf_counter()
        s = run_in_subprocess("pipeline:task_layer", timeout=4 * 3600, layer=layer,
                              work=str(folder))
        if s.extra["runs_failed"]:
            raise BenchError(f"{layer}: runs failed: {s.extra['runs_failed']}")
        layers[layer] = time.perf_counter() - t0
        progress.write_text(json.dumps(layers))
        log(f"built {persons:,}: {layer} in {layers[layer]:.0f}s")
    # The lake's name (its audit signing key) is where it was built: kept if it moves.
    (folder / "origin").write_text(str((folder / "lake").resolve()))
    done.write_text(json.dumps({"persons": persons, "layers_s": layers}, indent=2))
    return folder


def env_for(folder: Path) -> dict[str, str]:
    """The environment of the lake in `folder`; a copy (or a cache that moved) keeps the
    built lake's name (its audit signing key), as a lake that moves does."""
    origin = (folder / "origin").read_text() if (folder / "origin").exists() else \
        str((folder / "lake").resolve())
    return os.environ | {"LAKE_ROOT": str(folder / "lake"),
                         "LANDING_ROOT": str(folder / "landing"),
                         "DAGSTER_HOME": str(folder / "dagster_home"),
                         "IDS_LAKE_NAME": origin,
                         "IDS_PSEUDONYM_KEY": KEY, "PYTHONPATH": str(REPO)}


# -- one measurement: a copy of the built lake, the gateway in its own process -------------

def _copy(folder: Path, work: Path) -> None:
    """The lake by hard links (Delta files are never rewritten, only added), the Dagster
    home and landing truth by copy (the audit anchors are appended to in place)."""
    shutil.copytree(folder / "lake", work / "lake", copy_function=os.link)
    (work / "origin").write_text(env_for(folder)["IDS_LAKE_NAME"])
    shutil.copytree(folder / "dagster_home", work / "dagster_home")
    (work / "landing").mkdir()
    shutil.copytree(folder / "landing" / "_truth", work / "landing" / "_truth",
                    copy_function=os.link)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """`python -m ids_lakehouse serve` in its own process group, stopped on exit."""

    def __init__(self, work: Path, workers: int) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env_for(work) | {"IDS_SHARING_RATE_PER_MINUTE": "10000000",
                                    "IDS_LOOKUP_PEOPLE_PER_MINUTE": "100000000",
                                    "IDS_QUERY_CELLS_PER_MINUTE": "1000000000",
                                    "IDS_SHARING_PUBLIC_URL": self.url}
        self.workers = workers
        self.log = open(work / "gateway.log", "w")

    def __enter__(self) -> Gateway:
        import requests

        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ids_lakehouse", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", str(self.workers)], env=self.env, cwd=REPO,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            try:
                if requests.get(self.url + "/openapi.json", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > 900:
                raise BenchError("the gateway did not start; see gateway.log")
            time.sleep(0.5)
        self.startup_s = time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def _profile(work: Path, agreement: str, endpoint: str) -> Path:
    out = work / f"{agreement}.share"
    done = subprocess.run([sys.executable, "-m", "ids_lakehouse", "share-profile",
                           "--agreement", agreement, "--out", str(out), "--operator", OPERATOR,
                           "--endpoint", endpoint + "/delta-sharing"], env=env_for(work),
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"share-profile failed: {done.stderr[-1000:]}")
    return out


# -- the people submitted, and the truth to judge the answers by -------------------------

def queries(work: Path, n_each: int, seed: int = 11) -> list[tuple[str, str | None, dict]]:
    """(kind, true person or None, person as the requester knows them)."""
    import numpy as np
    import polars as pl

    from ids_lakehouse.synth.agencies import demographics
    from ids_lakehouse.synth.corrupt import ErrorRates

    truth = pl.read_parquet(work / "landing" / "_truth" / "person_truth.parquet")
    persons = pl.read_parquet(work / "landing" / "_truth" / "persons.parquet")
    travellers = truth.filter(pl.col("source") == "travellers")["true_person_id"].unique()
    known = truth["true_person_id"].unique()
    inside = persons.filter(pl.col("true_person_id").is_in(travellers.implode()))
    elsewhere = persons.filter(pl.col("true_person_id").is_in(known.implode()),
                               ~pl.col("true_person_id").is_in(travellers.implode()))
    rng = np.random.default_rng(seed)
    errors = ErrorRates()
    out: list[tuple[str, str | None, dict]] = []

    def person(p: dict, ref: str) -> dict | None:
        d = demographics(p, rng, errors)
        if d["dob"] is None or not d["first"] or not d["last"]:
            return None
        known_as = {"ref": ref, "first_name": d["first"], "last_name": d["last"],
                    "dob": d["dob"].isoformat(), "sex": d["sex"], "street": d["street"],
                    "zip": d["zip"], "phone": d["phone"],
                    "ssn": d["ssn"] if rng.random() < 0.5 else None}
        return {k: v for k, v in known_as.items() if v is not None}

    for kind, frame in (("traveller", inside), ("elsewhere", elsewhere)):
        for p in frame.sample(min(n_each, frame.height), seed=seed).iter_rows(named=True):
            q = person(p, f"{kind[0]}{len(out)}")
            if q is not None:
                out.append((kind, p["true_person_id"], q))
    # Nobody: names and places of people drawn apart, a date of birth of nobody's.
    firsts = persons["first_name"].sample(n_each, seed=seed + 1).to_list()
    lasts = persons["last_name"].sample(n_each, seed=seed + 2).to_list()
    for first, last in zip(firsts, lasts, strict=True):
        dob = f"{int(rng.integers(1930, 2020))}-{int(rng.integers(1, 13)):02d}-" \
              f"{int(rng.integers(1, 29)):02d}"
        out.append(("nobody", None, {"ref": f"n{len(out)}", "first_name": first,
                                     "last_name": last, "dob": dob}))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def truth_of_person_ids(work: Path) -> dict[str, str]:
    """person_id -> the true person holding most of its records."""
    import polars as pl

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake

    xref = delta.frame(Lake(work / "lake").identity("person_xref"),
                       columns=["source", "source_record_id", "person_id"])
    truth = pl.read_parquet(work / "landing" / "_truth" / "person_truth.parquet")
    top = (xref.join(truth, on=["source", "source_record_id"])
           .group_by("person_id", "true_person_id").len()
           .sort("len", descending=True).unique("person_id", keep="first"))
    return dict(zip(top["person_id"], top["true_person_id"], strict=True))


# -- load --------------------------------------------------------------------------------

def drive(url: str, token: str, batches: list[list[dict]], threads: int
          ) -> tuple[list[float], list[dict], float, int, float]:
    """Post every batch from `threads` client threads, each on its own kept-alive
    connection (the standard library's http.client: `requests` cost ~1.2 ms of CPU a
    request, a sixth of the machine at 250 lookups/s, taken from the server it measures):
    latencies (ms), the answers, the wall time, the number of non-200 answers and the
    client's CPU seconds."""
    import concurrent.futures as cf
    import http.client
    import threading
    from urllib.parse import urlsplit

    where = urlsplit(url)
    local = threading.local()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def one(batch: list[dict]) -> tuple[float, list[dict], int]:
        con = getattr(local, "con", None)
        if con is None:
            con = local.con = http.client.HTTPConnection(where.hostname, where.port,
                                                         timeout=60)
        t0 = time.perf_counter()
        body = json.dumps({"people": batch})
        con.request("POST", "/v1/lookups", body=body, headers=headers)
        r = con.getresponse()
        data = r.read()
        ms = (time.perf_counter() - t0) * 1000
        return ms, json.loads(data)["results"] if r.status == 200 else [], r.status

    started, cpu = time.perf_counter(), time.process_time()
    with cf.ThreadPoolExecutor(threads) as pool:
        done = list(pool.map(one, batches))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return ([d[0] for d in done], [a for d in done for a in d[1]], wall,
            sum(1 for d in done if d[2] != 200), cpu)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def judge(asked: list[tuple[str, str | None, dict]], answers: list[dict],
          truth: dict[str, str]) -> dict:
    by_ref = {a["ref"]: a for a in answers}
    out: dict = {"matches": 0, "right": 0, "wrong": 0, "kinds": {}}
    for kind, true_id, q in asked:
        a = by_ref.get(q["ref"])
        if a is None:
            continue
        k = out["kinds"].setdefault(kind, {"n": 0, "match": 0, "refer_for_review": 0,
                                           "no_match": 0, "invalid": 0, "right": 0})
        k["n"] += 1
        k[a["outcome"]] += 1
        if a["outcome"] == "match":
            out["matches"] += 1
            ok = true_id is not None and truth.get(a["person"]["person_id"]) == true_id
            out["right" if ok else "wrong"] += 1
            k["right"] += ok
    out["precision"] = out["right"] / out["matches"] if out["matches"] else None
    return out


def sharing_read(work: Path, profile: Path, rounds: int) -> dict:
    """The research person file through the gateway with the stock client, against the
    same Parquet file read directly (both to pandas), interleaved."""
    import delta_sharing
    import pyarrow.parquet as pq

    from ids_lakehouse import releases
    from ids_lakehouse.agreements import load_agreements
    from ids_lakehouse.config import Lake

    latest = releases.published(Lake(work / "lake"), load_agreements()[RESEARCH])[-1]
    path = latest / "research_person.parquet"
    url = f"{profile}#{RESEARCH}.research.research_person"
    # The stock client converts without threads and with dates as objects: "same" reads
    # the local file and converts it that way, so the ratio to it is the gateway's own
    # cost (transport, protocol), the ratio to "direct" what a recipient sees.
    reads = {"gateway": lambda: delta_sharing.load_as_pandas(url),
             "direct": lambda: pq.read_table(path).to_pandas(),
             "same": lambda: pq.read_table(path).to_pandas(
                 date_as_object=True, use_threads=False, split_blocks=False,
                 self_destruct=True)}
    times: dict[str, list[float]] = {name: [] for name in reads}
    for i in range(rounds):
        names = list(reads) if i % 2 == 0 else list(reversed(reads))
        for name in names:
            t0 = time.perf_counter()
            rows = len(reads[name]())
            times[name].append(time.perf_counter() - t0)
    out = {"rows": rows, "bytes": path.stat().st_size}
    for base in ("direct", "same"):
        ratios = [g / d for g, d in zip(times["gateway"], times[base], strict=True)]
        out[base] = {"ratio": statistics.median(ratios), "min": min(ratios),
                     "max": max(ratios), "ms": statistics.median(times[base]) * 1000}
    out["gateway_ms"] = statistics.median(times["gateway"]) * 1000
    out["rounds"] = rounds
    return out


def task_engine(lake: str, people_file: str, rounds: int) -> dict:
    """The matching engine alone (no HTTP) against every record of the index, all
    sources: how it scales with the index, whatever an agreement's sources are."""
    from bench.common import rss_mb
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.identity import linkage, mpi, realtime
    from ids_lakehouse.sharing import lookups as lk

    index_lake = Lake(Path(lake))
    t0 = time.perf_counter()
    saved = linkage.load_model(mpi.models_dir(index_lake))
    assert saved is not None
    model, tf, version = saved
    index = realtime.Index(
        delta.frame(index_lake.silver("person_record"), columns=linkage.SILVER_COLUMNS),
        delta.frame(index_lake.identity("person_xref"), columns=["unique_id", "person_id"]),
        model, tf, version)
    load_s = time.perf_counter() - t0
    people = json.loads(Path(people_file).read_text())
    persons = [lk.Person.model_validate_json(json.dumps(p)) for p in people]
    out: dict = {"records": len(index), "load_s": load_s}
    for size in (1, 100):
        ms = []
        for r in range(rounds):
            batch = [persons[(r * size + i) % len(persons)] for i in range(size)]
            t = time.perf_counter()
            frame, problems, _ = lk.standardise(batch)
            index.decide(index.candidates(frame))
            ms.append((time.perf_counter() - t) * 1000)
        out[f"batch{size}"] = {"p50": _pct(ms, .5), "p95": _pct(ms, .95),
                               "people_per_s": size * len(ms) / (sum(ms) / 1000)}
    return {"seconds": load_s, "base_rss_mb": 0.0, "peak_rss_mb": rss_mb(), **out}


def measure(persons: int, quick: bool) -> dict:
    import requests

    from bench.common import scratch_dir

    folder = built_lake(persons)
    work = scratch_dir(f"lookups-{persons}")
    results: dict = {"persons": persons}
    try:
        _copy(folder, work)
        asked = queries(work, 300 if quick else 2_000)
        truth = truth_of_person_ids(work)
        from ids_lakehouse import delta
        from ids_lakehouse.config import Lake

        results["index_records"] = delta.count(Lake(work / "lake").identity("person_xref"))
        import pyarrow.dataset as pads

        from ids_lakehouse.sharing.lookups import lookup_sources

        results["lookup_records"] = delta.count(
            Lake(work / "lake").silver("person_record"),
            filter=pads.field("source").isin(sorted(lookup_sources())))
        workers = int(os.environ.get("BENCH_LOOKUP_WORKERS", "2"))
        with Gateway(work, workers) as gw:
            results["startup_s"] = gw.startup_s
            results["workers"] = workers
            ops = json.loads(_profile(work, OPERATIONS, gw.url).read_text())["bearerToken"]
            requests.post(gw.url + "/v1/lookups", json={"people": [asked[0][2]]}, timeout=60,
                          headers={"Authorization": f"Bearer {ops}"})   # warm
            singles = [[q] for _, _, q in asked]
            ms, answers, wall, failed, cpu = drive(gw.url, ops, singles, threads=8)
            results["single"] = {"requests": len(ms), "failed": failed, "wall_s": wall,
                                 "per_s": len(ms) / wall, "p50": _pct(ms, .5),
                                 "p95": _pct(ms, .95), "p99": _pct(ms, .99), "threads": 8,
                                 "client_cpu_s": cpu}
            results["quality"] = judge(asked, answers, truth)
            ms, _, wall, failed, cpu = drive(gw.url, ops, singles, threads=32)
            results["single32"] = {"requests": len(ms), "failed": failed, "wall_s": wall,
                                   "per_s": len(ms) / wall, "p50": _pct(ms, .5),
                                   "p95": _pct(ms, .95), "p99": _pct(ms, .99), "threads": 32,
                                   "client_cpu_s": cpu}
            batches = [[q for _, _, q in asked[i:i + 100]] for i in range(0, len(asked), 100)]
            batches = (batches * 3)[: max(len(batches), 30)]
            ms, _, wall, failed, cpu = drive(gw.url, ops, batches, threads=2)
            results["batch100"] = {"requests": len(ms), "failed": failed, "wall_s": wall,
                                   "people_per_s": sum(len(b) for b in batches) / wall,
                                   "p50": _pct(ms, .5), "p95": _pct(ms, .95),
                                   "p99": _pct(ms, .99)}
            research = _profile(work, RESEARCH, gw.url)
            # A new token is seen by each worker within a second (Settings.token_recheck_s):
            # a read at once could reach a worker that last looked just before it existed.
            time.sleep(1.5)
            results["sharing"] = sharing_read(work, research, 3 if quick else 21)
            rss = subprocess.run(["ps", "-o", "rss=", "--ppid", str(gw.proc.pid)],
                                 capture_output=True, text=True).stdout.split()
            own = subprocess.run(["ps", "-o", "rss=", "-p", str(gw.proc.pid)],
                                 capture_output=True, text=True).stdout.split()
            results["server_rss_mb"] = sum(int(x) for x in rss + own) / 1024
        (work / "people.json").write_text(json.dumps([q for _, _, q in asked[:2000]]))
        engine = run_in_subprocess("lookups:task_engine", timeout=3600,
                                   lake=str(work / "lake"),
                                   people_file=str(work / "people.json"),
                                   rounds=100 if quick else 300)
        results["engine"] = engine.extra | {"peak_rss_mb": engine.peak_rss_mb}
    finally:
        from bench.common import remove

        remove(work)
    return results


def run(quick: bool, command: str) -> str:
    persons = 20_000 if quick else 1_000_000
    t0 = time.perf_counter()
    results = measure(persons, quick)
    results["minutes"] = (time.perf_counter() - t0) / 60
    (ROOT / f"results_{persons}.json").write_text(json.dumps(results, indent=2))
    return report(results, command)


def report(r: dict, command: str) -> str:
    s, b, q, sh = r["single"], r["batch100"], r["quality"], r["sharing"]
    kinds = q["kinds"]
    lines = [
        f"Command: `{command}`; this section took {r['minutes']:.1f} min. Inputs and method: "
        "bench/lookups.py's docstring.",
        "",
        f"### Lookups against {r['persons']:,} people ({r['index_records']:,} index records)",
        "",
        f"Gateway: `python -m ids_lakehouse serve --workers {r['workers']}` (start-up, index "
        f"loaded: {r['startup_s']:.0f} s; resident memory {r['server_rss_mb']:,.0f} MiB); "
        "clients (http.client, a kept-alive connection per thread) in the benchmark's "
        f"process on the same 2 cores, using {s['client_cpu_s'] / s['requests'] * 1000:.2f} "
        f"ms of CPU per single lookup ({s['client_cpu_s'] / s['wall_s'] * 50:.0f}% of the "
        "machine) in the 8-thread run.",
        "",
        "| requests | people per request | client threads | requests/s | people/s | "
        "p50 ms | p95 ms | p99 ms | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {x['requests']:,} | 1 | {x['threads']} | {x['per_s']:,.0f} | {x['per_s']:,.0f} | "
          f"{x['p50']:.1f} | {x['p95']:.1f} | {x['p99']:.1f} | {x['failed']} |"
          for x in (s, r["single32"])],
        f"| {b['requests']:,} | 100 | 2 | {b['requests'] / b['wall_s']:,.1f} | "
        f"{b['people_per_s']:,.0f} | {b['p50']:.1f} | {b['p95']:.1f} | {b['p99']:.1f} | "
        f"{b['failed']} |",
        "",
        f"The lookups compare with the agreement's own sources' records only "
        f"({r.get('lookup_records', 0):,} here). The matching engine alone (no HTTP, one "
        f"process) against all {r['engine']['records']:,} records of the index, loaded in "
        f"{r['engine']['load_s']:.0f} s (peak {r['engine']['peak_rss_mb']:,.0f} MiB): one "
        f"person {r['engine']['batch1']['p50']:.1f} ms p50, "
        f"{r['engine']['batch1']['p95']:.1f} ms p95; 100 people "
        f"{r['engine']['batch100']['p50']:.0f} ms p50 "
        f"({r['engine']['batch100']['people_per_s']:,.0f} people/s).",
        "",
        "Answers to the single lookups, by who was submitted:",
        "",
        "| submitted | people | match | right match | refer for review | no match | "
        "invalid |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, label in (("traveller", "a traveller (answerable)"),
                        ("elsewhere", "known to other agencies only"),
                        ("nobody", "nobody in the index")):
        k = kinds.get(kind)
        if k:
            lines.append(f"| {label} | {k['n']:,} | {k['match']:,} | {k['right']:,} | "
                         f"{k['refer_for_review']:,} | {k['no_match']:,} | {k['invalid']:,} |")
    precision = q["precision"]
    lines += [
        "",
        f"Precision of the answers \"match\": **{precision:.4f}** ({q['right']:,} of "
        f"{q['matches']:,}; target ≥ 0.99)." if precision is not None else
        "No answer was a match.",
        "",
        "### Delta Sharing read versus the Parquet file",
        "",
        f"The research person file ({sh['rows']:,} rows, {sh['bytes'] / 1e6:.1f} MB), "
        f"medians of {sh['rounds']} interleaved rounds: `delta_sharing.load_as_pandas` "
        f"through the gateway {sh['gateway_ms']:,.0f} ms; "
        f"`pyarrow.parquet.read_table(...).to_pandas()` {sh['direct']['ms']:,.0f} ms, "
        f"ratio **{sh['direct']['ratio']:.2f}×** ({sh['direct']['min']:.2f}–"
        f"{sh['direct']['max']:.2f}; target ≤ 1.5×); the same local read converted as the "
        f"client converts (one thread, dates as objects) {sh['same']['ms']:,.0f} ms, ratio "
        f"{sh['same']['ratio']:.2f}× ({sh['same']['min']:.2f}–{sh['same']['max']:.2f}): "
        "the gateway's own share.",
        "",
        "Targets: ≥ 500 single lookups/s with p95 ≤ 50 ms: "
        f"{'met' if s['per_s'] >= 500 and s['p95'] <= 50 else 'not met'} "
        f"({s['per_s']:,.0f}/s, p95 {s['p95']:.1f} ms); precision ≥ 0.99: "
        f"{'met' if precision is not None and precision >= 0.99 else 'not met'}; "
        f"Delta Sharing within 1.5× of direct: "
        f"{'met' if sh['direct']['ratio'] <= 1.5 else 'not met'}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    built_lake(int(sys.argv[1]))
