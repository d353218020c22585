"""The defender's side of the interval (LP) attack: certify, from the true counts, that the
attacker's interval for a cell is wide, without solving the attacker's LPs.

The attacker's interval for a cell is [min, max] of the cell over every table consistent
with what is published (each published count p bounds its cell to [p - D, p + D] ∩
[published_min, ∞), each null to `null_bounds`, every aggregate is the sum of its finest
cells). The true table is one such table. Moving one finest cell f of it by δ keeps every
constraint satisfied as long as every published cell containing f has that much slack, so

    up(f)   = min over cells c ∋ f of (upper bound of c − true c)
    down(f) = min(true f, min over cells c ∋ f of (true c − lower bound of c))

are feasible moves, and the attacker's interval for a cell A contains
[true A − max_{f ∈ A} down(f), true A + max_{f ∈ A} up(f)].

A single move is blocked wherever one cell containing f has no slack (its noise at the
extreme). Pair moves get round that: f up and a sibling g (the same in every dimension
but d) down by the same amount leaves every cell containing both unchanged (those with d
= ALL) and moves a cell that fixes d to f's value. So, per dimension d,

    pair_up_d(f) = min(min over c ∋ f fixing d of slack up,
                       max over siblings g of min(true g, min over c ∋ g fixing d of
                                                  slack down))

and symmetrically down; a cell A that fixes d contains f and not g. A cell whose certified
interval reaches 0 or is at least `min_width` wide cannot be narrowed to a small count by
any amount of LP; only the cells left uncertified need the attacker's LPs. Sound (every
certificate is a pair of feasible tables), not complete.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import polars as pl


def certify(published: pl.DataFrame, truth: pl.DataFrame, fixed: Sequence[str],
            additive: Sequence[str], count: str, D: int,
            null_bounds: tuple[int, int], published_min: int, all_value: str = "ALL"
            ) -> pl.DataFrame:
    """One row per cell: the keys, `true`, `published` and the certified interval
    [`cert_lo`, `cert_hi`] that the attacker's LP interval contains."""
    keys = [*fixed, *additive]
    cells = published.select(*keys, pl.col(count).alias("published")).join(
        truth.select(*keys, pl.col(count).alias("true")), on=keys, how="left").with_columns(
        pl.col("true").fill_null(0))
    lo = pl.when(pl.col("published").is_null()).then(pl.lit(null_bounds[0])).otherwise(
        pl.max_horizontal(pl.col("published") - D, pl.lit(published_min)))
    hi = pl.when(pl.col("published").is_null()).then(pl.lit(null_bounds[1])).otherwise(
        pl.col("published") + D)
    cells = cells.with_columns((hi - pl.col("true")).alias("slack_up"),
                               (pl.col("true") - lo).alias("slack_down"))
    finest = cells.filter(*[pl.col(d) != all_value for d in additive]).select(
        *keys, pl.col("true").alias("true_f"))
    combos = [kept for r in range(len(additive) + 1)
              for kept in itertools.combinations(additive, r)]
    # up(f), down(f): the tightest slack over the cells that contain f.
    moves = finest
    for i, kept in enumerate(combos):
        level = cells.filter(*[pl.col(d) == all_value for d in additive if d not in kept],
                             *[pl.col(d) != all_value for d in kept]).select(
            *fixed, *kept, pl.col("slack_up").alias(f"u{i}"),
            pl.col("slack_down").alias(f"d{i}"))
        moves = moves.join(level, on=[*fixed, *kept], how="left")
    moves = moves.with_columns(
        pl.min_horizontal([pl.col(f"u{i}") for i in range(len(combos))])
        .clip(lower_bound=0).alias("up"),
        pl.min_horizontal([pl.col("true_f"),
                           *[pl.col(f"d{i}") for i in range(len(combos))]])
        .clip(lower_bound=0).alias("down"))
    # Pair moves along each dimension d (see the module docstring).
    fixing = {d: [i for i, kept in enumerate(combos) if d in kept] for d in additive}
    for d in additive:
        ups = pl.min_horizontal([pl.col(f"u{i}") for i in fixing[d]]).clip(lower_bound=0)
        downs = pl.min_horizontal([pl.col("true_f"), *[pl.col(f"d{i}") for i in fixing[d]]]
                                  ).clip(lower_bound=0)
        siblings = [*fixed, *[a for a in additive if a != d]]
        scored = moves.with_columns(ups.alias("_u"), downs.alias("_d"))
        pair_moves = []
        for mine, theirs, name in (("_u", "_d", f"pu_{d}"), ("_d", "_u", f"pd_{d}")):
            # The best sibling other than f itself: the group's top value, or its second
            # when f is the (only) top.
            ranked = scored.with_columns(
                pl.col(theirs).max().over(siblings).alias("_top"),
                (pl.col(theirs) == pl.col(theirs).max().over(siblings)).sum().over(siblings)
                .alias("_ntop"),
                pl.col(theirs).sort(descending=True).slice(1, 1).first().over(siblings)
                .alias("_second"))
            other = pl.when((pl.col(theirs) == pl.col("_top")) & (pl.col("_ntop") == 1)) \
                .then(pl.col("_second")).otherwise(pl.col("_top"))
            pair_moves.append(ranked.select(pl.min_horizontal(pl.col(mine), other.fill_null(0))
                                      .alias(name))[name])
        moves = moves.with_columns(pair_moves)
    moves = moves.select(*keys, "up", "down", *[f"pu_{d}" for d in additive],
                         *[f"pd_{d}" for d in additive])
    # For each cell, the best single or pair move of any finest cell inside it (a pair
    # along d only for a cell that fixes d, so the sibling lies outside it).
    parts = []
    for kept in combos:
        up = pl.max_horizontal(["up", *[f"pu_{d}" for d in kept]])
        down = pl.max_horizontal(["down", *[f"pd_{d}" for d in kept]])
        best = moves.group_by([*fixed, *kept]).agg(up.max().alias("up"),
                                                   down.max().alias("down"))
        parts.append(best.with_columns([pl.lit(all_value).alias(d) for d in additive
                                        if d not in kept]).select(*keys, "up", "down"))
    best = pl.concat(parts)
    return (cells.join(best, on=keys, how="left")
            .with_columns(pl.col("up", "down").fill_null(0))
            .select(*keys, "true", "published",
                    (pl.col("true") - pl.col("down")).alias("cert_lo"),
                    (pl.col("true") + pl.col("up")).alias("cert_hi")))


def uncertified(certified: pl.DataFrame, min_cell: int, min_width: int = 3) -> pl.DataFrame:
    """Cells not certified safe: safe means the attacker's interval is not a single value
    and is not a narrow (under `min_width`) interval inside 1..min_cell-1. These need the
    attacker's LPs."""
    width = pl.col("cert_hi") - pl.col("cert_lo")
    safe = (width >= 1) & ((width >= min_width) | (pl.col("cert_lo") <= 0)
                           | (pl.col("cert_hi") >= min_cell))
    return certified.filter(~safe)
