"""Gold marts for the three purposes, each with blocking checks, and the DuckDB warehouse
of read-only views over them."""

import datetime as dt

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    TableColumnDep,
    TableColumnLineage,
    asset,
    multi_asset,
)
from deltalake import write_deltalake

from assets.conform import OWNERS, silver_key
from assets.identity import identity_key
from ids_lakehouse import audit, config, crash, delta, locks, warehouse
from ids_lakehouse.conform import silver
from ids_lakehouse.deid import cellkey, holdback, kanon, scanner
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.deid.pseudonym import derive_key
from ids_lakehouse.marts import contacts, indicators, overlap, people, research
from ids_lakehouse.model import load_model
from pipelines.resources import LakeResource
from schemas import failure_counts
from schemas.gold import contract

FIRST_YEAR = people.FIRST_YEAR
BASIS = "indicator_basis"   # restricted: what the aggregate marts are computed from
# The marts are published nightly; older than 36 hours means the nightly run failed twice.
MART_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=36),
                                             warn_window=dt.timedelta(hours=26))
MARTS = {
    "indicators": ("indicators", "Unduplicated person counts by year, program, county, age "
                   "band, sex and race/ethnicity, with ALL totals and rates per 1,000 served; "
                   "cell-key perturbed (|noise| <= 5), counts under 11 (zero included) null; "
                   "small changes held back between nights."),
    "program_overlap": ("indicators", "Unduplicated people per program and per pair of "
                        "programs, and children under six in any early-childhood program; "
                        "protected like the indicators."),
    "research_person": ("research", "De-identified linked person file: keyed pseudonym, "
                        "birth year, sex, race/ethnicity, ZIP3, county (generalised as "
                        "needed); k-anonymous over the whole record with participation."),
    "research_participation": ("research", "Program participation of the research persons "
                               "per period (years at the finest), part of the k-anonymous "
                               "record."),
    "contact_directory": ("operations", "RESTRICTED: identified contact details per person "
                          "and source that knows them (a release decides each value from "
                          "its agreement's sources only); "
                          "leaves only through a gated release."),
}
AGGREGATES = ("indicators", "program_overlap")
NOT_IDENTIFYING = ["indicators", "program_overlap", "research_person", "research_participation"]


def _lineage(pairs: dict[str, list[tuple[str, str]]]) -> TableColumnLineage:
    return TableColumnLineage(deps_by_column={
        col: [TableColumnDep(asset_key=AssetKey(k.split("/")), column_name=c) for k, c in deps]
        for col, deps in pairs.items()})


PERSON = "silver/person_record"
LINEAGE = {
    "research_person": {
        "pseudonym": [("identity/person_xref", "person_id")],
        "birth_year": [(PERSON, "dob")], "sex": [(PERSON, "sex")],
        "race_ethnicity": [(PERSON, "race"), (PERSON, "hispanic")],
        "zip3": [(PERSON, "zip")], "county_fips": [(PERSON, "county_fips")]},
    "research_participation": {
        "pseudonym": [("identity/person_xref", "person_id")],
        "program": [("silver/enrollment", "program")],
        "period": [("silver/enrollment", "start_date"), ("silver/enrollment", "end_date")]},
    "indicators": {
        "persons": [("identity/person_xref", "person_id"), ("silver/enrollment", "program")],
        "county_fips": [(PERSON, "county_fips")], "age_band": [(PERSON, "dob")],
        "sex": [(PERSON, "sex")], "race_ethnicity": [(PERSON, "race"), (PERSON, "hispanic")],
        "year": [("silver/enrollment", "start_date"), ("silver/enrollment", "end_date")],
        "program": [("silver/enrollment", "program"), ("silver/enrollment", "homeless_flag")]},
    "program_overlap": {"persons": [("identity/person_xref", "person_id"),
                                    ("silver/enrollment", "program")]},
    "contact_directory": {c: [(PERSON, c)] for c in
                          ("first_name", "last_name", "dob", "phone", "email", "street",
                           "city", "zip", "county_fips")}
    | {"person_id": [("identity/person_xref", "person_id")],
       "source": [(PERSON, "source")]},
}


def gold_key(mart: str) -> AssetKey:
    return AssetKey(["gold", mart])


def mart_checks(mart: str) -> list[str]:
    """The names of the blocking checks on a mart (the release gate requires all)."""
    return [s.name for s in _specs() if s.asset_key == gold_key(mart)]


def _specs() -> list[AssetCheckSpec]:
    specs = [AssetCheckSpec("contract", asset=gold_key(m), blocking=True,
                            description="Passes the mart's Pandera contract.") for m in MARTS]
    specs += [AssetCheckSpec("no_direct_identifiers", asset=gold_key(m), blocking=True,
                             description="No SSN, phone, e-mail, full date, person_id or "
                                         "silver full name anywhere in the mart.")
              for m in NOT_IDENTIFYING]
    specs += [AssetCheckSpec("min_cell_size", asset=gold_key(m), blocking=True,
                             description="No published count under the minimum cell size "
                                         "(counts are cell-key perturbed).")
              for m in AGGREGATES]
    specs.append(AssetCheckSpec("k_anonymity", asset=gold_key("research_person"),
                                blocking=True,
                                description="Every class of whole records (person row and "
                                            "participation) has >= k people."))
    specs.append(AssetCheckSpec("local_suppression", asset=gold_key("research_person"),
                                blocking=True,
                                description="Local suppression removed no more records than "
                                            "the policy allows."))
    return specs


