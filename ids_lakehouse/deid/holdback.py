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

The threshold of each transition is k plus a secret keyed amount in 0..spread: an insider
who can deliver records (k - 1 fakes identical to a target's change, to see whether the
group is released) learns nothing from the night it appears, except at the ends of the
range. The cost is lag: a transition waits for up to k + spread - 1 others of its kind.
What is held back is counted in the restricted audit log only. An insider who delivers
k + spread fakes is always released and can count: the hold-back assumes data providers
do not inject records (docs/adr/0001).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TypedDict, Unpack

import polars as pl

from ids_lakehouse.deid import kanon

_BEFORE, _AFTER = "_before_", "_after_"


@dataclass(frozen=True)
class Advanced:
    basis: pl.DataFrame
    applied: int        # units that changed and moved forward
    held_back: int      # units whose change is waiting for k of its kind
    transitions_held: int


class Thresholds(TypedDict, total=False):
    """Keyword arguments of advance() (and advance_file()) for the holdback thresholds."""
    secret: bytes | None
    spread: int


def thresholds(label: str) -> Thresholds:
    """The secret, per-transition thresholds of one published series (`label`): keyword
    arguments for advance() and advance_file()."""
    from ids_lakehouse.config import pseudonym_key
    from ids_lakehouse.deid.policy import load_policy
    from ids_lakehouse.deid.pseudonym import derive_key

    return {"secret": derive_key(pseudonym_key(), f"holdback/{label}"),
            "spread": load_policy().holdback_threshold_spread}


def _threshold(transitions: pl.DataFrame, k: int, secret: bytes | None, spread: int
               ) -> pl.Series:
    """Each transition's threshold: k, or with a secret, k + a keyed hash of the transition
    mod (spread + 1), so an insider who delivers records identical to a target's change
    cannot tell from the night the group appears whether the target was in it (except at
    the ends of the range)."""
    if secret is None or spread == 0:
        return pl.Series("_threshold", [k] * transitions.height, dtype=pl.Int64)
    text = transitions.select(pl.concat_str(pl.all().cast(pl.String).fill_null("\x00"),
                                            separator="\x1f"))[:, 0].to_list()
    return pl.Series("_threshold", [
        k + int.from_bytes(hashlib.blake2b(t.encode(), key=secret[:64], digest_size=8)
                           .digest(), "big") % (spread + 1) for t in text], dtype=pl.Int64)


def advance(basis: pl.DataFrame | None, current: pl.DataFrame, unit: list[str],
            attributes: list[str], k: int, secret: bytes | None = None, spread: int = 0
            ) -> Advanced:
    """The next basis: `basis` with every transition to `current` that at least its
    threshold (k, or k..k+spread keyed by `secret`) of units share applied. `unit`
    identifies a row (one row per unit in both frames); `attributes` are the columns a
    published table is cut by."""
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
    kinds = changed.select(transition).unique()
    kinds = kinds.with_columns(_threshold(kinds, k, secret, spread))
    sized = changed.join(kinds, on=transition, how="left", nulls_equal=True).with_columns(
        pl.len().over(transition).alias("_n"))
    moving = sized.filter(pl.col("_n") >= pl.col("_threshold"))
    waiting = sized.filter(pl.col("_n") < pl.col("_threshold"))
    arrived = moving.filter(pl.col("_in_after").fill_null(False)).select(
        *unit, *[pl.col(_AFTER + a).alias(a) for a in attributes])
    kept = basis.join(moving.select(unit), on=unit, how="anti", nulls_equal=True)
    return Advanced(
        basis=pl.concat([kept, arrived.cast(basis.schema)]),
        applied=moving.height, held_back=waiting.height,
        transitions_held=waiting.select(transition).unique().height)


# -- person-level files: a research file is a set of whole records ---------------------------

@dataclass(frozen=True)
class FileAdvanced:
    persons: pl.DataFrame
    participation: pl.DataFrame
    applied: int
    held_back: int
    whole_change_set_held: bool


def advance_file(before: tuple[pl.DataFrame, pl.DataFrame | None] | None,
                 persons: pl.DataFrame, participation: pl.DataFrame | None,
                 fields: list[str], k: int, id_column: str = "pseudonym",
                 **thresholds: Unpack[Thresholds]) -> FileAdvanced:
    """The next version of a person-level file, given the previous one: records enter,
    change or leave only in groups of at least k identical changes (whole record before,
    whole record after), and if even that would leave a class under k, the whole change
    set waits."""
    after = kanon.records(persons.select(id_column, *fields), participation, id_column)
    keys = [*fields, kanon.PARTICIPATION]
    if before is None or set(before[0].columns) != {id_column, *fields}:
        rows, applied, held, whole = after, after.height, 0, False
    else:
        previous = kanon.records(before[0], before[1], id_column).select(after.columns)
        moved = advance(previous, after, [id_column], keys, k, **thresholds)
        rows, applied, held, whole = moved.basis, moved.applied, moved.held_back, False
        if rows.height and kanon.k_of(rows, keys) < k:
            rows, whole = previous, True
    kept_persons, kept_participation = kanon.unrecords(rows, id_column)
    return FileAdvanced(kept_persons, kept_participation, applied, held, whole)
