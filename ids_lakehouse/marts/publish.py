"""Publishing the gold marts: the domain entry points the marts assets call. Each builds
its marts from the linked people, writes them (and the disclosure registers they are
computed from) under the gold lock, records what the hold-back let through in the audit
log, and returns the tables as written with the verdicts of the mart checks that are not
Pandera contracts (those the asset validates, from schemas/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ids_lakehouse import audit, config, crash, delta, locks
from ids_lakehouse.config import Lake
from ids_lakehouse.conform import state
from ids_lakehouse.deid import cellkey, holdback, kanon, scanner
from ids_lakehouse.deid.policy import DisclosurePolicy, load_policy
from ids_lakehouse.deid.pseudonym import derive_key
from ids_lakehouse.marts import contacts, indicators, overlap, people, research
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.model import DataModel, load_model
from ids_lakehouse.validation import Check

BASIS = "indicator_basis"   # restricted: what the aggregate marts are computed from
# The disclosure registers publish_marts writes beside the aggregate marts (restricted).
REGISTERS = {
    BASIS: "Person x year x program rows with attributes the aggregate marts are computed "
           "from (the held-back basis).",
    "indicators_cells": "True counts, cell keys and reasons of every indicator cell.",
    "program_overlap_cells": "True counts, cell keys and reasons of every overlap cell.",
}
# What each builder builds (tests/test_marts_declaration.py: every declared mart, once).
PUBLISHED = ("indicators", "program_overlap", "contact_directory")
RESEARCH = ("research_person", "research_participation")


@dataclass
class Published:
    """What one publishing step wrote: each mart's table as read back, the verdicts of the
    checks computed here, and metadata per mart for the run."""
    tables: dict[str, pl.DataFrame]
    registers: dict[str, int] = field(default_factory=dict)   # disclosure table -> rows
    checks: list[Check] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# The last golden persons and program years computed in this process, under the identity of
# the tables they were computed from: the night's marts and research file are two steps of
# one run (one process, pipelines/definitions.py) and read the same versions.
_LAST_PEOPLE: dict[tuple[Any, ...], tuple[pl.DataFrame, pl.DataFrame]] = {}


def _version(path: Any) -> tuple[str, str, int]:
    """A Delta table's identity at its current version: path, table id and version (the
    id tells a table rebuilt at the same path from the one it replaced)."""
    table = delta.table(path)
    return str(path), str(table.metadata().id), table.version()


def _people(lake: Lake, model: DataModel
            ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(silver person records, person_xref, golden persons, program years) of the linked
    people, read at one version each; the golden persons and years are computed once per
    set of versions."""
    inputs = [_version(lake.identity("person_xref")), _version(lake.silver("person_record"))]
    enrollment_path = lake.silver("enrollment")
    inputs.append(_version(enrollment_path) if delta.exists(enrollment_path) else
                  (str(enrollment_path), "", state.ABSENT))
    xref = delta.frame(inputs[0][0], version=inputs[0][2])
    records = delta.frame(inputs[1][0], version=inputs[1][2])
    key = (*inputs, model.as_of, people.FIRST_YEAR)
    if key not in _LAST_PEOPLE:
        enrollment = state.read(lake, "enrollment", version=inputs[2][2])
        persons = people.golden_persons(records, xref)
        years = people.program_years(enrollment, xref, people.FIRST_YEAR, model.as_of)
        _LAST_PEOPLE.clear()
        _LAST_PEOPLE[key] = persons, years
    persons, years = _LAST_PEOPLE[key]
    return records, xref, persons, years


def _write(lake: Lake, layer: str, frames: Mapping[str, pl.DataFrame]) -> None:
    for name, frame in frames.items():
        delta.overwrite(lake.table(layer, name), frame.to_arrow())
        crash.point("marts.after_first_mart")


def _identifier_checks(lake: Lake, marts: tuple[str, ...], records: pl.DataFrame
                       ) -> Published:
    """The tables as written, and the identifier scan of those that must be free of them."""
    tables = {m: delta.frame(lake.gold(m)) for m in marts}
    full_names = (records["first_name"] + " " + records["last_name"]).drop_nulls().unique()
    out = Published(tables=tables)
    for mart in marts:
        if load_marts().marts[mart].identifier_free:
            findings = scanner.scan(tables[mart], full_names)
            out.checks.append(Check(mart, "no_direct_identifiers", not findings,
                                    {"findings": [f.__dict__ for f in findings]}))
    return out


def _audit_holdback(lake: Lake, who: Mapping[str, str | None], asset: str, applied: int, held: int,
                    **extra: Any) -> None:
    """What the hold-back let through and kept, for the restricted audit log only: even a
    rounded count in metadata tells "nothing held back" from "one person held back"."""
    audit.record(lake, "disclosure_holdback", f"{asset}: changes applied and held back",
                 asset=asset, **who,
                 details={"changes_applied": applied, "changes_held_back": held, **extra})


