"""Cell-key perturbation of published counts (the method of the Australian Bureau of
Statistics' TableBuilder and of the UK 2021 census: Fraser & Wooton, "A proposed method
for confidentialising tabular output to protect against differencing", 2005; Marley &
Leaver, ONS 2011; see docs/adr/0001-aggregate-disclosure-control.md).

Every person gets a secret *record key*, a uniform 32-bit number derived with a keyed hash
from their person_id. A cell's *cell key* is the sum of its persons' record keys modulo
2^32, so it is uniform, it depends only on which persons are in the cell, and it is the
same every night the cell holds the same persons. The cell key picks the perturbation from
the declared distribution (the "p-table"): the same cell always gets the same noise, so
repeating or averaging a query reveals nothing, and totals are perturbed on their own (a
table is not additive), so subtracting published cells yields noise, not counts.

A count is published only when its true value and its perturbed value are both at least
the minimum cell size; every other cell, zero included, is published as null, so a null
says "fewer than min_cell + D" and nothing about zero versus small.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

MODULUS = 1 << 32


def record_keys(person_ids: pl.Series, key: bytes) -> pl.Series:
    """The secret record key of each person (UInt32), a keyed BLAKE2b of the person_id."""
    return pl.Series("record_key", [
        int.from_bytes(hashlib.blake2b(p.encode(), key=key[:64], digest_size=4).digest(),
                       "big") for p in person_ids.to_list()], dtype=pl.UInt32)


def cell_key(record_key_sum: pl.Expr) -> pl.Expr:
    """A cell's key from the sum of its persons' record keys (Int64 sums do not overflow
    below two billion persons)."""
    return (record_key_sum.cast(pl.Int64) % MODULUS).cast(pl.Int64)


def perturbation(cell_keys: pl.Expr, ptable: dict[int, float]) -> pl.Expr:
    """The noise a cell key selects: the p-table's inverse CDF at cell_key / 2^32."""
    values = sorted(ptable)
    bounds = np.cumsum([ptable[v] for v in values])
    expr = pl.lit(values[-1], dtype=pl.Int64)
    for value, upper in zip(reversed(values[:-1]), reversed(bounds[:-1])):
        expr = pl.when(cell_keys < int(round(upper * MODULUS))).then(
            pl.lit(value, dtype=pl.Int64)).otherwise(expr)
    return expr


def publish(count: pl.Expr, key: pl.Expr, ptable: dict[int, float], min_cell: int
            ) -> tuple[pl.Expr, pl.Expr]:
    """(published value, reason it is not published or null): null unless both the true
    and the perturbed count reach `min_cell`."""
    noisy = count + perturbation(key, ptable)
    published = pl.when((count >= min_cell) & (noisy >= min_cell)).then(noisy) \
        .otherwise(None).cast(pl.Int64)
    reason = (pl.when(count < min_cell).then(pl.lit("below_min_cell"))
              .when(noisy < min_cell).then(pl.lit("below_min_cell_after_perturbation"))
              .otherwise(None))
    return published, reason
