"""Program overlap: unduplicated people per program and per pair of programs over the whole
window, plus children under six served by any early-childhood program, from the same
held-back basis as the indicators and protected the same way (cell-key perturbation and a
minimum cell size: a pair count minus a program count is noise, not a small group)."""

from __future__ import annotations

import itertools

import polars as pl

from ids_lakehouse.deid import cellkey
from ids_lakehouse.deid.policy import DisclosurePolicy

EARLY_CHILDHOOD = ("CHILDCARE_SUBSIDY", "MEDICAID")
EARLY_CHILDHOOD_LABEL = "EARLY_CHILDHOOD_UNDER_6"


def build(basis: pl.DataFrame, record_keys: pl.DataFrame, policy: DisclosurePolicy,
          first_year: int, last_year: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(published table, restricted cell register). `basis`: indicators.facts() rows as
    published; `record_keys`: person_id, record_key."""
    keys = dict(record_keys.select("person_id", "record_key").iter_rows())
    members = basis.group_by("program").agg(pl.col("person_id").unique())
    sets = {p: set(ids) for p, ids in members.iter_rows()}
    young = set(basis.filter(pl.col("program").is_in(EARLY_CHILDHOOD)
                             & pl.col("under_6"))["person_id"])
    groups = [(p, None, s) for p, s in sorted(sets.items())]
    groups += [(a, b, sets[a] & sets[b]) for a, b in itertools.combinations(sorted(sets), 2)]
    groups.append((EARLY_CHILDHOOD_LABEL, None, young))
    df = pl.DataFrame([(a, b, len(s), sum(keys[p] for p in s)) for a, b, s in groups],
                      schema={"program_a": pl.String, "program_b": pl.String,
                              "persons": pl.Int64, "key_sum": pl.Int64}, orient="row")
    published, reason = cellkey.publish(pl.col("persons"), cellkey.cell_key(pl.col("key_sum")),
                                        policy.cell_key_perturbation, policy.min_cell_size)
    cells = df.with_columns(published.alias("published"), reason.alias("reason"))
    table = cells.select("program_a", "program_b", pl.col("published").alias("persons"),
                         pl.lit(first_year).alias("first_year"),
                         pl.lit(last_year).alias("last_year"))
    register = cells.filter(pl.col("persons") > 0).select(
        "program_a", "program_b", pl.col("persons").alias("true_persons"), "published",
        "reason", cellkey.cell_key(pl.col("key_sum")).alias("cell_key"))
    return table, register