def publish_marts(lake: Lake, who: Mapping[str, str | None]) -> Published:
    """Indicators and overlap (cell-key perturbed, from the held-back basis) and the
    restricted contact directory. `who`: the run and launcher, for the audit event.
    Raises config.MissingSecretError without the pseudonym key."""
    model, policy = load_model(), load_policy()
    cell_secret = derive_key(config.pseudonym_key(), "cellkey")
    records, xref, persons, years = _people(lake, model)
    with locks.exclusive(lake, "gold"):
        previous = (delta.frame(lake.disclosure(BASIS))
                    if delta.exists(lake.disclosure(BASIS)) else None)
        moved = holdback.advance(previous, indicators.facts(years, persons), indicators.UNIT,
                                 indicators.ATTRIBUTES, policy.min_cell_size,
                                 **holdback.thresholds("indicators"))
        # Everyone the basis counts, including people held back after they left the
        # index (a merge, a record gone from a snapshot): without their keys the overlap
        # failed on them and the indicators silently dropped them.
        counted = moved.basis["person_id"].unique().sort()
        keys = pl.DataFrame({"person_id": counted,
                             "record_key": cellkey.record_keys(counted, cell_secret)})
        ind, ind_cells = indicators.build(moved.basis, keys, model, policy)
        ov, ov_cells = overlap.build(moved.basis, keys, policy, people.FIRST_YEAR,
                                     model.as_of.year)
        built = {"indicators": ind, "program_overlap": ov,
                 "contact_directory": contacts.build(records, xref)}
        assert tuple(built) == PUBLISHED
        # The basis first: the marts are a function of it, so a run that dies between
        # the two writes is completed by the next one.
        registers = {BASIS: moved.basis, "indicators_cells": ind_cells,
                     "program_overlap_cells": ov_cells}
        assert set(registers) == set(REGISTERS)
        _write(lake, "disclosure", registers)
        _write(lake, "gold", built)
    out = _identifier_checks(lake, tuple(built), records)
    out.registers = {name: frame.height for name, frame in registers.items()}
    for mart in sorted(load_marts().aggregates):
        small = out.tables[mart].filter(pl.col("persons") < policy.min_cell_size).height
        out.checks.append(Check(mart, "min_cell_size", small == 0,
                                {"published_small_cells": small}))
        out.metadata[mart] = {"cells_not_published": int(built[mart]["persons"].is_null()
                                                         .sum())}
    out.metadata["indicators"]["max_perturbation"] = policy.max_perturbation
    _audit_holdback(lake, who, "gold/indicators", moved.applied, moved.held_back)
    return out


def publish_research(lake: Lake, who: Mapping[str, str | None]) -> Published:
    """The de-identified research person file and its participation, k-anonymous over the
    whole record. Night to night, the file changes only in groups of identical changes
    (analysts read it, so comparing two versions must single nobody out)."""
    model, policy = load_model(), load_policy()
    key = derive_key(config.pseudonym_key(), research.PSEUDONYM_LABEL)
    records, xref, persons, years = _people(lake, model)
    built = research.build(persons, years, key, policy, people.FIRST_YEAR, model.as_of)
    with locks.exclusive(lake, "gold"):
        before = None
        if delta.exists(lake.gold("research_person")):
            before = (delta.frame(lake.gold(RESEARCH[0])),
                      delta.frame(lake.gold(RESEARCH[1])))
        moved = holdback.advance_file(before, built.persons, built.participation,
                                      policy.research_quasi_identifiers, policy.k_anonymity,
                                      **holdback.thresholds("gold/research"))
        _write(lake, "gold", {
            "research_person": moved.persons.sort("pseudonym"),
            "research_participation": moved.participation.sort(
                ["pseudonym", "program", "period"])})
    _audit_holdback(lake, who, "gold/research_person", moved.applied, moved.held_back,
                    records_suppressed=built.anonymity.suppressed)
    out = _identifier_checks(lake, RESEARCH, records)
    out.checks += _anonymity_checks(out.tables, built.anonymity, policy)
    if built.anonymity.suppression_rate > policy.max_local_suppression:
        out.warnings.append(
            f"research_person: local suppression removed "
            f"{built.anonymity.suppression_rate:.1%} of people (policy: at most "
            f"{policy.max_local_suppression:.0%}) after every generalisation step; the "
            "local_suppression check fails and no research release can be made until the "
            "population is larger or the ladder coarser")
    out.metadata["research_person"] = _anonymity_metadata(built.anonymity, policy)
    return out


def _anonymity_checks(tables: dict[str, pl.DataFrame], anonymity: kanon.Anonymised,
                      policy: DisclosurePolicy) -> list[Check]:
    rp, rs = tables["research_person"], tables["research_participation"]
    k = kanon.whole_record_k(rp, rs, policy.research_quasi_identifiers)
    return [
        Check("research_person", "k_anonymity", rp.height == 0 or k >= policy.k_anonymity,
              {"k_measured_whole_record": k, "k_required": policy.k_anonymity}),
        Check("research_person", "local_suppression",
              anonymity.suppression_rate <= policy.max_local_suppression,
              {"suppression_rate": round(anonymity.suppression_rate, 2),
               "max_local_suppression": policy.max_local_suppression,
               "generalisation_level": anonymity.level})]


def _anonymity_metadata(anonymity: kanon.Anonymised, policy: DisclosurePolicy
                        ) -> dict[str, Any]:
    return {"k_required": policy.k_anonymity, "k_achieved": anonymity.k,
            "generalisation_level": anonymity.level,
            "generalisation_applied": anonymity.applied or ["none"],
            "participation_period": str(anonymity.participation_years),
            "suppression_rate": round(anonymity.suppression_rate, 2),
            "quasi_identifiers": [*policy.research_quasi_identifiers,
                                  "participation (program x period)"]}
