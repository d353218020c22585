"""The linkage benchmark's runs in the parent: each variant in its own worker process
(`run_in_subprocess`), interleaved round by round, and the samples kept per variant."""

from __future__ import annotations

from pathlib import Path

from bench.common import Sample, log, remove, run_in_subprocess, scratch_dir
from bench.linkage_params import HOLDOUT


class Runner:
    """Runs the tasks for one size, keeping the samples."""

    def __init__(self, label: str, paths: dict[str, Path]):
        self.label, self.paths = label, paths
        self.samples: dict[str, list[Sample]] = {}
        # Set by linkage.run (or rerender, from the saved samples).
        self.persons, self.runs, self.minutes = 0, 0, 0.0
        self.started = 0.0
        self.stop_reason = ""      # why a budgeted size ran fewer rounds than planned

    def _add(self, name: str, s: Sample) -> Sample:
        self.samples.setdefault(name, []).append(s)
        q = s.extra.get("quality", {}).get("cross_source", {})
        log(f"linkage {self.label} {name} run {len(self.samples[name])}: {s.seconds:.1f}s, "
            f"peak RSS {s.peak_rss_mb:.0f} MiB, cross F1 {q.get('f1')}"
            + (f", changed {s.extra['changed']}" if "changed" in s.extra else "")
            + (f", {s.extra['mode']} ({s.extra['rescored']:,} re-scored)"
               if "mode" in s.extra else ""))
        return s

    def common(self, analyse: bool) -> dict:
        p = self.paths
        return {"records": str(p["records"]), "truth": str(p["truth"]),
                "persons": str(p["persons"]), "analyse": analyse}

    def round(self, i: int, bare: bool, rl: bool, analyse: bool) -> None:
        """ours-first, bare-train, ours-second (full re-score), bare-predict (pairs' order
        alternated), then ours-incremental (the default rerun), then rl."""
        lake = scratch_dir("lake")
        model = scratch_dir("bare") / "model.json"
        try:
            jobs = [("ours-first", lambda: run_in_subprocess(
                        "linkage_ours:task_ours", timeout=3 * 3600, lake=str(lake),
                        **self.common(analyse))),
                    ("bare-train", lambda: run_in_subprocess(
                        "linkage_baselines:task_bare", timeout=3 * 3600, model_path=str(model),
                        train=True, **self.common(analyse)))]
            jobs2 = [("ours-second", lambda: run_in_subprocess(
                        "linkage_ours:task_ours", timeout=3 * 3600, lake=str(lake), full=True,
                        **self.common(False))),
                     ("bare-predict", lambda: run_in_subprocess(
                         "linkage_baselines:task_bare", timeout=3 * 3600, model_path=str(model),
                         train=False, **self.common(False)))]
            if not bare:
                jobs, jobs2 = jobs[:1], jobs2[:1]
            if i % 2:
                jobs, jobs2 = jobs[::-1], jobs2[::-1]
            for name, job in jobs + jobs2:
                self._add(name, job())
            self._add("ours-incremental", run_in_subprocess(
                "linkage_ours:task_ours", timeout=3 * 3600, lake=str(lake), **self.common(False)))
            if rl:
                self._add("rl", run_in_subprocess("linkage_baselines:task_rl", timeout=3 * 3600,
                                                  records=str(self.paths["records"]),
                                                  truth=str(self.paths["truth"])))
        finally:
            remove(lake)
            remove(model.parent)

    def holdout(self, i: int) -> None:
        lake = scratch_dir("lake-holdout")
        try:
            c = self.common(False)
            self._add("holdout-first", run_in_subprocess(
                "linkage_ours:task_ours", timeout=3 * 3600, lake=str(lake), holdout=HOLDOUT,
                holdout_seed=1000 + i, **c))
            self._add("holdout-second", run_in_subprocess(
                "linkage_ours:task_ours", timeout=3 * 3600, lake=str(lake), **c))
        finally:
            remove(lake)


def febrl_runs(which: str, runs: int) -> list[Sample]:
    out = []
    for i in range(runs):
        lake = scratch_dir(which)
        try:
            s = run_in_subprocess("linkage_ours:task_febrl", which=which, lake=str(lake))
        finally:
            remove(lake)
        q = s.extra["quality"]
        log(f"linkage {which} run {i + 1}: {s.seconds:.1f}s, cross F1 "
            f"{q['cross_source']['f1']}, within F1 {q['within_source']['f1']}")
        out.append(s)
    return out
