"""Hold back small changes between two publications, so that differencing them singles
nobody out.

Published tables are a function of a *basis*: one row per unit (e.g. a person in a program
in a year) with the attributes the tables are cut by. Publishing a new basis lets anyone
compare the two nights' tables, and every cell whose persons changed shows it; a change of
one or two persons is then located to its finest cell (the "three new clients" attack).
So the basis moves forward by *transitions* only: all units that change the same way (same
attributes before, same attributes after; "before" empty for an arrival, "after" empty for
a departure) move together once at least `k` of them do, and wait otherwise. Between two
publications every change is then shared by at least k indistinguishable units, which is
the k-anonymity of the change set that consecutive research releases are held to as well.

The cost is lag: a transition with fewer than k units waits for more of its kind. What is
held back is counted (never listed) in the metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

_BEFORE, _AFTER = "_before_", "_after_"


@dataclass(frozen=True)
class Advanced:
    basis: pl.DataFrame
    applied: int        # units that changed and moved forward
    held_back: int      # units whose change is waiting for k of its kind
    transitions_held: int


def advance(basis: pl.DataFrame | None, current: pl.DataFrame, unit: list[str],
            attributes: list[str], k: int) -> Advanced:
    """The next basis: `basis` with every transition to `current` that at least `k` units
    share applied. `unit` identifies a row (one row per unit in both frames); `attributes`
    are the columns a published table is cut by."""
    current = current.select(*unit, *attributes)
    if basis is None:
        return Advanced(basis=current, applied=current.height, held_back=0,
                        transitions_held=0)
    basis = basis.select(*unit, *attributes)
    before = basis.rename({a: _BEFORE + a for a in attributes}).with_columns(
        pl.lit(True).alias("_in_before"))
    after = current.rename({a: _AFTER + a for a in attributes}).with_columns(
        pl.lit(True).alias("_in_after"))
    both = before.join(after, on=unit, how="full", coalesce=True, nulls_equal=True)
    same = pl.col("_in_before").fill_null(False) & pl.col("_in_after").fill_null(False)
    for a in attributes:
        same = same & pl.col(_BEFORE + a).eq_missing(pl.col(_AFTER + a))
    changed = both.filter(~same)
    transition = ["_in_before", "_in_after", *[_BEFORE + a for a in attributes],
                  *[_AFTER + a for a in attributes]]
    sized = changed.with_columns(pl.len().over(transition, ).alias("_n"))
    moving = sized.filter(pl.col("_n") >= k)
    waiting = sized.filter(pl.col("_n") < k)
    arrived = moving.filter(pl.col("_in_after").fill_null(False)).select(
        *unit, *[pl.col(_AFTER + a).alias(a) for a in attributes])
    kept = basis.join(moving.select(unit), on=unit, how="anti", nulls_equal=True)
    return Advanced(
        basis=pl.concat([kept, arrived.cast(dict(basis.schema))]),
        applied=moving.height, held_back=waiting.height,
        transitions_held=waiting.select(transition).unique().height)
