"""Silver assets: every source conformed to the canonical model, with blocking contract,
reconciliation and quarantine-rate checks, and a Great Expectations check."""

import datetime as dt

import polars as pl
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    Config,
    MaterializeResult,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    multi_asset,
    multi_asset_check,
)

from assets.ingest import TRANSIENT_RETRY, bronze_key
from ids_lakehouse import catalog, crash, delta, locks
from ids_lakehouse.conform import silver
from ids_lakehouse.conform.conform import ConformError, ConformResult, conform_source
from ids_lakehouse.model import load_model
from ids_lakehouse.sources import load_sources
from pipelines.resources import LakeResource
from schemas import failure_counts
from schemas.silver import contract

ENTITIES = ("person_record", "enrollment", "service_event")
OWNERS = ["data-platform@ids.example.gov", "team:stewards"]


def silver_key(entity: str) -> AssetKey:
    return AssetKey(["silver", entity])


def column_schema(entity: str) -> TableSchema:
    """The entity's columns with their classification and legal regime, from the model."""
    fields = load_model().entities[entity].fields
    return TableSchema(columns=[
        TableColumn(name, f.type, description=f.description,
                    tags={"classification": f.classification, "legal_regime": f.legal_regime})
        for name, f in fields.items()])


def silver_lineage(entity: str) -> TableColumnLineage:
    return TableColumnLineage(deps_by_column={
        field: [TableColumnDep(asset_key=bronze_key(s), column_name=c) for s, c in deps]
        for field, deps in catalog.column_lineage(entity).items()})


def _check_specs() -> list[AssetCheckSpec]:
    specs = [AssetCheckSpec("contract", asset=silver_key(e), blocking=True,
                            description="The published table passes its Pandera contract.")
             for e in ENTITIES]
    person = silver_key("person_record")
    specs += [
        AssetCheckSpec("rows_reconcile", asset=person, blocking=True,
                       description="Per source: bronze rows = silver rows + quarantined rows."),
        AssetCheckSpec("quarantine_rate", asset=person, blocking=True,
                       description="Per source: quarantined share within the source's "
                                   "max_quarantine_rate (a jump signals a schema change)."),
        AssetCheckSpec("field_validity", asset=person, blocking=True,
                       description="Per source and identifying field: the share of "
                                   "delivered values nulled as invalid within the source's "
                                   "max_invalid_rate (a jump signals a changed format)."),
    ]
    return specs


class ConformConfig(Config):
    full_rebuild: bool = False
    """Conform every source again, even one whose bronze table, data-model declarations
    and conform code are unchanged since its silver rows last passed conform's checks."""


@multi_asset(
    outs={e: AssetOut(key=silver_key(e), description=load_model().entities[e].description,
                      owners=OWNERS, kinds={"delta", "polars", "pandera"},
                      tags={"ids/layer": "silver"},
                      metadata={"dagster/column_schema": column_schema(e)})
          for e in ENTITIES},
    deps=[bronze_key(s) for s in load_sources()],
    group_name="conform",
    check_specs=_check_specs(),
    retry_policy=TRANSIENT_RETRY,
)
def conform(context: AssetExecutionContext, config: ConformConfig, lake: LakeResource):
    store = lake.lake()
    with locks.exclusive(store, "silver"):
        earlier = silver.conformed(store)
        results: list[ConformResult] = []
        signatures: dict[str, str] = {}
        unchanged: list[str] = []
        refused: dict[str, tuple[str, ConformResult | None]] = {}
        for source, defn in load_sources().items():
            shas = silver.deliveries_to_conform(store, defn)
            if not shas:
                context.log.warning(f"{source}: no accepted delivery yet; skipped")
                continue
            sig = silver.signature(shas)
            if not config.full_rebuild and earlier.get(source, {}).get("signature") == sig:
                unchanged.append(source)
                context.log.info(f"{source}: unchanged since run "
                                 f"{earlier[source]['run_id']}; not conformed again")
                continue
            # A source whose delivery cannot be conformed, or whose rows are past its
            # limits, is refused BEFORE its silver rows are replaced: the rows conformed
            # from its last good delivery stay, and the checks below fail naming it.
            try:
                result = conform_source(defn, silver.bronze_to_conform(store, defn, shas),
                                        missing_in_delivery=silver.missing_columns(store, shas))
            except ConformError as exc:
                refused[source] = (str(exc), None)
            else:
                over = _past_limits(defn, result)
                if over:
                    refused[source] = (over, result)
            if source in refused:
                context.log.error(f"{source}: refused, earlier silver rows kept: "
                                  f"{refused[source][0]}")
                silver.forget_conformed(store, source)
                continue
            silver.write(store, result, context.run_id)
            crash.point("conform.after_first_source")
            results.append(result)
            signatures[source] = sig
            if any(result.schema_drift.values()):
                context.log.warning(f"{source}: schema drift {result.schema_drift}")
            context.log.info(f"{source}: {result.bronze_rows:,} bronze rows -> "
                             f"{result.row_entity_rows:,} silver, "
                             f"{result.quarantine.height:,} quarantined; person fields "
                             f"nulled (rule|column: records) {result.field_problems}")
        checks, passed = _check_results(store, results, {s: earlier[s] for s in unchanged},
                                        refused)
        for result in results:
            if result.source in passed:
                silver.record_conformed(store, result, signatures[result.source],
                                        context.run_id)
            else:
                silver.forget_conformed(store, result.source)
    yield from checks
    for entity in ENTITIES:
        path = store.silver(entity)
        per_source = {r.source: r.entities[entity].height for r in results
                      if entity in r.entities}
        yield MaterializeResult(asset_key=silver_key(entity), metadata={
            "dagster/row_count": delta.count(path), "rows_by_source": per_source,
            "sources_conformed": sorted(per_source), "sources_unchanged": unchanged,
            "sources_refused": {src: why for src, (why, _) in refused.items()},
            "path": str(path), "dagster/column_lineage": silver_lineage(entity)})