RESEARCH = ("research_person", "research_participation")
PUBLISHED = tuple(m for m in MARTS if m not in RESEARCH)
DEPS = [identity_key("person_xref"), silver_key("person_record"), silver_key("enrollment")]


def _outs(marts: tuple[str, ...]) -> dict[str, AssetOut]:
    return {m: AssetOut(key=gold_key(m), description=MARTS[m][1], owners=OWNERS,
                        kinds={"delta", "polars"},
                        tags={"ids/layer": "gold", "ids/purpose": MARTS[m][0]},
                        freshness_policy=MART_FRESHNESS) for m in marts}


def _audit_holdback(store, context, asset: str, applied: int, held: int, **extra) -> None:
    """What the hold-back let through and kept, for the restricted audit log only: even a
    rounded count in metadata tells "nothing held back" from "one person held back"."""
    audit.record(store, "disclosure_holdback", f"{asset}: changes applied and held back",
                 asset=asset, run_id=context.run_id, **audit.launched_by(context.run.tags),
                 details={"changes_applied": applied, "changes_held_back": held, **extra})


def _secret() -> bytes:
    try:
        return config.pseudonym_key()
    except config.MissingSecretError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None


def _people(store, model) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(silver person records, person_xref, golden persons, program years) of the linked
    people."""
    xref = pl.from_arrow(delta.read(store.identity("person_xref")))
    records = pl.from_arrow(delta.read(store.silver("person_record")))
    enrollment = silver.read(store, "enrollment")
    persons = people.golden_persons(records, xref)
    return records, xref, persons, people.program_years(enrollment, xref, FIRST_YEAR,
                                                         model.as_of)


def _write(store, path_of, frames: dict[str, pl.DataFrame]) -> None:
    for name, frame in frames.items():
        write_deltalake(str(path_of(name)), frame.to_arrow(), mode="overwrite",
                        schema_mode="overwrite")
        crash.point("marts.after_first_mart")


def _full_names(records: pl.DataFrame) -> pl.Series:
    return (records["first_name"] + " " + records["last_name"]).drop_nulls().unique()


def _common_checks(store, marts: tuple[str, ...], full_names: pl.Series):
    tables = {m: pl.from_arrow(delta.read(store.gold(m))) for m in marts}
    for mart, frame in tables.items():
        failures = failure_counts(contract(mart), frame)
        yield AssetCheckResult(asset_key=gold_key(mart), check_name="contract",
                               passed=not failures, metadata={"failures": failures})
        if mart in NOT_IDENTIFYING:
            findings = scanner.scan(frame, full_names)
            yield AssetCheckResult(asset_key=gold_key(mart), check_name="no_direct_identifiers",
                                   passed=not findings,
                                   metadata={"findings": [f.__dict__ for f in findings]})
    return tables


def _metadata(mart: str, frame: pl.DataFrame) -> dict:
    return {"dagster/row_count": frame.height, "purpose": MARTS[mart][0],
            "dagster/column_lineage": _lineage(LINEAGE[mart])}


@multi_asset(outs=_outs(PUBLISHED), deps=DEPS, group_name="marts",
             check_specs=[s for s in _specs() if s.asset_key.path[-1] in PUBLISHED])
def marts(context: AssetExecutionContext, lake: LakeResource):
    """Indicators and overlap (cell-key perturbed, from the held-back basis) and the
    restricted contact directory."""
    store, model, policy = lake.lake(), load_model(), load_policy()
    cell_secret = derive_key(_secret(), "cellkey")
    records, xref, persons, years = _people(store, model)
    keys = persons.select("person_id", cellkey.record_keys(persons["person_id"], cell_secret))
    with locks.exclusive(store, "gold"):
        previous = (pl.from_arrow(delta.read(store.disclosure(BASIS)))
                    if delta.exists(store.disclosure(BASIS)) else None)
        moved = holdback.advance(previous, indicators.facts(years, persons), indicators.UNIT,
                                 indicators.ATTRIBUTES, policy.min_cell_size,
                                 **holdback.thresholds("indicators"))
        ind, ind_cells = indicators.build(moved.basis, keys, model, policy)
        ov, ov_cells = overlap.build(moved.basis, keys, policy, FIRST_YEAR, model.as_of.year)
        built = {"indicators": ind, "program_overlap": ov,
                 "contact_directory": contacts.build(records, xref)}
        # The basis first: the marts are a function of it, so a run that dies between
        # the two writes is completed by the next one.
        _write(store, store.disclosure, {BASIS: moved.basis, "indicators_cells": ind_cells,
                                         "program_overlap_cells": ov_cells})
        _write(store, store.gold, built)
    tables = yield from _common_checks(store, PUBLISHED, _full_names(records))
    for mart in AGGREGATES:
        small = tables[mart].filter(pl.col("persons") < policy.min_cell_size).height
        yield AssetCheckResult(asset_key=gold_key(mart), check_name="min_cell_size",
                               passed=small == 0, metadata={"published_small_cells": small})
    for mart in PUBLISHED:
        metadata = _metadata(mart, built[mart])
        if mart in AGGREGATES:
            metadata["cells_not_published"] = int(built[mart]["persons"].is_null().sum())
        if mart == "indicators":
            metadata["max_perturbation"] = policy.max_perturbation
        yield MaterializeResult(asset_key=gold_key(mart), metadata=metadata)
    _audit_holdback(store, context, "gold/indicators", moved.applied, moved.held_back)


@multi_asset(outs=_outs(RESEARCH), deps=DEPS, group_name="marts",
             check_specs=[s for s in _specs() if s.asset_key.path[-1] in RESEARCH])
def research_file(context: AssetExecutionContext, lake: LakeResource):
    """The de-identified research person file and its participation, k-anonymous over the
    whole record. A separate step: when the population cannot support it within the
    policy, its blocking checks stop the research release and nothing else."""
    store, model, policy = lake.lake(), load_model(), load_policy()
    key = derive_key(_secret(), research.PSEUDONYM_LABEL)
    records, xref, persons, years = _people(store, model)
    built = research.build(persons, years, key, policy, FIRST_YEAR, model.as_of)
    with locks.exclusive(store, "gold"):
        # Night to night, the file changes only in groups of identical changes (analysts
        # read it, so comparing two versions must single nobody out).
        before = None
        if delta.exists(store.gold("research_person")):
            before = tuple(pl.from_arrow(delta.read(store.gold(m))) for m in RESEARCH)
        moved = holdback.advance_file(before, built.persons, built.participation,
                                      policy.research_quasi_identifiers, policy.k_anonymity,
                                      **holdback.thresholds("gold/research"))
        frames = {"research_person": moved.persons.sort("pseudonym"),
                  "research_participation": moved.participation.sort(
                      ["pseudonym", "program", "period"])}
        _write(store, store.gold, frames)
    _audit_holdback(store, context, "gold/research_person", moved.applied, moved.held_back,
                    records_suppressed=built.anonymity.suppressed)
    anonymity = built.anonymity
    if anonymity.suppression_rate > policy.max_local_suppression:
        context.log.error(
            f"research_person: local suppression removed {anonymity.suppression_rate:.1%} of "
            f"people (policy: at most {policy.max_local_suppression:.0%}) after every "
            "generalisation step; the local_suppression check fails and no research "
            "release can be made until the population is larger or the ladder coarser")
    tables = yield from _common_checks(store, RESEARCH, _full_names(records))
    rp, rs = tables["research_person"], tables["research_participation"]
    k = kanon.whole_record_k(rp, rs, policy.research_quasi_identifiers)
    yield AssetCheckResult(asset_key=gold_key("research_person"), check_name="k_anonymity",
                           passed=rp.height == 0 or k >= policy.k_anonymity,
                           metadata={"k_measured_whole_record": k,
                                     "k_required": policy.k_anonymity})
    yield AssetCheckResult(asset_key=gold_key("research_person"),
                           check_name="local_suppression",
                           passed=anonymity.suppression_rate <= policy.max_local_suppression,
                           metadata={"suppression_rate": round(anonymity.suppression_rate, 2),
                                     "max_local_suppression": policy.max_local_suppression,
                                     "generalisation_level": anonymity.level})
    for mart, frame in frames.items():
        metadata = _metadata(mart, frame)
        if mart == "research_person":
            metadata |= {"k_required": policy.k_anonymity, "k_achieved": anonymity.k,
                         "generalisation_level": anonymity.level,
                         "generalisation_applied": anonymity.applied or ["none"],
                         "participation_period": str(anonymity.participation_years),
                         "suppression_rate": round(anonymity.suppression_rate, 2),
                         "quasi_identifiers": [*policy.research_quasi_identifiers,
                                               "participation (program x period)"]}
        yield MaterializeResult(asset_key=gold_key(mart), metadata=metadata)


@asset(
    key=AssetKey(["warehouse"]),
    deps=[gold_key(m) for m in MARTS],
    group_name="marts",
    description="LAKE_ROOT/warehouse.duckdb: read-only views over the gold marts, one schema "
                "per purpose (indicators, research, operations).",
    owners=OWNERS,
    kinds={"duckdb"},
    tags={"ids/layer": "gold"},
)
def warehouse_views(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    counts = warehouse.build(lake.lake())
    return MaterializeResult(metadata={"path": str(warehouse.path(lake.lake())),
                                       "rows_by_view": counts})
