"""The intruder's attacks on what the lakehouse publishes: the measurements that say whether
disclosure control works. Dagster-free (polars, numpy, scipy, pycanon); every attack returns
a small dict of counts and rates, never a person's value.

Threat model (what the attacker knows): the published tables and files, the protection
method and its parameters (min cell, maximum perturbation D, what a null means), and, for
re-identification, exact background knowledge of the true population.

Attacks and their sources in the statistical disclosure control (SDC) literature:

- `lp_interval_attack`: the interval (linear programming) attack on a set of additive
  tables, the "audit" of cell suppression: for every unpublished cell, the minimum and
  maximum of its value under every published equation and bound of the release
  (Fischetti & Salazar, "Solving the cell suppression problem on tabular data with linear
  constraints", Management Science 2001; Hundepool et al., *Statistical Disclosure Control*,
  Wiley 2012, ch. 4 and 5; the audit of tau-Argus and sdcTable). Cheap bound propagation
  first (iterated interval arithmetic over every sum equation, the "shuttle"-style
  bounding of Buzzigoli & Giusti 1999), then LPs solved by HiGHS (Huangfu & Hall 2018).
  With perturbation, published counts enter as intervals [p-D, p+D], which is how the
  cell-key method is attacked (Fraser & Wooton, "A proposed method for confidentialising
  tabular output to protect against differencing", UNECE SDC work session 2005, the ABS
  TableBuilder method; ONS, *Cell key perturbation* for the 2021 Census).
- `denominator_attack`: recovery of an unpublished denominator from a published rate and
  its numerator, then differencing of the denominators along each additive dimension
  (disclosure by differencing/linked tables: Hundepool et al. 2012, sec. 5.6; Duncan,
  Elliot & Salazar-Gonzalez, *Statistical Confidentiality*, Springer 2011, ch. 6).
- `overlap_attack`: differencing of a program count and a program-pair count
  (people in A and not in B), the same differencing attack on the overlap table.
- `differencing_attack`, `research_differencing`: differencing of two releases in time
  (Fraser & Wooton 2005; ONS/ABS guidance on consistent perturbation; for microdata, the
  requirement that the delta between releases is itself k-anonymous follows Byun, Sohn,
  Bertino & Li, "Secure anonymization for incremental datasets", SDM 2006, and Xiao & Tao,
  "m-invariance", SIGMOD 2007).
- `reidentification_attack`: record linkage of the released person file against the
  population using quasi-identifiers (Sweeney, "k-anonymity: a model for protecting
  privacy", 2002; Elliot, Mackey, O'Hara & Tudor, *The Anonymisation Decision-Making
  Framework*, UKAN 2016, and Elliot et al.'s "data intrusion simulation"), with program
  participation and its timing as quasi-identifiers.
- `k_whole_record`: k-anonymity (Samarati & Sweeney 1998) over the whole released record,
  computed with polars and confirmed by pycanon (Sainz-Pardo Diaz & Lopez Garcia, 2022).
"""

from __future__ import annotations

import itertools
import math
import re
import time
from typing import Sequence

import numpy as np
import polars as pl
from scipy import sparse
from scipy.optimize import linprog

ALL = "ALL"
BIG = 1e9               # "no upper bound" in interval arithmetic (exact in float64 sums)
_EPS = 1e-6
BROAD_RACE = ("HISPANIC", "WHITE", "BLACK", "ASIAN")   # every other value -> OTHER


# --------------------------------------------------------------------------------------
# Shared: intervals a published count gives the attacker
# --------------------------------------------------------------------------------------