def _past_limits(defn, result: ConformResult) -> str:
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


def _check_results(store, results: list[ConformResult], unchanged: dict[str, dict],
                   refused: dict[str, tuple[str, ConformResult | None]]):
    """The checks over every source: those conformed in this run are validated now; an
    unchanged source keeps the verdict it passed with (its rows have not changed since),
    re-read only for reconciliation; a refused source fails the check that refused it
    (rows_reconcile when its delivery could not be conformed at all). Returns the check
    results and the conformed sources that passed every check."""
    sources = load_sources()
    judged = results + [r for _, r in refused.values() if r is not None]
    ok = {r.source for r in results}
    checks = []
    for entity in ENTITIES:
        path = store.silver(entity)
        errors: dict[str, int] = {}
        for r in results:
            if entity not in r.entities:
                continue
            rows = pl.from_arrow(delta.read(path, filter=pc.field("source") == r.source))
            found = failure_counts(contract(entity), rows)
            if found:
                ok.discard(r.source)
            for key, n in found.items():
                errors[key] = errors.get(key, 0) + n
        checks.append(_result(entity, "contract", not errors, {
            "failures_by_check_and_column": errors,
            "validated_sources": sorted(r.source for r in results if entity in r.entities),
            "unchanged_sources": sorted(unchanged)}))
    bronze_rows = {r.source: r.bronze_rows for r in results} | \
        {s: state["bronze_rows"] for s, state in unchanged.items()}
    rec = {s: silver.reconcile(store, sources[s], n) for s, n in bronze_rows.items()}
    rec |= {s: {"reconciles": False, "refused": why} for s, (why, r) in refused.items()
            if r is None}
    ok -= {s for s, v in rec.items() if not v["reconciles"]}
    checks.append(_result("person_record", "rows_reconcile",
                          all(v["reconciles"] for v in rec.values()), {"by_source": rec}))
    bronze_rows |= {r.source: r.bronze_rows for r in judged}
    quarantined = {r.source: r.quarantine.height for r in judged} | \
        {s: state["quarantined_rows"] for s, state in unchanged.items()}
    rates = {s: round(quarantined[s] / n, 4) if n else 0.0 for s, n in bronze_rows.items()}
    rates |= {r.source: max(rates[r.source], r.worst_quarantine_rate) for r in judged}
    over = {s: rate for s, rate in rates.items() if rate > sources[s].max_quarantine_rate}
    ok -= set(over)
    checks.append(_result("person_record", "quarantine_rate", not over,
                          {"rate_by_source": rates, "over_limit": over,
                           "failures_by_rule": {r.source: r.failures for r in judged},
                           "fields_nulled_by_rule": {r.source: r.field_problems
                                                     for r in judged},
                           "person_statuses": {r.source: r.statuses for r in judged},
                           "schema_drift": {r.source: r.schema_drift for r in judged},
                           "refused_sources": {s: why for s, (why, _) in refused.items()}}))
    invalid = {r.source: r.invalid_rates() for r in judged} | \
        {s: state.get("invalid_rates") or {} for s, state in unchanged.items()}
    broken = {s: {f: rate for f, rate in fields.items() if rate > sources[s].max_invalid_rate}
              for s, fields in invalid.items()}
    broken = {s: fields for s, fields in broken.items() if fields}
    ok -= set(broken)
    checks.append(_result("person_record", "field_validity", not broken,
                          {"invalid_rate_by_source": invalid, "over_limit": broken}))
    return checks, ok


def _result(entity: str, check: str, passed: bool, metadata: dict) -> AssetCheckResult:
    return AssetCheckResult(asset_key=silver_key(entity), check_name=check, passed=passed,
                            metadata=metadata)


@multi_asset_check(
    specs=[AssetCheckSpec("expectations", asset=silver_key(e),
                          description="Great Expectations suite derived from the data model, "
                                      "over the rows of the sources conformed in the same run "
                                      "(run on its own: the whole tables); Data Docs in "
                                      "LAKE_ROOT/docs/data_docs.")
           for e in ENTITIES],
)
def silver_expectations(context: AssetCheckExecutionContext, lake: LakeResource):
    from ids_lakehouse.conform.expectations import run_suites

    store = lake.lake()
    fresh = sorted(s for s, state in silver.conformed(store).items()
                   if state["run_id"] == context.run.run_id)
    where = pc.field("source").isin(fresh) if fresh else None
    frames = {e: pl.from_arrow(delta.read(store.silver(e), filter=where)) for e in ENTITIES
              if delta.exists(store.silver(e))}
    docs = store.docs("data_docs")
    outcome = run_suites(frames, docs)
    context.log.info(f"Data Docs: {docs / 'index.html'}")
    scope = fresh or "all sources"
    for entity in ENTITIES:
        o = outcome.get(entity, {"success": False, "evaluated": 0, "failed": []})
        yield AssetCheckResult(asset_key=silver_key(entity), check_name="expectations",
                               passed=o["success"], metadata={
                                   "evaluated": o["evaluated"], "failed": o["failed"],
                                   "sources_validated": scope, "rows_validated":
                                   frames[entity].height if entity in frames else 0,
                                   "data_docs": str(docs / "index.html"),
                                   "checked_at": dt.datetime.now(dt.timezone.utc).isoformat()})
