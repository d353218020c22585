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

    folder = ROOT / f"persons_{persons}_s{pipeline.SEED}_g{GEN_VERSION}"
    done = folder / "built.json"
    if done.exists():
        return folder
    prep = pipeline.prepared(persons)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copytree(Path(prep["folder"]) / "landing", folder / "landing",
                    copy_function=os.link)
    layers = {}
    for layer in pipeline.LAYERS:
        t0 = time.perf_counter()
        s = run_in_subprocess("pipeline:task_layer", timeout=4 * 3600, layer=layer,
                              work=str(folder))
        if s.extra["runs_failed"]:
            raise BenchError(f"{layer}: runs failed: {s.extra['runs_failed']}")
        layers[layer] = time.perf_counter() - t0
        log(f"built {persons:,}: {layer} in {layers[layer]:.0f}s")
    done.write_text(json.dumps({"persons": persons, "layers_s": layers}, indent=2))
    return folder


def env_for(folder: Path) -> dict[str, str]:
    return os.environ | {"LAKE_ROOT": str(folder / "lake"),
                         "LANDING_ROOT": str(folder / "landing"),
                         "DAGSTER_HOME": str(folder / "dagster_home"),
                         "IDS_PSEUDONYM_KEY": KEY, "PYTHONPATH": str(REPO)}


if __name__ == "__main__":
    built_lake(int(sys.argv[1]))