def published_bounds(values: np.ndarray, D: int, null_bounds: tuple[float, float | None],
                     published_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the true value of each cell from what is published.

    `values`: float array, NaN where the cell is not published. A published p gives
    [max(p - D, 0), p + D], raised to `published_min` when p >= published_min (a count is
    published only when its true value is at least the minimum). A null gives
    `null_bounds` (upper None = unbounded). Old protection: D = 0, null_bounds = (0, None),
    published_min = 0. Cell-key perturbation with min cell m: D, (0, m - 1 + D), m."""
    pub = ~np.isnan(values)
    v = np.where(pub, values, 0.0)
    lo = np.where(pub, np.maximum(v - D, 0.0), float(null_bounds[0]))
    if published_min > 0:
        lo = np.where(pub & (v >= published_min), np.maximum(lo, published_min), lo)
    null_hi = BIG if null_bounds[1] is None else float(null_bounds[1])
    hi = np.where(pub, v + D, null_hi)
    return lo, hi


def _width_bucket(width: np.ndarray) -> dict[str, int]:
    edges = [("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6-10", 6, 10),
             ("11-50", 11, 50), (">50", 51, math.inf)]
    return {name: int(((width >= lo) & (width <= hi)).sum()) for name, lo, hi in edges}


def _disclosure(lo: np.ndarray, hi: np.ndarray, min_cell: int) -> dict[str, np.ndarray]:
    """Masks of the disclosure classes of integer intervals [lo, hi]."""
    width = hi - lo
    inside = (lo >= 1) & (hi <= min_cell - 1)
    return {"exact": width == 0, "exact_nonzero": (width == 0) & (lo > 0),
            "narrow_small": inside & (width <= 2), "inside_small": inside}


# --------------------------------------------------------------------------------------
# a) LP interval attack
# --------------------------------------------------------------------------------------

class _Cube:
    """A set of additive tables (one per fixed key) as a sparse system: variables are the
    finest cells of each table, every published cell (finest or aggregate) is a row of A
    (A[row, var] = 1 when the finest cell is inside the cell)."""

    def __init__(self, table: pl.DataFrame, fixed: Sequence[str], additive: Sequence[str],
                 all_value: str):
        fixed, additive = list(fixed), list(additive)
        self.fixed, self.additive = fixed, additive
        self.values = {}
        for d in additive:
            vals = table[d].cast(pl.String)
            if vals.null_count():
                raise ValueError(f"additive dimension {d} has nulls")
            self.values[d] = sorted(v for v in vals.unique().to_list() if v != all_value)
        sizes = [len(self.values[d]) for d in additive]
        self.sizes = sizes
        self.strides = [int(np.prod(sizes[i + 1:])) for i in range(len(sizes))]
        self.nfin = int(np.prod(sizes))
        if fixed:
            keys = table.select(fixed).unique(maintain_order=True).with_row_index("_t")
            df = table.join(keys, on=fixed, how="left", nulls_equal=True,
                            maintain_order="left")
        else:
            keys = pl.DataFrame({"_t": [0]}, schema={"_t": pl.UInt32})
            df = table.with_columns(pl.lit(0, dtype=pl.UInt32).alias("_t"))
        self.keys = keys
        self.n_tables = keys.height
        codes = np.column_stack([
            df[d].cast(pl.String).replace_strict(
                {v: i for i, v in enumerate(self.values[d])}, default=-1,
                return_dtype=pl.Int64).to_numpy() for d in additive])
        t = df["_t"].to_numpy().astype(np.int64)
        self.n_rows = df.height
        self.row_table = t
        self.codes = codes
        pattern = np.zeros(self.n_rows, dtype=np.int64)
        for i in range(len(additive)):
            pattern |= (codes[:, i] < 0).astype(np.int64) << i
        self.pattern = pattern
        dup = pl.DataFrame({"t": t, "p": pattern,
                            "b": self._base(t, codes)}).is_duplicated()
        if dup.any():
            raise ValueError("the table has duplicate cells")
        rows, cols = [], []
        for p in np.unique(pattern):
            idx = np.flatnonzero(pattern == p)
            offsets = np.zeros(1, dtype=np.int64)
            for i in range(len(additive)):
                if p >> i & 1:
                    offsets = (offsets[:, None] + np.arange(sizes[i]) * self.strides[i]).ravel()
            base = self._base(t[idx], codes[idx])
            rows.append(np.repeat(idx, offsets.size))
            cols.append((base[:, None] + offsets[None, :]).ravel())
        r = np.concatenate(rows)
        c = np.concatenate(cols)
        self.nvar = self.n_tables * self.nfin
        self.A = sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(self.n_rows, self.nvar))
        order = np.argsort(c, kind="stable")
        self.nz_row, self.nz_var = r[order], c[order]
        self.present, self.starts = np.unique(self.nz_var, return_index=True)
        self.frame = df

    def _base(self, t: np.ndarray, codes: np.ndarray) -> np.ndarray:
        base = t.astype(np.int64) * self.nfin
        for i, s in enumerate(self.strides):
            base = base + np.where(codes[:, i] >= 0, codes[:, i], 0) * s
        return base

    def propagate(self, lo: np.ndarray, hi: np.ndarray, max_iter: int = 200):
        """Iterated interval propagation over every sum equation (each cell, finest or
        aggregate, equals the sum of its finest cells), with integer rounding. Returns
        variable bounds and tightened cell bounds (both valid for every integer solution
        consistent with the publication)."""
        lv = np.zeros(self.nvar)
        uv = np.full(self.nvar, BIG)
        Lc, Uc = lo.astype(float).copy(), hi.astype(float).copy()
        r, v, starts, present = self.nz_row, self.nz_var, self.starts, self.present
        for it in range(max_iter):
            Sl, Su = self.A @ lv, self.A @ uv
            Lc, Uc = np.maximum(Lc, Sl), np.minimum(Uc, Su)
            nl = np.maximum.reduceat((Lc - Su)[r] + uv[v], starts)
            nu = np.minimum.reduceat((Uc - Sl)[r] + lv[v], starts)
            nl = np.ceil(nl - _EPS)
            nu = np.floor(nu + _EPS)
            new_l, new_u = lv.copy(), uv.copy()
            new_l[present] = np.maximum(lv[present], nl)
            new_u[present] = np.minimum(uv[present], nu)
            if np.array_equal(new_l, lv) and np.array_equal(new_u, uv):
                break
            lv, uv = new_l, new_u
        Sl, Su = self.A @ lv, self.A @ uv
        Lc, Uc = np.maximum(Lc, Sl), np.minimum(Uc, Su)
        return lv, uv, Lc, Uc, Sl, Su, it + 1


class _TableLP:
    """The attacker's LP for one table: finest cells bounded by propagation, every
    aggregate cell's published interval as a constraint (rows the bounds already imply
    are left out), solved by HiGHS."""

    def __init__(self, A_t, lv, uv, Lc, Uc, Sl, Su, aggregate):
        eq = aggregate & (Lc == Uc) & ~((Sl == Lc) & (Su == Uc))
        ub = aggregate & ~eq & (Uc < Su - _EPS)
        lb = aggregate & ~eq & (Lc > Sl + _EPS)
        self.A_eq = A_t[eq] if eq.any() else None
        self.b_eq = Lc[eq] if eq.any() else None
        if ub.any() or lb.any():
            self.A_ub = sparse.vstack([A_t[ub], -A_t[lb]]).tocsr()
            self.b_ub = np.concatenate([Uc[ub], -Lc[lb]])
        else:
            self.A_ub, self.b_ub = None, None
        u = np.where(uv >= BIG / 2, np.inf, uv)
        self.bounds = np.column_stack([lv, u])
        self.solves = 0

    def solve(self, c: np.ndarray, time_limit: float):
        self.solves += 1
        res = linprog(c, A_ub=self.A_ub, b_ub=self.b_ub, A_eq=self.A_eq, b_eq=self.b_eq,
                      bounds=self.bounds, method="highs",
                      options={"time_limit": max(time_limit, 1.0), "presolve": True})
        if res.status != 0:
            return None
        return res.x


def _single_line_recoverable(cube: _Cube, null: np.ndarray) -> np.ndarray:
    """Cells that are the only null cell of some line (recoverable by one subtraction)."""
    n = len(cube.additive)
    df = pl.DataFrame({"_t": cube.row_table, "_null": null,
                       **{f"c{i}": cube.codes[:, i] for i in range(n)}}).with_row_index("_r")
    out = np.zeros(cube.n_rows, dtype=bool)
    for i in range(n):
        keys = ["_t", *[f"c{j}" for j in range(n) if j != i]]
        lines = df.group_by(keys).agg(pl.col("_null").sum().alias("_n"))
        hit = df.join(lines.filter(pl.col("_n") == 1), on=keys, how="semi") \
            .filter(pl.col("_null"))["_r"].to_numpy()
        out[hit] = True
    return out


def _interval_core(cube: _Cube, lo: np.ndarray, hi: np.ndarray, target: np.ndarray,
                   published: np.ndarray, min_cell: int, time_budget_s: float, sample: int,
                   seed: int, n_probe: int, truth: np.ndarray | None) -> dict:
    start = time.perf_counter()
    lv, uv, Lc, Uc, Sl, Su, iterations = cube.propagate(lo, hi)
    infeasible_rows = Lc > Uc + _EPS
    bad_var = np.zeros(cube.nvar, dtype=bool)
    bad_var[lv > uv + _EPS] = True
    bad_tables = set(np.unique(cube.row_table[infeasible_rows]).tolist())
    bad_tables |= set(np.unique(np.flatnonzero(bad_var) // cube.nfin).tolist())
    prop_seconds = time.perf_counter() - start

    tidx = np.flatnonzero(target)
    o_lo, o_hi = Lc[tidx], Uc[tidx]
    # Inner bounds: value ranges seen at feasible points of the LP (vertices). The LP's
    # interval contains them, so a cell whose inner range is already wide and reaches 0
    # or min_cell is proven safe without solving its own LPs.
    i_lo = np.full(tidx.size, np.inf)
    i_hi = np.full(tidx.size, -np.inf)
    lp_lo = np.full(tidx.size, np.nan)
    lp_hi = np.full(tidx.size, np.nan)
    t_of = cube.row_table[tidx]
    pub_t = published[tidx]
    rng = np.random.default_rng(seed)
    lps: dict[int, _TableLP] = {}
    tgt_by_table: dict[int, np.ndarray] = {}
    for t in np.unique(t_of):
        tgt_by_table[int(t)] = np.flatnonzero(t_of == t)
    aggregate = cube.pattern > 0
    solves = 0
    deadline = start + time_budget_s

    def table_lp(t: int) -> _TableLP:
        if t not in lps:
            rows = np.flatnonzero(cube.row_table == t)
            sl = slice(t * cube.nfin, (t + 1) * cube.nfin)
            A_t = cube.A[rows][:, sl].tocsr()
            lp = _TableLP(A_t, lv[sl], uv[sl], Lc[rows], Uc[rows], Sl[rows], Su[rows],
                          aggregate[rows])
            lp.rows = rows
            pos = np.full(cube.n_rows, -1)
            pos[rows] = np.arange(rows.size)
            lp.tA = A_t[pos[tidx[tgt_by_table[t]]]]
            lps[t] = lp
        return lps[t]

    def seen(t: int, x: np.ndarray) -> None:
        lp = lps[t]
        vals = lp.tA @ x
        k = tgt_by_table[t]
        i_lo[k] = np.minimum(i_lo[k], vals)
        i_hi[k] = np.maximum(i_hi[k], vals)

    def safe(k: np.ndarray) -> np.ndarray:
        a, b = np.ceil(i_lo[k] - _EPS), np.floor(i_hi[k] + _EPS)
        return (b - a >= 1) & (pub_t[k] | (a <= 0) | (b >= min_cell))

    def solved(k: np.ndarray) -> np.ndarray:
        return ~np.isnan(lp_lo[k]) & ~np.isnan(lp_hi[k])

    out_of_time = False
    # 1. probes per table: min and max of the sum of its targets, then random objectives
    for t, k in tgt_by_table.items():
        if t in bad_tables:
            continue
        lp = table_lp(t)
        objectives = [np.asarray(lp.tA.sum(axis=0)).ravel()]
        objectives.append(-objectives[0])
        for _ in range(n_probe):
            objectives.append(rng.normal(size=cube.nfin))
        for c in objectives:
            if time.perf_counter() > deadline:
                out_of_time = True
                break
            x = lp.solve(c, deadline - time.perf_counter())
            if x is not None:
                seen(t, x)
            if safe(k).all():
                break
    probe_solves = sum(lp.solves for lp in lps.values())

    # 2. the cells not proven safe, narrowest propagated interval first; then a sample
    feasible = ~np.isin(t_of, list(bad_tables)) if bad_tables else np.ones(tidx.size, bool)
    unsafe = np.flatnonzero(feasible & ~safe(np.arange(tidx.size)))
    unsafe = unsafe[np.argsort(o_hi[unsafe] - o_lo[unsafe], kind="stable")]
    others = np.setdiff1d(np.flatnonzero(feasible), unsafe)
    sampled = rng.choice(others, size=min(sample, others.size), replace=False) \
        if others.size else np.array([], dtype=np.int64)
    queue = [(int(i), False) for i in unsafe] + [(int(i), True) for i in sampled]
    for i, is_sample in queue:
        if time.perf_counter() > deadline:
            out_of_time = True
            break
        if not is_sample and safe(np.array([i]))[0]:
            continue
        t = int(t_of[i])
        lp = table_lp(t)
        row = lp.tA[tgt_by_table[t].searchsorted(i)].toarray().ravel()
        for sense, store, outer in ((1.0, lp_lo, o_lo), (-1.0, lp_hi, o_hi)):
            reached = (i_lo[i] <= outer[i] + _EPS) if sense > 0 else (i_hi[i] >= outer[i] - _EPS)
            if reached:
                store[i] = outer[i]
                continue
            x = lp.solve(sense * row, deadline - time.perf_counter())
            if x is None:
                break
            seen(t, x)
            val = float(row @ x)
            store[i] = math.ceil(val - _EPS) if sense > 0 else math.floor(val + _EPS)
    solves = sum(lp.solves for lp in lps.values())

    done = solved(np.arange(tidx.size))
    proven_safe = ~done & safe(np.arange(tidx.size)) & feasible
    best_lo = np.where(done, lp_lo, o_lo)
    best_hi = np.where(done, lp_hi, o_hi)
    classes = _disclosure(best_lo, best_hi, min_cell)
    prop = _disclosure(o_lo, o_hi, min_cell)
    null_t = ~pub_t
    unresolved = feasible & ~done & ~proven_safe & ~(classes["exact"] | classes["narrow_small"])
    result = {
        "tables": cube.n_tables, "cells": cube.n_rows,
        "targets": int(tidx.size), "targets_suppressed": int(null_t.sum()),
        "targets_published": int(pub_t.sum()),
        "exact": int(classes["exact"].sum()),
        "exact_nonzero": int(classes["exact_nonzero"].sum()),
        "exact_suppressed_nonzero": int((classes["exact_nonzero"] & null_t).sum()),
        "published_exact": int((classes["exact"] & pub_t).sum()),
        "narrow_small": int(classes["narrow_small"].sum()),
        "inside_small": int(classes["inside_small"].sum()),
        "prop_exact": int(prop["exact"].sum()),
        "prop_narrow_small": int(prop["narrow_small"].sum()),
        "prop_inside_small": int(prop["inside_small"].sum()),
        "lp_checked": int(done.sum()),
        "proven_safe_by_feasible_points": int(proven_safe.sum()),
        "unresolved": int(unresolved.sum()),
        "infeasible_tables": len(bad_tables),
        "lp_solves": int(solves), "lp_probe_solves": int(probe_solves),
        "out_of_time": out_of_time,
        "propagation_iterations": int(iterations),
        "propagation_seconds": round(prop_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "width_hist": _width_bucket(best_hi - best_lo),
        "width_hist_lp_checked": _width_bucket((best_hi - best_lo)[done]),
    }
    if truth is not None:
        tv = truth[tidx]
        ok = ~np.isnan(tv)
        result["truth_outside_interval"] = int((ok & ((tv < best_lo) | (tv > best_hi))).sum())
        result["exact_correct"] = int((ok & classes["exact"] & (tv == best_lo)).sum())
    return result


def lp_interval_attack(table: pl.DataFrame, fixed: Sequence[str], additive: Sequence[str],
                       count: str, D: int, null_bounds: tuple[float, float | None],
                       cells: pl.DataFrame | None = None, time_budget_s: float = 600.0, *,
                       min_cell: int = 11, published_min: int | None = None,
                       sample: int = 200, seed: int = 0, n_probe: int = 4,
                       truth: pl.DataFrame | None = None, all_value: str = ALL) -> dict:
    """Interval (LP) attack on every table of a release (one table per `fixed` key).

    Variables: the finest cells (no `all_value` in any additive dimension) of each table.
    Each published cell bounds the sum of its finest cells: a published p by
    [max(p-D, published_min), p+D], a null by `null_bounds` (upper None = unbounded).
    Published counts with D = 0 are exact. Targets: every null cell, and with D > 0 every
    published cell too; `cells` (a frame of key columns) restricts them.

    Method: (1) iterated interval propagation over all sum equations (integer rounding);
    (2) per table, a few LPs (min/max of the targets' sum, random objectives) give feasible
    points, so a target whose values at those points already span >= 1 and reach 0 or
    `min_cell` is proven safe; (3) HiGHS min and max for every other target, narrowest
    first, then for a random `sample` of the proven-safe ones, until `time_budget_s`.

    Returns counts over the targets, on the best interval known (LP when solved, else the
    propagated one, which is itself an attack): `exact` (width 0), `exact_nonzero`,
    `narrow_small` (width <= 2 inside [1, min_cell-1]), `inside_small` (inside
    [1, min_cell-1], any width), `published_exact` (a perturbed cell recovered exactly),
    `prop_*` (propagation alone), `single_line_recoverable` (null cells alone in a line: the
    classic one-subtraction attack), `lp_checked`, `proven_safe_by_feasible_points`,
    `unresolved` (not proven either way within the budget: must be 0 for a complete audit),
    `width_hist`, and, given `truth` (key columns + `count` with the true values),
    `truth_outside_interval` (0 unless the assumed protection model is wrong) and
    `exact_correct`."""
    if published_min is None:
        published_min = min_cell if D > 0 else 0
    fixed, additive = list(fixed), list(additive)
    cube = _Cube(table, fixed, additive, all_value)
    df = cube.frame
    values = df[count].cast(pl.Float64).to_numpy()
    null = np.isnan(values)
    lo, hi = published_bounds(values, D, null_bounds, published_min)
    target = null.copy() if D == 0 else np.ones(df.height, dtype=bool)
    if cells is not None:
        on = [c for c in cells.columns if c in df.columns]
        mark = df.with_row_index("_r").join(cells.select(on).unique(), on=on, how="semi")
        restrict = np.zeros(df.height, dtype=bool)
        restrict[mark["_r"].to_numpy()] = True
        target &= restrict
    true_values = None
    if truth is not None:
        true_values = (df.select([*fixed, *additive]).with_row_index("_r")
                       .join(truth.select([*fixed, *additive, count]),
                             on=[*fixed, *additive], how="left")
                       .sort("_r")[count].cast(pl.Float64).fill_null(np.nan).to_numpy())
    result = _interval_core(cube, lo, hi, target, ~null, min_cell, time_budget_s, sample,
                            seed, n_probe, true_values)
    result["single_line_recoverable"] = int((_single_line_recoverable(cube, null)
                                             & target).sum())
    return result


# --------------------------------------------------------------------------------------
# b) denominator attack
# --------------------------------------------------------------------------------------

def _rate_half_step(rates: np.ndarray) -> float:
    """Half the rounding step of the published rates (0.05 for one decimal)."""
    r = rates[~np.isnan(rates)]
    for d in range(0, 7):
        if np.allclose(r, np.round(r, d), rtol=0, atol=1e-9):
            return 0.5 * 10.0 ** -d
    return 1e-9


def recover_served(table: pl.DataFrame, fixed: Sequence[str], additive: Sequence[str],
                   count: str = "persons", rate: str = "rate_per_1000_served",
                   program: str = "program", rate_half_step: float | None = None
                   ) -> pl.DataFrame:
    """The published denominator behind each rate: served in [p*1000/(r+h), p*1000/(r-h)]
    (h = half the rounding step of the rates), intersected over the programs of the same
    denominator cell. Columns: the denominator keys (fixed without `program`, additive),
    `served_lo`, `served_hi` (integers), `served` (point), `inconsistent`."""
    keys = [f for f in fixed if f != program] + list(additive)
    h = _rate_half_step(table[rate].cast(pl.Float64).fill_null(np.nan).to_numpy()) \
        if rate_half_step is None else rate_half_step
    both = table.filter(pl.col(count).is_not_null() & pl.col(rate).is_not_null()
                        & (pl.col(rate) > 0))
    est = both.select(
        *keys,
        (pl.col(count) * 1000 / (pl.col(rate) + h) - _EPS).ceil().alias("lo"),
        pl.when(pl.col(rate) - h > 0).then((pl.col(count) * 1000 / (pl.col(rate) - h)
                                            + _EPS).floor()).otherwise(BIG).alias("hi"),
        (pl.col(count) * 1000 / pl.col(rate)).alias("point"))
    return est.group_by(keys).agg(
        pl.col("lo").max().alias("served_lo"), pl.col("hi").min().alias("served_hi"),
        pl.col("point").median().round(0).alias("served")).with_columns(
        (pl.col("served_lo") > pl.col("served_hi")).alias("inconsistent"),
        pl.col("served").clip(pl.col("served_lo"), pl.col("served_hi")))


def denominator_attack(table: pl.DataFrame, fixed: Sequence[str], additive: Sequence[str],
                       count: str = "persons", rate: str = "rate_per_1000_served", *,
                       D: int = 0, min_cell: int = 11, program: str = "program",
                       true_served: pl.DataFrame | None = None,
                       rate_half_step: float | None = None, rounds: int = 5,
                       lp: bool = False, null_bounds: tuple[float, float | None] = (0, None),
                       published_min: int | None = None, time_budget_s: float = 300.0,
                       all_value: str = ALL) -> dict:
    """Denominator attack: recover served from each published (persons, rate) pair
    (`recover_served`), so served is known to within [s_lo - D, s_hi + D], then difference
    the denominators along each additive dimension: in a line (total and its details) where
    exactly one detail is unknown, that detail = total - known details (point), with the
    interval [T_lo - sum hi, T_hi - sum lo]. Recovered details are reused, `rounds` times.

    `true_served`: denominator keys + `served` (true values), to score point claims.
    `lp=True` also runs `lp_interval_attack`'s engine on the served cube (known served as
    intervals; unknown served bounded below by each program's persons and above by their
    sum) and returns its counts under "lp".

    Returns `served_cells` (cells in the grid), `served_recovered` (served known from a
    rate), `served_exact` (the rate pins a single integer), `served_inconsistent`, `claims`
    (unknown cells differenced), `claims_small` (point in 1..min_cell-1), `certain`
    (interval width <= 2 inside 1..min_cell-1), `certain_exact` (width 0), and with
    `true_served`, `correct` / `correct_small` (point claims equal to the truth)."""
    if published_min is None:
        published_min = min_cell if D > 0 else 0
    fixed, additive = list(fixed), list(additive)
    keys = [f for f in fixed if f != program] + additive
    served = recover_served(table, fixed, additive, count, rate, program, rate_half_step)
    grid = table.select(keys).unique()
    # persons bounds per program, to bound the unknown served cells (served >= persons of
    # any one program, <= the sum over programs)
    values = table[count].cast(pl.Float64).fill_null(np.nan).to_numpy()
    plo, phi = published_bounds(values, D, null_bounds, published_min)
    pb = table.select(keys).with_columns(pl.Series("_plo", plo), pl.Series("_phi", phi)) \
        .group_by(keys).agg(pl.col("_plo").max(), pl.col("_phi").sum())
    cube = (grid.join(served, on=keys, how="left").join(pb, on=keys, how="left")
            .with_columns(
                pl.col("served").is_not_null().alias("known"),
                pl.max_horizontal(pl.col("served_lo") - D, pl.col("_plo"), 0)
                .alias("lo"),
                (pl.col("served_hi") + D).alias("hi")))
    known_lo = cube["lo"].to_numpy().astype(float)
    known = cube["known"].to_numpy()
    lo = np.where(known, known_lo, np.nan)
    hi = np.where(known, cube["hi"].to_numpy().astype(float), np.nan)
    point = np.where(known, cube["served"].fill_null(0).to_numpy().astype(float), np.nan)
    derived = np.zeros(cube.height, dtype=bool)
    frame = cube.select(keys).with_row_index("_r")
    n_claims = 0
    for _ in range(rounds):
        new = 0
        for d in additive:
            line = [k for k in keys if k != d]
            f = frame.with_columns(pl.Series("_lo", lo), pl.Series("_hi", hi),
                                   pl.Series("_pt", point),
                                   (pl.col(d) == all_value).alias("_total"))
            f = f.with_columns(pl.col("_lo").fill_nan(None), pl.col("_hi").fill_nan(None),
                               pl.col("_pt").fill_nan(None))
            agg = f.group_by(line).agg(
                pl.col("_lo").filter(pl.col("_total")).first().alias("T_lo"),
                pl.col("_hi").filter(pl.col("_total")).first().alias("T_hi"),
                pl.col("_pt").filter(pl.col("_total")).first().alias("T_pt"),
                pl.col("_lo").filter(~pl.col("_total")).sum().alias("K_lo"),
                pl.col("_hi").filter(~pl.col("_total")).sum().alias("K_hi"),
                pl.col("_pt").filter(~pl.col("_total")).sum().alias("K_pt"),
                pl.col("_pt").filter(~pl.col("_total")).null_count().alias("unknown"))
            agg = agg.filter((pl.col("unknown") == 1) & pl.col("T_pt").is_not_null())
            if agg.height == 0:
                continue
            hit = f.filter(~pl.col("_total") & pl.col("_pt").is_null()).join(
                agg, on=line, how="inner")
            r = hit["_r"].to_numpy()
            lo[r] = np.maximum((hit["T_lo"] - hit["K_hi"]).to_numpy(), 0)
            hi[r] = (hit["T_hi"] - hit["K_lo"]).to_numpy()
            point[r] = (hit["T_pt"] - hit["K_pt"]).to_numpy()
            derived[r] = True
            new += r.size
        n_claims += new
        if new == 0:
            break
    c_lo, c_hi, c_pt = lo[derived], hi[derived], point[derived]
    m = _disclosure(c_lo, c_hi, min_cell)
    small_pt = (c_pt >= 1) & (c_pt <= min_cell - 1)
    result = {
        "served_cells": cube.height,
        "served_recovered": int(known.sum()),
        "served_exact": int(((cube["served_lo"] == cube["served_hi"]).fill_null(False)).sum()),
        "served_inconsistent": int(cube["inconsistent"].fill_null(False).sum()),
        "claims": int(derived.sum()),
        "claims_small": int(small_pt.sum()),
        "certain": int(m["narrow_small"].sum()),
        "certain_exact": int((m["exact"] & (c_lo > 0)).sum()),
    }
    if true_served is not None:
        tv = (frame.join(true_served.select(*keys, pl.col("served").alias("_true")),
                         on=keys, how="left").sort("_r")["_true"]
              .cast(pl.Float64).fill_null(np.nan).to_numpy())[derived]
        result["correct"] = int((c_pt == tv).sum())
        result["correct_small"] = int(((c_pt == tv) & small_pt).sum())
    if lp:
        s_lo = np.where(known, known_lo, cube["_plo"].fill_null(0).to_numpy())
        s_hi = np.where(known, cube["hi"].fill_null(BIG).to_numpy().astype(float),
                        cube["_phi"].fill_null(BIG).to_numpy())
        sc = _Cube(cube.select(keys), [k for k in keys if k not in additive], additive,
                   all_value)
        truth = None
        if true_served is not None:
            truth = (sc.frame.with_row_index("_r").join(
                true_served.select(*keys, pl.col("served").alias("_true")), on=keys,
                how="left").sort("_r")["_true"].cast(pl.Float64).fill_null(np.nan).to_numpy())
        # sc.frame keeps cube's row order (left join, order maintained)
        result["lp"] = _interval_core(sc, s_lo, s_hi, ~known, known, min_cell,
                                      time_budget_s, 0, 0, 2, truth)
    return result


def overlap_attack(table: pl.DataFrame, D: int, null_bounds: tuple[float, float | None], *,
                   min_cell: int = 11, published_min: int | None = None,
                   count: str = "persons", truth: pl.DataFrame | None = None) -> dict:
    """Differencing on `program_overlap`: people in A and not in B = |A| - |A and B|, with
    interval [A_lo - AB_hi, A_hi - AB_lo]; and a hidden pair bounded by min(|A|, |B|).
    Per (first_year, last_year). Returns `differences`, `exact`, `narrow_small`,
    `inside_small` and, given `truth` (the same table with true counts), `exact_correct`."""
    if published_min is None:
        published_min = min_cell if D > 0 else 0
    period = [c for c in ("first_year", "last_year") if c in table.columns]
    values = table[count].cast(pl.Float64).fill_null(np.nan).to_numpy()
    lo, hi = published_bounds(values, D, null_bounds, published_min)
    t = table.with_columns(pl.Series("_lo", lo), pl.Series("_hi", hi))
    if truth is not None:
        t = t.join(truth.select(*period, "program_a", "program_b",
                                pl.col(count).alias("_true")),
                   on=[*period, "program_a", "program_b"], how="left", nulls_equal=True)
    else:
        t = t.with_columns(pl.lit(None, dtype=pl.Float64).alias("_true"))
    single = t.filter(pl.col("program_b").is_null()).select(
        *period, pl.col("program_a").alias("_p"), pl.col("_lo").alias("_slo"),
        pl.col("_hi").alias("_shi"), pl.col("_true").alias("_strue"))
    pairs = t.filter(pl.col("program_b").is_not_null())
    parts = []
    for side in ("program_a", "program_b"):
        j = pairs.join(single.rename({"_p": side}), on=[*period, side], how="inner")
        parts.append(j.select(
            (pl.col("_slo") - pl.col("_hi")).clip(lower_bound=0).alias("lo"),
            (pl.col("_shi") - pl.col("_lo")).alias("hi"),
            (pl.col("_strue") - pl.col("_true")).alias("true")))
        hidden = j.filter(pl.col(count).is_null()).select(
            pl.col("_lo").alias("lo"),
            pl.min_horizontal("_hi", "_shi").alias("hi"), pl.col("_true").alias("true"))
        parts.append(hidden)
    d = pl.concat(parts)
    m = _disclosure(d["lo"].to_numpy(), d["hi"].to_numpy(), min_cell)
    out = {"differences": d.height, **{k: int(v.sum()) for k, v in m.items()}}
    if truth is not None:
        tv = d["true"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        out["exact_correct"] = int((m["exact"] & (tv == d["lo"].to_numpy())).sum())
    return out


# --------------------------------------------------------------------------------------
# c) differencing two nights
# --------------------------------------------------------------------------------------

def differencing_attack(before: pl.DataFrame, after: pl.DataFrame, fixed: Sequence[str],
                        additive: Sequence[str], count: str = "persons",
                        truth: pl.DataFrame | None = None, all_value: str = ALL) -> dict:
    """Two nights of the same tables. A cell changed when its published value differs
    (null <-> value included; a cell absent one night counts as null).

    Per fixed key with a change, the attacker locates the changed person(s):
    (i) single-change hypothesis: for each additive dimension the values of the changed
        cells that fix it (the changed marginals); candidates are the finest combinations
        lying in every changed cell. One candidate = isolated.
    (ii) a finest cell that changed while every cell containing it that was published on
        either night also changed (how zeros turning suppressed pin a person).

    Returns `keys_changed`, `cells_changed`, `isolated_keys` (keys where (i) leaves one
    finest combination), `claims` (finest combinations claimed by (i) or (ii)), and given
    `truth` (fixed + additive columns: the changed persons' true finest combinations, one
    row each), `correct_claims` and `persons_isolated` (truth persons whose combination
    was claimed; the target is 0)."""
    fixed, additive = list(fixed), list(additive)
    keys = [*fixed, *additive]
    b = before.select(*keys, pl.col(count).alias("_b"))
    a = after.select(*keys, pl.col(count).alias("_a"))
    j = b.join(a, on=keys, how="full", coalesce=True, nulls_equal=True)
    j = j.with_columns(pl.col("_b").ne_missing(pl.col("_a")).alias("_changed"),
                       (pl.col("_b").is_not_null() | pl.col("_a").is_not_null())
                       .alias("_seen"))
    changed = j.filter(pl.col("_changed"))
    domain = {d: sorted(v for v in j[d].cast(pl.String).unique().to_list() if v != all_value)
              for d in additive}
    claims = []
    isolated_keys = 0
    if fixed:
        groups = changed.partition_by(fixed, as_dict=True, maintain_order=True)
    else:
        groups = {(): changed} if changed.height else {}
    for key, g in groups.items():
        key = key if isinstance(key, tuple) else (key,)
        combo, ok = {}, True
        for d in additive:
            vals = set(g.filter(pl.col(d) != all_value)[d].to_list())
            if len(vals) > 1:
                ok = False
                break
            if len(vals) == 1:
                combo[d] = vals.pop()
            elif len(domain[d]) == 1:
                combo[d] = domain[d][0]
            else:
                ok = False      # the change is not located in this dimension
                break
        if ok:
            isolated_keys += 1
            claims.append({**dict(zip(fixed, key)), **combo})
    # (ii) finest cells that changed with every seen ancestor changed
    fin = changed.filter(pl.all_horizontal([pl.col(d) != all_value for d in additive]))
    if fin.height:
        fin = fin.select(keys).with_row_index("_i")
        bad = set()
        status = j.filter(pl.col("_seen") & ~pl.col("_changed")).select(keys)
        for r in range(1, len(additive) + 1):
            for subset in itertools.combinations(additive, r):
                anc = fin.with_columns([pl.lit(all_value).alias(d) for d in subset])
                bad |= set(anc.join(status, on=keys, how="semi")["_i"].to_list())
        fin = fin.filter(~pl.col("_i").is_in(sorted(bad)))
        claims.extend(fin.drop("_i").to_dicts())
    schema = {k: j.schema[k] for k in keys}
    claimed = pl.DataFrame(claims, schema=schema, orient="row").unique() if claims \
        else pl.DataFrame(schema=schema)
    out = {"keys_changed": len(groups), "cells_changed": changed.height,
           "isolated_keys": isolated_keys, "claims": claimed.height}
    if truth is not None:
        t = truth.select(keys).cast(schema)
        out["correct_claims"] = claimed.join(t.unique(), on=keys, how="semi").height
        out["persons_isolated"] = t.join(claimed, on=keys, how="semi").height
    return out


def _signature(spells: pl.DataFrame, pid: str = "pseudonym") -> pl.DataFrame:
    """One row per person: the sorted set of (program, period) as one string."""
    return (spells.select(pid, (pl.col("program").cast(pl.String) + "@"
                                + pl.col("period").cast(pl.String)).alias("_s"))
            .unique().sort(pid, "_s").group_by(pid, maintain_order=True)
            .agg(pl.col("_s").str.join("|").alias("participation")))


def _whole_records(persons: pl.DataFrame, spells: pl.DataFrame,
                   qis: Sequence[str] | None) -> pl.DataFrame:
    qis = [c for c in persons.columns if c != "pseudonym"] if qis is None else list(qis)
    sig = _signature(spells)
    return persons.select("pseudonym", *[pl.col(q).cast(pl.String).fill_null("\u2205")
                                         for q in qis]) \
        .join(sig, on="pseudonym", how="left") \
        .with_columns(pl.col("participation").fill_null("")) \
        .select("pseudonym", pl.concat_str([*qis, "participation"], separator="\x1f")
                .alias("_record"))


def research_differencing(before_persons: pl.DataFrame, before_spells: pl.DataFrame,
                          after_persons: pl.DataFrame, after_spells: pl.DataFrame, k: int,
                          qis: Sequence[str] | None = None) -> dict:
    """Two releases of the research file to the same recipient (same pseudonyms). The
    records added or changed (by pseudonym) are grouped by their whole released record
    (person row + set of (program, period)); an intruder who knows who entered a program
    finds them among the delta. Returns `added`, `changed`, `removed`, `delta_records`,
    `delta_classes`, `delta_k` (smallest group, 0 when no delta), `delta_below_k` (records
    in groups smaller than k: the target is 0) and `delta_unique`."""
    rb = _whole_records(before_persons, before_spells, qis)
    ra = _whole_records(after_persons, after_spells, qis)
    j = ra.join(rb.rename({"_record": "_before"}), on="pseudonym", how="left")
    added = j.filter(pl.col("_before").is_null())
    changed = j.filter(pl.col("_before").is_not_null() & (pl.col("_before") != pl.col("_record")))
    removed = rb.join(ra, on="pseudonym", how="anti").height
    delta = pl.concat([added, changed])
    sizes = delta.group_by("_record").len()
    return {"added": added.height, "changed": changed.height, "removed": removed,
            "delta_records": delta.height, "delta_classes": sizes.height,
            "delta_k": int(sizes["len"].min()) if sizes.height else 0,
            "delta_below_k": int(sizes.filter(pl.col("len") < k)["len"].sum() or 0),
            "delta_unique": int(sizes.filter(pl.col("len") == 1).height)}


# --------------------------------------------------------------------------------------
# d) re-identification
# --------------------------------------------------------------------------------------

_YEAR = re.compile(r"^\d{4}$")
_BAND = re.compile(r"^(\d{4})-(\d{4})$")
_TOP = re.compile(r"^<=(\d{4})$")
_BOTTOM = re.compile(r"^>=(\d{4})$")


def _periods(spells: pl.DataFrame, periods: Sequence[str] | None) -> pl.DataFrame:
    """year -> released period, from the periods "YYYY-YYYY" (or "YYYY")."""
    names = sorted(set(spells["period"].cast(pl.String).to_list())) if periods is None \
        else list(periods)
    rows = []
    for p in names:
        m = _BAND.match(p)
        y0, y1 = (int(m.group(1)), int(m.group(2))) if m else (int(p), int(p))
        rows += [(y, p) for y in range(y0, y1 + 1)]
    out = pl.DataFrame(rows, schema={"year": pl.Int64, "period": pl.String}, orient="row")
    if out["year"].is_duplicated().any():
        raise ValueError("released periods overlap")
    return out


def _birth_years(key: str, years: list[int]) -> list[int]:
    """Background birth years (-1 = unknown) a released birth_year value contains."""
    if key == "UNKNOWN":
        return [-1]
    if _YEAR.match(key):
        return [int(key)]
    if m := _BAND.match(key):
        return list(range(int(m.group(1)), int(m.group(2)) + 1))
    if m := _TOP.match(key):
        return [y for y in years if 0 <= y <= int(m.group(1))]
    if m := _BOTTOM.match(key):
        return [y for y in years if y >= int(m.group(1))]
    raise ValueError(f"unknown birth_year format {key!r}")


def reidentification_attack(persons: pl.DataFrame, spells: pl.DataFrame,
                            background: pl.DataFrame, truth: pl.DataFrame | None = None, *,
                            periods: Sequence[str] | None = None) -> dict:
    """Linkage of the released research file to the attacker's exact knowledge of the
    population. A released record matches a background person when every released
    attribute is consistent with theirs (a birth-year band contains the year, "<=1935"
    contains earlier years, "UNKNOWN" only an unknown year, "*" anything; a broad race
    OTHER every race outside HISPANIC/WHITE/BLACK/ASIAN) and the record's set of
    (program, period) equals the person's program years mapped to the released periods
    (years outside every period are not released and are ignored).

    `persons`: pseudonym, birth_year, sex, race_ethnicity, zip3, county_fips (strings).
    `spells`: pseudonym, program, period. `background`: true_person_id, birth_year (int,
    null = unknown), sex, race_ethnicity, zip3, county_fips, program_years (list of struct
    program, year); nulls read as the released "U"/"UNKNOWN". `truth`: pseudonym ->
    true_person_id, for scoring.

    Scales by turning every comparison into key equality: records are grouped by their
    generalisation pattern; within a pattern the background is expanded by the released
    birth-year values containing each person's year and counted per key, then joined.

    Returns `records`, `unique_matches` (exactly one person matches), `no_match`,
    `mean_candidates`, and given `truth`: `correct_unique` (the one match is the right
    person) and `truth_consistent` (records whose true person matches at all: should equal
    `records`, otherwise the background or the matching rules disagree with the release)."""
    per = _periods(spells, periods)
    rec = persons.select(
        "pseudonym", *[pl.col(c).cast(pl.String).fill_null("UNKNOWN")
                       for c in ("birth_year", "sex", "race_ethnicity", "zip3",
                                 "county_fips")])
    rec = rec.join(_signature(spells), on="pseudonym", how="left") \
        .with_columns(pl.col("participation").fill_null(""))
    bg_sig = (background.select("true_person_id", "program_years")
              .explode("program_years").drop_nulls("program_years").unnest("program_years")
              .with_columns(pl.col("year").cast(pl.Int64))
              .join(per, on="year", how="inner")
              .rename({"true_person_id": "pseudonym"}))
    bg_sig = _signature(bg_sig).rename({"pseudonym": "true_person_id"})
    bg = background.select(
        "true_person_id",
        pl.col("birth_year").cast(pl.Int64).fill_null(-1).alias("_by"),
        pl.col("sex").cast(pl.String).fill_null("U"),
        pl.col("race_ethnicity").cast(pl.String).fill_null("UNKNOWN"),
        pl.col("zip3").cast(pl.String).fill_null("UNKNOWN"),
        pl.col("county_fips").cast(pl.String).fill_null("UNKNOWN"),
    ).with_columns(
        pl.when(pl.col("race_ethnicity").is_in(list(BROAD_RACE)))
        .then(pl.col("race_ethnicity")).otherwise(pl.lit("OTHER")).alias("_race_broad")
    ).join(bg_sig, on="true_person_id", how="left") \
        .with_columns(pl.col("participation").fill_null(""))
    years = sorted(set(bg["_by"].to_list()))
    rec = rec.with_columns(
        (pl.col("birth_year") == "*").alias("_by_star"),
        (pl.col("sex") == "*").alias("_sex_star"),
        pl.when(pl.col("race_ethnicity") == "*").then(pl.lit("star"))
        .when(pl.col("race_ethnicity") == "OTHER").then(pl.lit("broad"))
        .otherwise(pl.lit("exact")).alias("_race_mode"),
        (pl.col("zip3") == "*").alias("_zip_star"),
        (pl.col("county_fips") == "*").alias("_county_star"))
    pattern_cols = ["_by_star", "_sex_star", "_race_mode", "_zip_star", "_county_star"]
    matched = []
    for pat, group in rec.group_by(pattern_cols):
        by_star, sex_star, race_mode, zip_star, county_star = pat
        keys = ["participation"]
        b = bg.select("true_person_id", "participation", "_by", "sex", "zip3",
                      "county_fips",
                      pl.col("_race_broad" if race_mode == "broad" else "race_ethnicity")
                      .alias("race_ethnicity"))
        if not sex_star:
            keys.append("sex")
        if race_mode != "star":
            keys.append("race_ethnicity")
        if not zip_star:
            keys.append("zip3")
        if not county_star:
            keys.append("county_fips")
        if not by_star:
            lookup = [(k, y) for k in group["birth_year"].unique().to_list()
                      for y in _birth_years(k, years)]
            lk = pl.DataFrame(lookup, schema={"birth_year": pl.String, "_by": pl.Int64},
                              orient="row")
            b = b.join(lk, on="_by", how="inner")
            keys.append("birth_year")
        counts = b.group_by(keys).agg(pl.len().alias("_n"),
                                      pl.col("true_person_id").first().alias("_match"))
        matched.append(group.join(counts, on=keys, how="left")
                       .select("pseudonym", pl.col("_n").fill_null(0), "_match"))
    m = pl.concat(matched) if matched else pl.DataFrame(
        schema={"pseudonym": pl.String, "_n": pl.UInt32, "_match": pl.String})
    out = {"records": rec.height,
           "unique_matches": int((m["_n"] == 1).sum()),
           "no_match": int((m["_n"] == 0).sum()),
           "mean_candidates": round(float(m["_n"].mean() or 0.0), 3)}
    if truth is not None:
        t = m.join(truth.select("pseudonym", pl.col("true_person_id").alias("_true")),
                   on="pseudonym", how="left")
        out["correct_unique"] = int(((t["_n"] == 1) & (t["_match"].cast(pl.String)
                                                       == t["_true"].cast(pl.String)))
                                    .fill_null(False).sum())
        out["truth_consistent"] = _truth_consistent(rec, bg, truth)
    return out


def _truth_consistent(rec: pl.DataFrame, bg: pl.DataFrame, truth: pl.DataFrame) -> int:
    """Records whose true person satisfies every matching rule (vectorised per pair)."""
    pairs = rec.join(truth.select("pseudonym", "true_person_id"), on="pseudonym") \
        .join(bg.with_columns(pl.col("true_person_id").cast(
            truth.schema["true_person_id"])), on="true_person_id", suffix="_bg")
    by = pl.col("birth_year")
    band = by.str.extract_groups(r"^(\d{4})-(\d{4})$")
    lo = (pl.when(by == "*").then(pl.lit(-10**6))
          .when(by == "UNKNOWN").then(pl.lit(-1))
          .when(by.str.starts_with("<=")).then(pl.lit(0))
          .when(by.str.starts_with(">=")).then(by.str.slice(2).cast(pl.Int64, strict=False))
          .when(by.str.contains(r"^\d{4}$")).then(by.cast(pl.Int64, strict=False))
          .otherwise(band.struct.field("1").cast(pl.Int64, strict=False)))
    hi = (pl.when(by == "*").then(pl.lit(10**6))
          .when(by == "UNKNOWN").then(pl.lit(-1))
          .when(by.str.starts_with("<=")).then(by.str.slice(2).cast(pl.Int64, strict=False))
          .when(by.str.starts_with(">=")).then(pl.lit(10**6))
          .when(by.str.contains(r"^\d{4}$")).then(by.cast(pl.Int64, strict=False))
          .otherwise(band.struct.field("2").cast(pl.Int64, strict=False)))
    ok = ((pl.col("_by") >= lo) & (pl.col("_by") <= hi)
          & ((pl.col("sex") == "*") | (pl.col("sex") == pl.col("sex_bg")))
          & ((pl.col("race_ethnicity") == "*")
             | (pl.col("race_ethnicity") == pl.col("race_ethnicity_bg"))
             | ((pl.col("race_ethnicity") == "OTHER") & (pl.col("_race_broad") == "OTHER")))
          & ((pl.col("zip3") == "*") | (pl.col("zip3") == pl.col("zip3_bg")))
          & ((pl.col("county_fips") == "*") | (pl.col("county_fips") == pl.col("county_fips_bg")))
          & (pl.col("participation") == pl.col("participation_bg")))
    return int(pairs.select(ok.fill_null(False).sum()).item())


# --------------------------------------------------------------------------------------
# e) k over the whole record
# --------------------------------------------------------------------------------------

def k_whole_record(persons: pl.DataFrame, spells: pl.DataFrame, qis: Sequence[str],
                   k: int | None = None) -> dict:
    """k-anonymity over the whole released record: the person row's `qis` plus the set of
    (program, period) as one more quasi-identifier ("participation"). Computed with polars
    and confirmed with `pycanon.anonymity.k_anonymity` on a pandas frame (they must agree).
    Returns `records`, `classes`, `k`, `k_pycanon`, `unique_records` and, given `k`,
    `records_below_k`."""
    from pycanon.anonymity import k_anonymity

    qis = list(qis)
    df = persons.select("pseudonym", *[pl.col(q).cast(pl.String).fill_null("\u2205")
                                       for q in qis]) \
        .join(_signature(spells), on="pseudonym", how="left") \
        .with_columns(pl.col("participation").fill_null(""))
    cols = [*qis, "participation"]
    if df.height == 0:
        return {"records": 0, "classes": 0, "k": 0, "k_pycanon": 0, "unique_records": 0,
                **({"records_below_k": 0} if k is not None else {})}
    sizes = df.group_by(cols).len()
    out = {"records": df.height, "classes": sizes.height, "k": int(sizes["len"].min()),
           "k_pycanon": int(k_anonymity(df.select(cols).to_pandas(), cols)),
           "unique_records": int(sizes.filter(pl.col("len") == 1).height)}
    if k is not None:
        out["records_below_k"] = int(sizes.filter(pl.col("len") < k)["len"].sum() or 0)
    return out
