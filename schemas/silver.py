"""Pandera (polars) contracts for the silver entities, derived from the data model: types,
nullability, code lists, patterns, date ranges, key uniqueness and cross-field rules."""

from __future__ import annotations

from functools import lru_cache

import pandera.polars as pa
import polars as pl

from ids_lakehouse.model import DTYPES, DataModel, FieldDef, RuleDef, load_model

PROVENANCE = {"_file_sha256": pl.String, "_row_number": pl.Int64}


def _checks(model: DataModel, name: str, f: FieldDef) -> list[pa.Check]:
    checks = []
    if f.code_list:
        checks.append(pa.Check.isin(model.codes(f.code_list), name=f"code_list:{f.code_list}",
                                    error=f"code_list:{f.code_list}"))
    if f.pattern:
        pattern = f.pattern if f.pattern.endswith("$") else f.pattern + "$"
        checks.append(pa.Check.str_matches(pattern, name="pattern", error="pattern"))
    low, high = model.date_bound(f.min), model.date_bound(f.max)
    if low is not None:
        checks.append(pa.Check.ge(low, name="not_before", error="not_before"))
    if high is not None:
        checks.append(pa.Check.le(high, name="not_after", error="not_after"))
    return checks


def _end_not_before_start(data) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("end_date").is_null() | pl.col("start_date").is_null()
        | (pl.col("end_date") >= pl.col("start_date")))


CROSS_FIELD = {"end_not_before_start": _end_not_before_start}


def _rule_check(rule: RuleDef) -> pa.Check:
    if rule.requires_any:
        fields = list(rule.requires_any)

        def any_usable(data) -> pl.LazyFrame:
            return data.lazyframe.select(pl.any_horizontal(
                [pl.col(f).is_not_null() for f in fields]))

        return pa.Check(any_usable, name=rule.name, error=rule.name)
    return pa.Check(CROSS_FIELD[rule.name], name=rule.name, error=rule.name)


@lru_cache(maxsize=None)
def contract(entity: str, row_level: bool = False) -> pa.DataFrameSchema:
    """The entity's contract. `row_level` is for validating a source's rows before person
    records are deduplicated: the person key is not yet unique there."""
    model = load_model()
    e = model.entities[entity]
    columns = {
        name: pa.Column(DTYPES[f.type], nullable=f.nullable, checks=_checks(model, name, f),
                        description=f.description,
                        metadata={"classification": f.classification,
                                  "legal_regime": f.legal_regime})
        for name, f in e.fields.items()}
    provenance = {n: pa.Column(t, nullable=False) for n, t in PROVENANCE.items()
                  if n not in columns}
    return pa.DataFrameSchema(
        {**columns, **provenance},
        checks=[_rule_check(r) for r in e.rules],
        unique=None if (row_level and "_row_number" not in e.key) else (e.key or None),
        name=f"silver.{entity}", strict=False)
