"""Conforming every source: the domain entry point the conform asset calls.

Under the silver lock, each source with an accepted delivery is conformed unless its input
signature is unchanged since its silver rows last passed (conform/state.py). A source whose
delivery cannot be conformed, or whose rows are past its limits, is refused BEFORE its
silver rows are replaced: the rows conformed from its last good delivery stay, and the
checks fail naming it. Then the checks over every source are computed; a conformed source
is recorded as such only when it passed all of them, so a source that failed is conformed
(and checked) again on every run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow.compute as pc

from ids_lakehouse import crash, delta, locks
from ids_lakehouse.config import Lake
from ids_lakehouse.conform import state
from ids_lakehouse.conform.mapping import ConformError, ConformResult, RowContract, conform_source
from ids_lakehouse.model import load_model
from ids_lakehouse.sources import SourceDefinition, load_sources
from ids_lakehouse.validation import Check, failure_counts

Log = Callable[[str, str], None]   # (level, message): where progress goes


@dataclass
class ConformRun:
    """What one conform run did: the sources conformed, left unchanged or refused (with
    why), the verdict of every check, and the rows per entity now in silver."""
    conformed: list[ConformResult] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


def entities() -> list[str]:
    """The silver entities (the model's, less those embedded in another)."""
    return load_model().published_entities()


def conform_all(lake: Lake, run_id: str, contract: RowContract, *, full_rebuild: bool = False,
                log: Log = lambda level, message: None) -> ConformRun:
    """Conform every source that needs it (all of them with `full_rebuild`) and check the
    result; `contract`: the silver contracts (schemas/silver.py)."""
    run = ConformRun()
    with locks.exclusive(lake, "silver"):
        earlier = state.conformed(lake)
        signatures: dict[str, str] = {}
        judged: list[ConformResult] = []     # conformed, or refused after conforming
        for source, defn in load_sources().items():
            shas = state.deliveries_to_conform(lake, defn)
            if not shas:
                log("warning", f"{source}: no accepted delivery yet; skipped")
                continue
            sig = state.signature(shas, contract)
            if not full_rebuild and earlier.get(source, {}).get("signature") == sig:
                run.unchanged.append(source)
                log("info", f"{source}: unchanged since run {earlier[source]['run_id']}; "
                            "not conformed again")
                continue
            result = _conform_one(lake, defn, shas, contract, run, reuse=not full_rebuild,
                                  log=log)
            if result is not None:
                judged.append(result)
            if source in run.refused:
                log("error", f"{source}: refused, earlier silver rows kept: "
                             f"{run.refused[source]}")
                state.forget_conformed(lake, source)
                continue
            assert result is not None
            state.write(lake, result, run_id, state.code_of(contract))
            crash.point("conform.after_first_source")
            run.conformed.append(result)
            signatures[source] = sig
            _log_result(result, log)
        passed = _checks(lake, run, judged, {s: earlier[s] for s in run.unchanged}, contract)
        for result in run.conformed:
            if result.source in passed:
                state.record_conformed(lake, result, signatures[result.source], run_id)
            else:
                state.forget_conformed(lake, result.source)
    run.rows = {e: delta.count(lake.silver(e)) for e in entities()}
    return run


def _conform_one(lake: Lake, defn: SourceDefinition, shas: list[str], contract: RowContract,
                 run: ConformRun, reuse: bool, log: Log) -> ConformResult | None:
    """The source's rows conformed (with `reuse`, rows whose delivered values the same
    code conformed before are replayed, not conformed again); None (and refused) when its
    delivery cannot be conformed at all; refused, with its result, when its rows are past
    its limits."""
    try:
        bronze = state.bronze_to_conform(lake, defn, shas)
        assert bronze is not None       # conform_all passes the deliveries: shas is not empty
        try:
            seen = state.rows_seen(lake, defn.source, state.code_of(contract)) \
                if reuse else None
        except state.CacheUnreadable as exc:
            log("warning", f"{defn.source}: row cache unreadable ({exc}); every row is "
                           "conformed again")
            seen = None
        result = conform_source(defn, bronze, contract, seen=seen,
                                missing_in_delivery=state.missing_columns(lake, shas))
    except ConformError as exc:
        run.refused[defn.source] = str(exc)
        return None
    over = past_limits(defn, result)
    if over:
        run.refused[defn.source] = over
    return result


def _log_result(result: ConformResult, log: Log) -> None:
    if any(result.schema_drift.values()):
        log("warning", f"{result.source}: schema drift {result.schema_drift}")
    log("info", f"{result.source}: {result.bronze_rows:,} bronze rows "
                f"({result.rows_replayed:,} unchanged since conformed before) -> "
                f"{result.row_entity_rows:,} silver, {result.quarantine.height:,} "
                f"quarantined; person fields nulled (rule|column: records) "
                f"{result.field_problems}")


def past_limits(defn: SourceDefinition, result: ConformResult) -> str:
    """Why the source's conformed rows must not replace its silver rows (empty: they may):
    the quarantined share or a field's invalid share past the source's limits."""
    why = []
    rate = result.worst_quarantine_rate
    if rate > defn.max_quarantine_rate:
        why.append(f"{rate:.1%} of a delivery's rows quarantined (max_quarantine_rate "
                   f"{defn.max_quarantine_rate:.1%})")
    invalid = {f: r for f, r in result.invalid_rates().items() if r > defn.max_invalid_rate}
    if invalid:
        why.append(f"delivered values nulled as invalid {invalid} (max_invalid_rate "
                   f"{defn.max_invalid_rate:.0%})")
    return "; ".join(why)


def _checks(lake: Lake, run: ConformRun, judged: list[ConformResult],
            unchanged: dict[str, dict[str, Any]], contract: RowContract) -> set[str]:
    """The checks over every source, appended to `run.checks`: those conformed in this run
    are validated now; an unchanged source keeps the verdict it passed with (its rows have
    not changed since), re-read only for reconciliation; a refused source fails the check
    that refused it (rows_reconcile when its delivery could not be conformed at all).
    Returns the conformed sources that passed every check."""
    ok = {r.source for r in run.conformed}
    ok -= _contract_checks(lake, run, sorted(unchanged), contract)
    ok -= _reconcile_check(lake, run, judged, unchanged)
    ok -= _quarantine_check(run, judged, unchanged)
    ok -= _validity_check(run, judged, unchanged)
    return ok


def _contract_checks(lake: Lake, run: ConformRun, unchanged: list[str],
                     contract: RowContract) -> set[str]:
    failed: set[str] = set()
    for entity in entities():
        path = lake.silver(entity)
        errors: dict[str, int] = {}
        for r in run.conformed:
            if entity not in r.entities:
                continue
            rows = delta.frame(path, filter=pc.field("source") == r.source)
            found = failure_counts(contract(entity), rows)
            if found:
                failed.add(r.source)
            for key, n in found.items():
                errors[key] = errors.get(key, 0) + n
        run.checks.append(Check(entity, "contract", not errors, {
            "failures_by_check_and_column": errors,
            "validated_sources": sorted(r.source for r in run.conformed
                                        if entity in r.entities),
            "unchanged_sources": unchanged}))
    return failed


def _reconcile_check(lake: Lake, run: ConformRun, judged: list[ConformResult],
                     unchanged: dict[str, dict[str, Any]]) -> set[str]:
    sources = load_sources()
    bronze_rows = {r.source: r.bronze_rows for r in run.conformed} | \
        {s: st["bronze_rows"] for s, st in unchanged.items()}
    rec: dict[str, dict[str, Any]] = {
        s: state.reconcile(lake, sources[s], n) for s, n in bronze_rows.items()}
    unconformable = set(run.refused) - {r.source for r in judged}
    rec |= {s: {"reconciles": False, "refused": run.refused[s]} for s in unconformable}
    run.checks.append(Check("person_record", "rows_reconcile",
                            all(v["reconciles"] for v in rec.values()), {"by_source": rec}))
    return {s for s, v in rec.items() if not v["reconciles"]}


def _quarantine_check(run: ConformRun, judged: list[ConformResult],
                      unchanged: dict[str, dict[str, Any]]) -> set[str]:
    sources = load_sources()
    bronze_rows = {r.source: r.bronze_rows for r in judged} | \
        {s: st["bronze_rows"] for s, st in unchanged.items()}
    quarantined = {r.source: r.quarantine.height for r in judged} | \
        {s: st["quarantined_rows"] for s, st in unchanged.items()}
    rates = {s: round(quarantined[s] / n, 4) if n else 0.0 for s, n in bronze_rows.items()}
    rates |= {r.source: max(rates[r.source], r.worst_quarantine_rate) for r in judged}
    over = {s: rate for s, rate in rates.items() if rate > sources[s].max_quarantine_rate}
    run.checks.append(Check("person_record", "quarantine_rate", not over, {
        "rate_by_source": rates, "over_limit": over,
        "failures_by_rule": {r.source: r.failures for r in judged},
        "fields_nulled_by_rule": {r.source: r.field_problems for r in judged},
        "person_statuses": {r.source: r.statuses for r in judged},
        "schema_drift": {r.source: r.schema_drift for r in judged},
        "refused_sources": dict(run.refused)}))
    return set(over)


def _validity_check(run: ConformRun, judged: list[ConformResult],
                    unchanged: dict[str, dict[str, Any]]) -> set[str]:
    sources = load_sources()
    invalid = {r.source: r.invalid_rates() for r in judged} | \
        {s: st.get("invalid_rates") or {} for s, st in unchanged.items()}
    broken = {s: {f: rate for f, rate in fields.items() if rate > sources[s].max_invalid_rate}
              for s, fields in invalid.items()}
    broken = {s: fields for s, fields in broken.items() if fields}
    run.checks.append(Check("person_record", "field_validity", not broken,
                            {"invalid_rate_by_source": invalid, "over_limit": broken}))
    return set(broken)


def expectations(lake: Lake, run_id: str
                 ) -> tuple[list[str], dict[str, pl.DataFrame], dict[str, int]]:
    """The sources the Great Expectations suites validate (those conformed in `run_id`;
    none: every source, when the check runs on its own), the silver rows to validate, and
    per entity the rows of those sources not validated again: rows conform replayed
    unchanged from an earlier delivery were validated when they were first conformed.
    While an entity's last validation failed, all of its rows in scope are validated."""
    from ids_lakehouse.conform.expectations import latest_results

    done = state.conformed(lake)
    fresh = sorted(s for s, st in done.items() if st["run_id"] == run_id)
    where = pc.field("source").isin(fresh) if fresh else None
    rows = [(s, sha, n) for s in fresh for sha, numbers in (done[s]["fresh_rows"] or {}).items()
            for n in numbers]
    partly = {s for s in fresh if done[s]["fresh_rows"] is not None}
    wanted = pl.DataFrame(rows, schema={"source": pl.String, "_file_sha256": pl.String,
                                        "_row_number": pl.Int64}, orient="row")
    failing = {e for e, o in latest_results(lake.docs("data_docs")).items()
               if not o.get("success", False)}
    frames: dict[str, pl.DataFrame] = {}
    skipped: dict[str, int] = {}
    for e in entities():
        if not delta.exists(lake.silver(e)):
            continue
        frame = delta.frame(lake.silver(e), filter=where)
        if partly and e not in failing:
            replayed = pl.col("source").is_in(sorted(partly))
            kept = pl.concat([frame.filter(~replayed),
                              frame.filter(replayed).join(wanted, how="semi",
                                                          on=list(wanted.columns))])
            skipped[e] = frame.height - kept.height
            frame = kept
        frames[e] = frame
    return fresh, frames, skipped
