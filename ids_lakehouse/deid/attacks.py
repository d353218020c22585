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
from typing import Any, Callable, Sequence, cast

import numpy as np
import polars as pl
from scipy import sparse  # type: ignore[import-untyped]  # no stubs installed for scipy
from scipy.optimize import linprog  # type: ignore[import-untyped]  # no stubs for scipy

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

    def propagate(self, lo: np.ndarray, hi: np.ndarray, max_iter: int = 200
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray, int]:
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


def _highs_object_api() -> Any:
    """The HiGHS object interface bundled with scipy (the solver behind
    linprog(method="highs")), or None when this scipy does not expose it."""
    try:
        from scipy.optimize._highspy import _core  # type: ignore[import-untyped]  # no stubs
        _core._Highs, _core.HighsLp, _core.MatrixFormat  # noqa: B018
        return _core
    except Exception:  # pragma: no cover - depends on the scipy build
        return None


class _Probe:
    """Can a cell reach a value? Feasibility (zero objective) of one table's LP with one
    bound raised, re-solved by dual simplex from the previous basis (the classic audit
    step of cell suppression); the bound is restored afterwards. Infeasible means the LP
    maximum of the cell is below the value."""

    def __init__(self, A: sparse.csr_matrix, rlo: np.ndarray, rhi: np.ndarray,
                 lv: np.ndarray, uv: np.ndarray, use_object_api: bool):
        self.A = A
        self.rlo, self.rhi = np.asarray(rlo, float), np.where(rhi >= BIG / 2, np.inf, rhi)
        self.lv, self.uv = np.asarray(lv, float), np.where(uv >= BIG / 2, np.inf, uv)
        self.core = _highs_object_api() if use_object_api else None
        self.solves = 0
        if self.core is not None:
            core = self.core
            inf = core.kHighsInf
            csc = A.tocsc()
            lp = core.HighsLp()
            lp.num_col_, lp.num_row_ = csc.shape[1], csc.shape[0]
            lp.col_cost_ = np.zeros(csc.shape[1])
            lp.col_lower_ = self.lv
            lp.col_upper_ = np.where(np.isinf(self.uv), inf, self.uv)
            lp.row_lower_ = self.rlo
            lp.row_upper_ = np.where(np.isinf(self.rhi), inf, self.rhi)
            lp.a_matrix_.format_ = core.MatrixFormat.kColwise
            lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
            lp.a_matrix_.index_ = csc.indices.astype(np.int32)
            lp.a_matrix_.value_ = csc.data.astype(float)
            self.h = core._Highs()
            self.h.setOptionValue("output_flag", False)
            self.h.passModel(lp)

    def optimise(self, c: np.ndarray, time_limit: float) -> np.ndarray | None:
        """An optimal vertex for objective c (interior point method, then crossover to a
        basis); the objective is reset to zero afterwards, so the next probes start from
        that basis."""
        self.solves += 1
        if self.core is None:
            lv, uv, rlo, rhi = self.lv, self.uv, self.rlo, self.rhi
            eq = rlo == rhi
            up = ~eq & np.isfinite(rhi)
            dn = ~eq & np.isfinite(rlo)
            res = linprog(c, A_ub=sparse.vstack([self.A[up], -self.A[dn]]).tocsr(),
                          b_ub=np.concatenate([rhi[up], -rlo[dn]]),
                          A_eq=self.A[eq] if eq.any() else None,
                          b_eq=rlo[eq] if eq.any() else None,
                          bounds=np.column_stack([lv, uv]), method="highs",
                          options={"time_limit": max(time_limit, 1.0)})
            return res.x if res.status == 0 else None
        h, n = self.h, self.A.shape[1]
        cols = np.arange(n, dtype=np.int32)
        h.changeColsCost(n, cols, np.asarray(c, float))
        h.setOptionValue("solver", "ipm")
        h.setOptionValue("time_limit", h.getRunTime() + max(time_limit, 1.0))
        h.run()
        ok = h.getModelStatus() == self.core.HighsModelStatus.kOptimal
        x = np.array(h.getSolution().col_value) if ok else None
        h.changeColsCost(n, cols, np.zeros(n))
        h.setOptionValue("solver", "simplex")
        return x

    def _run(self, h: Any) -> tuple[Any, np.ndarray | None]:
        """Solve; (status, the optimal point or None)."""
        assert self.core is not None        # only with the object interface
        h.run()
        status = h.getModelStatus()
        optimal = status == self.core.HighsModelStatus.kOptimal
        return status, np.array(h.getSolution().col_value) if optimal else None

    def _verdict(self, status: Any, x: np.ndarray | None) -> tuple[bool | None, np.ndarray | None]:
        if x is not None:
            return True, x
        assert self.core is not None        # only with the object interface
        if status == self.core.HighsModelStatus.kInfeasible:
            return False, None
        return None, None

    def reach(self, row: int | None, col: int | None, lo: float | None, hi: float | None,
              time_limit: float) -> tuple[bool | None, np.ndarray | None]:
        """Is the cell (a column, or a row of the model) able to be >= lo (or <= hi)?
        (status, x): True = yes (x a feasible point), False = no, None = undecided."""
        self.solves += 1
        if col is not None:
            old = (self.lv[col], self.uv[col])
        else:
            old = (self.rlo[row], self.rhi[row])
        new = (old[0] if lo is None else max(lo, old[0]),
               old[1] if hi is None else min(hi, old[1]))
        if new[0] > new[1] + _EPS:
            return False, None
        if self.core is not None:
            h, inf = self.h, self.core.kHighsInf

            def fin(v: float) -> Any:
                return inf if np.isinf(v) else float(v)

            change = h.changeColBounds if col is not None else h.changeRowBounds
            idx = col if col is not None else row
            change(idx, float(new[0]), fin(new[1]))
            h.setOptionValue("time_limit", h.getRunTime() + max(time_limit, 1.0))
            status, x = self._run(h)
            change(idx, float(old[0]), fin(old[1]))
            return self._verdict(status, x)
        lv, uv, rlo, rhi = self.lv.copy(), self.uv.copy(), self.rlo.copy(), self.rhi.copy()
        if col is not None:
            lv[col], uv[col] = new
        else:
            rlo[row], rhi[row] = new
        eq = rlo == rhi
        up = ~eq & np.isfinite(rhi)
        dn = ~eq & np.isfinite(rlo)
        A_ub = sparse.vstack([self.A[up], -self.A[dn]]).tocsr()
        b_ub = np.concatenate([rhi[up], -rlo[dn]])
        res = linprog(np.zeros(self.A.shape[1]), A_ub=A_ub, b_ub=b_ub,
                      A_eq=self.A[eq] if eq.any() else None, b_eq=rlo[eq] if eq.any() else None,
                      bounds=np.column_stack([lv, uv]), method="highs",
                      options={"time_limit": max(time_limit, 1.0)})
        if res.status == 0:
            return True, res.x
        return (False, None) if res.status == 2 else (None, None)


    def reach_all(self, cells: list[tuple[int | None, int | None, float | None, float | None]],
                  time_limit: float) -> tuple[bool | None, np.ndarray | None]:
        """Can every cell (row, col, lo, hi) be inside its requested bounds at once?
        (status, x) as `reach`."""
        if len(cells) == 1 or self.core is None:
            if len(cells) != 1:
                return None, None
            row, col, lo, hi = cells[0]
            return self.reach(row, col, lo, hi, time_limit)
        self.solves += 1
        h, inf = self.h, self.core.kHighsInf

        def fin(v: float) -> Any:
            return inf if np.isinf(v) else float(v)

        undo: list[tuple[Callable[..., Any], int | None, tuple[Any, Any]]] = []
        for row, col, lo, hi in cells:
            if col is not None:
                old = (self.lv[col], self.uv[col])
            else:
                old = (self.rlo[row], self.rhi[row])
            new = (old[0] if lo is None else max(lo, old[0]),
                   old[1] if hi is None else min(hi, old[1]))
            if new[0] > new[1] + _EPS:
                for change, idx, o in undo:
                    change(idx, float(o[0]), fin(o[1]))
                return False, None
            change = h.changeColBounds if col is not None else h.changeRowBounds
            idx = col if col is not None else row
            change(idx, float(new[0]), fin(new[1]))
            undo.append((change, idx, old))
        h.setOptionValue("time_limit", h.getRunTime() + max(time_limit, 1.0))
        status, x = self._run(h)
        for change, idx, o in undo:
            change(idx, float(o[0]), fin(o[1]))
        return self._verdict(status, x)


class _Table:
    """One table of the release for the LP attack: its rows, propagated bounds, targets,
    and the inner bounds (hull of values at feasible points, widened by feasible moves)."""

    def __init__(self, cube: _Cube, t: int, lv: np.ndarray, uv: np.ndarray, Lc: np.ndarray,
                 Uc: np.ndarray, target_rows: np.ndarray):
        self.t = t
        self.rows = np.flatnonzero(cube.row_table == t)
        sl = slice(t * cube.nfin, (t + 1) * cube.nfin)
        self.A = cube.A[self.rows][:, sl].tocsr()
        self.lv, self.uv = lv[sl], uv[sl]
        self.lo, self.hi = Lc[self.rows], Uc[self.rows]
        self.codes = cube.codes[self.rows]
        self.pattern = cube.pattern[self.rows]
        self.sizes, self.strides = cube.sizes, cube.strides
        pos = np.full(cube.n_rows, -1)
        pos[self.rows] = np.arange(self.rows.size)
        self.tgt = pos[target_rows]                    # local rows of the targets
        self.lookup = np.full([n + 1 for n in cube.sizes], -1, dtype=np.int64)
        self.lookup[tuple((self.codes + 1).T)] = np.arange(self.rows.size)
        self.i_lo = np.full(self.tgt.size, np.inf)
        self.i_hi = np.full(self.tgt.size, -np.inf)
        Sl, Su = self.A @ self.lv, self.A @ self.uv
        agg = (self.pattern > 0) & ~((Sl >= self.lo - _EPS) & (Su <= self.hi + _EPS))
        self.agg_rows = np.flatnonzero(agg)

    def probe(self, use_object_api: bool) -> _Probe:
        if "_probe" not in self.__dict__:
            rows = np.union1d(self.agg_rows, self.tgt[self.pattern[self.tgt] > 0])
            self.probe_rows = rows
            self.probe_pos = np.full(self.rows.size, -1)
            self.probe_pos[rows] = np.arange(rows.size)
            self.__dict__["_probe"] = _Probe(self.A[rows], self.lo[rows], self.hi[rows],
                                             self.lv, self.uv, use_object_api)
        probe: _Probe = self.__dict__["_probe"]
        return probe

    @property
    def solves(self) -> int:
        return self.__dict__["_probe"].solves if "_probe" in self.__dict__ else 0

    def feasible(self, x: np.ndarray, tol: float = 1e-5) -> bool:
        y = self.A @ x
        return bool((y >= self.lo - tol).all() and (y <= self.hi + tol).all()
                    and (x >= self.lv - tol).all() and (x <= self.uv + tol).all())

    def see(self, x: np.ndarray, which: np.ndarray, rng: np.random.Generator,
            trials: int) -> None:
        """Widen the inner bounds of targets `which` (indices into self.tgt) from point
        x: the value at x, then moves that keep every row inside its bounds. A move
        alternates +d/-d over the corners of a box spanned by the target and partner
        values in its non-ALL dimensions (inside the target's ALL dimensions it fixes a
        finest value), so it changes exactly 16 rows by +-d; d is the smallest slack."""
        y = self.A @ x
        su = np.where(self.hi >= BIG / 2, np.inf, self.hi - y)
        sd = y - self.lo
        vu, vd = self.uv - x, x - self.lv
        vu = np.where(self.uv >= BIG / 2, np.inf, vu)
        k = len(self.sizes)
        rows = self.tgt[which]
        val = y[rows]
        self.i_lo[which] = np.minimum(self.i_lo[which], val)
        self.i_hi[which] = np.maximum(self.i_hi[which], val)
        if trials <= 0 or which.size == 0:
            return
        pat = self.pattern[rows]
        for p in np.unique(pat):
            sel = np.flatnonzero(pat == p)
            w = which[sel]
            C = self.codes[rows[sel]]
            m = sel.size
            free = [d for d in range(k) if not (p >> d & 1) and self.sizes[d] >= 2]
            best_up = np.zeros(m)
            best_dn = np.zeros(m)
            for trial in range(trials):
                # alternate every free dimension, or (every other trial) a random subset
                alt = free if trial % 2 == 0 or len(free) < 2 else \
                    [d for d in free if rng.random() < 0.5] or [free[rng.integers(len(free))]]
                fixed = [d for d in range(k) if d not in alt]
                P = C.copy()
                F = C.copy()
                for d in fixed:
                    if p >> d & 1:
                        F[:, d] = rng.integers(0, self.sizes[d], m)
                greedy = trial % 3 == 1
                for d in alt:
                    if greedy:
                        # the partner whose neighbouring corner has the most room down
                        # (it gives way when the target goes up)
                        cand = np.repeat(F[:, None, :], self.sizes[d], axis=1)
                        cand[:, :, d] = np.arange(self.sizes[d])[None, :]
                        room = vd[cand @ np.asarray(self.strides)] \
                            if not (p & ~(1 << d)) else np.ones((m, self.sizes[d]))
                        room = room + rng.random(room.shape) * 1e-3
                        room[np.arange(m), C[:, d]] = -np.inf
                        P[:, d] = np.argmax(room, axis=1)
                    else:
                        P[:, d] = (C[:, d] + rng.integers(1, self.sizes[d], m)) % self.sizes[d]
                up = np.full(m, np.inf)
                dn = np.full(m, np.inf)
                for kappa in itertools.product((0, 1), repeat=len(alt)):
                    sign = -1 if sum(kappa) % 2 else 1
                    base = F.copy()
                    for d, kd in zip(alt, kappa):
                        if kd:
                            base[:, d] = P[:, d]
                    for r in range(len(fixed) + 1):
                        for Q in itertools.combinations(fixed, r):
                            codes = base.copy()
                            for d in Q:
                                codes[:, d] = -1
                            row = self.lookup[tuple((codes + 1).T)]
                            if not Q:        # a finest cell: its variable's bounds
                                var = codes @ np.asarray(self.strides)
                                s_up, s_dn = vu[var], vd[var]
                            else:
                                ok = row >= 0
                                s_up = np.where(ok, su[np.maximum(row, 0)], np.inf)
                                s_dn = np.where(ok, sd[np.maximum(row, 0)], np.inf)
                            if sign > 0:
                                up, dn = np.minimum(up, s_up), np.minimum(dn, s_dn)
                            else:
                                up, dn = np.minimum(up, s_dn), np.minimum(dn, s_up)
                best_up = np.maximum(best_up, np.clip(up, 0, BIG))
                best_dn = np.maximum(best_dn, np.clip(dn, 0, BIG))
            v = y[rows[sel]]
            self.i_lo[w] = np.minimum(self.i_lo[w], v - best_dn)
            self.i_hi[w] = np.maximum(self.i_hi[w], v + best_up)


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
                   seed: int, trials: int, truth: np.ndarray | None,
                   use_object_api: bool = True, rounds: int = 1,
                   decide_zeros: bool = True, zero_batch: int = 64,
                   see_every: int = 10) -> dict[str, Any]:
    start = time.perf_counter()
    deadline = start + time_budget_s
    lv, uv, Lc, Uc, Sl, Su, iterations = cube.propagate(lo, hi)
    bad_tables = set(np.unique(cube.row_table[Lc > Uc + _EPS]).tolist())
    bad_tables |= set(np.unique(np.flatnonzero(lv > uv + _EPS) // cube.nfin).tolist())
    prop_seconds = time.perf_counter() - start

    tidx = np.flatnonzero(target)
    o_lo, o_hi = Lc[tidx], Uc[tidx]
    pub_t = published[tidx]
    t_of = cube.row_table[tidx]
    n = tidx.size
    lp_lo = np.full(n, np.nan)
    lp_hi = np.full(n, np.nan)
    i_lo = np.full(n, np.inf)
    i_hi = np.full(n, -np.inf)
    rng = np.random.default_rng(seed)
    feasible = ~np.isin(t_of, sorted(bad_tables))
    tables: dict[int, _Table] = {}
    members: dict[int, np.ndarray] = {}
    for t in np.unique(t_of[feasible]).tolist():
        members[t] = np.flatnonzero(t_of == t)
    x_truth = None
    if truth is not None:
        fin = (cube.pattern == 0) & ~np.isnan(truth)
        x_truth = np.zeros(cube.nvar)
        x_truth[cube._base(cube.row_table[fin], cube.codes[fin])] = truth[fin]

    def rounded(a_lo: np.ndarray, a_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ceil(a_lo - _EPS), np.floor(a_hi + _EPS)

    def safe_of(a_lo: np.ndarray, a_hi: np.ndarray, pub: np.ndarray) -> np.ndarray:
        """Proven not to be `exact_nonzero` nor `narrow_small` (a perturbed cell: not
        exact). A feasible point at 0 suffices for a suppressed cell."""
        a, b = rounded(a_lo, a_hi)
        safe: np.ndarray = np.where(pub, b - a >= 1,
                                    (a <= 0) | (b - a >= 3) | ((b >= min_cell) & (b - a >= 1)))
        return safe

    def zero_open(a_lo: np.ndarray, a_hi: np.ndarray, pub: np.ndarray) -> np.ndarray:
        """Suppressed cells seen only at 0 so far: exact zeros unless a point reaches 1."""
        a, b = rounded(a_lo, a_hi)
        return ~pub & (a <= 0) & (b < 1)

    def unsafe(tb: _Table, k: np.ndarray) -> np.ndarray:
        return np.flatnonzero(~safe_of(tb.i_lo, tb.i_hi, pub_t[k]))

    def see_all(tb: _Table, k: np.ndarray, x: np.ndarray) -> None:
        todo = np.flatnonzero(~safe_of(tb.i_lo, tb.i_hi, pub_t[k])
                              | zero_open(tb.i_lo, tb.i_hi, pub_t[k]))
        tb.see(x, np.arange(k.size), rng, 0)
        tb.see(x, todo, rng, trials)

    def is_unsafe(tb: _Table, k: np.ndarray, j: int) -> bool:
        return not safe_of(tb.i_lo[j:j + 1], tb.i_hi[j:j + 1], pub_t[k[j:j + 1]])[0]

    def is_zero_open(tb: _Table, k: np.ndarray, j: int) -> bool:
        return bool(zero_open(tb.i_lo[j:j + 1], tb.i_hi[j:j + 1], pub_t[k[j:j + 1]])[0])

    out_of_time = False
    # 1. per table: feasible points (the truth when given; interior points of HiGHS'
    #    interior point method: the min of the suppressed targets' sum, the max of the sum
    #    of those not yet proven), each widened by feasible moves, and midpoints.
    for t, k in members.items():
        if time.perf_counter() > deadline:
            out_of_time = True
            break
        tb = _Table(cube, t, lv, uv, Lc, Uc, tidx[k])
        tables[t] = tb
        sl = slice(t * cube.nfin, (t + 1) * cube.nfin)
        points = []
        if x_truth is not None and tb.feasible(x_truth[sl]):
            points.append(x_truth[sl])
            see_all(tb, k, x_truth[sl])
        model = tb.probe(use_object_api)
        null_rows = tb.tgt[~pub_t[k]]
        objectives = [np.asarray(tb.A[null_rows].sum(axis=0)).ravel()] if null_rows.size \
            else []
        first = len(objectives)
        for r in range(rounds + first):
            if r >= len(objectives):
                todo = np.flatnonzero(~safe_of(tb.i_lo, tb.i_hi, pub_t[k])
                                      | zero_open(tb.i_lo, tb.i_hi, pub_t[k]))
                if todo.size == 0:
                    break
                w = np.ones(todo.size)
                if r > first:         # perturbed cells pushed up or down at random
                    w = np.where(pub_t[k][todo], rng.choice([-1.0, 1.0], todo.size), 1.0)
                objectives.append(-np.asarray(tb.A[tb.tgt[todo]].T @ w).ravel())
            if time.perf_counter() > deadline:
                out_of_time = True
                break
            x = model.optimise(objectives[r], deadline - time.perf_counter())
            if x is None:
                continue
            see_all(tb, k, x)
            for other in points:
                see_all(tb, k, 0.5 * (x + other))
            points.append(x)
    ipm_solves = sum(tb.solves for tb in tables.values())
    phase = {"points": round(time.perf_counter() - start, 2)}
    probes = 0

    def where(tb: _Table, j: int) -> tuple[int | None, int | None]:
        """(row, col) of target j in the table's feasibility model."""
        local = tb.tgt[j]
        tb.probe(use_object_api)
        if tb.pattern[local] == 0:
            return None, int(tb.codes[local] @ np.asarray(tb.strides))
        return int(tb.probe_pos[local]), None

    def locate(i: int) -> tuple[_Table, np.ndarray, int]:
        t = int(t_of[i])
        return tables[t], members[t], int(np.searchsorted(members[t], i))

    def reach(i: int, lo_: float | None, hi_: float | None) -> bool | None:
        nonlocal probes
        tb, k, j = locate(i)
        probes += 1
        status, x = tb.probe(use_object_api).reach(*where(tb, j), lo_, hi_,
                                                   deadline - time.perf_counter())
        if status:
            assert x is not None        # a feasible point comes with a yes
            tb.see(x, np.arange(k.size), rng, 0)
        return status

    def exact_interval(i: int) -> None:
        """The attacker's integer interval [ceil(LP min), floor(LP max)] by bisection
        with feasibility probes (the LP min is <= v iff the cell can be <= v)."""
        nonlocal out_of_time
        tb, k, j = locate(i)
        ra, rb = rounded(tb.i_lo[j:j + 1], tb.i_hi[j:j + 1])
        a, b = float(ra[0]), float(rb[0])   # the cell can be <= a and >= b
        lo_, hi_ = float(o_lo[i]), min(a, float(o_hi[i]))     # min in [lo_, hi_]
        while lo_ < hi_:
            mid = math.floor((lo_ + hi_) / 2)
            status = reach(i, None, mid)
            if status is None:
                out_of_time = True
                return
            lo_, hi_ = (lo_, mid) if status else (mid + 1, hi_)
        low = lo_
        lo_, hi_ = max(b, low), float(o_hi[i])                 # max in [lo_, hi_]
        while lo_ < hi_:
            mid = math.ceil((lo_ + hi_) / 2)
            status = reach(i, mid, None)
            if status is None:
                out_of_time = True
                return
            lo_, hi_ = (mid, hi_) if status else (lo_, mid - 1)
        lp_lo[i], lp_hi[i] = low, lo_

    def group_test(t: int, items: list[int],
                   ask: Callable[[int], tuple[float | None, float | None]],
                   still_open: Callable[[_Table, np.ndarray, int], bool],
                   on_impossible: Callable[[int], None]) -> None:
        """Group testing with feasibility probes: ask the targets `items` (of table t) to
        move where `ask(i)` = (lo, hi) says, all together; a feasible point settles them
        all (and is seen), an infeasible group is halved, and a single target that cannot
        move goes to `on_impossible(i)`."""
        nonlocal probes, out_of_time
        if time.perf_counter() > deadline:
            out_of_time = True
            return
        tb, k = tables[t], members[t]
        js = [int(np.searchsorted(k, i)) for i in items]
        js = [j for j in js if still_open(tb, k, j)]
        if not js:
            return
        cells = [(*where(tb, j), *ask(int(k[j]))) for j in js]
        status, x = tb.probe(use_object_api).reach_all(cells, deadline - time.perf_counter())
        probes += 1
        if status:
            assert x is not None        # a feasible point comes with a yes
            tb.see(x, np.arange(k.size), rng, 0)
            if probes % see_every == 0:
                see_all(tb, k, x)
        elif len(js) == 1:
            if status is False:
                on_impossible(int(k[js[0]]))
        else:
            half = len(js) // 2
            group_test(t, [int(k[j]) for j in js[:half]], ask, still_open, on_impossible)
            group_test(t, [int(k[j]) for j in js[half:]], ask, still_open, on_impossible)

    def batches(items: list[int], alone: Callable[[int], bool]
                ) -> list[tuple[int, list[int]]]:
        """Per table: targets `alone` says are likely to fail one by one, the others
        shuffled (unrelated cells move together more easily) in batches."""
        out = []
        by_table: dict[int, list[int]] = {}
        for i in items:
            by_table.setdefault(int(t_of[i]), []).append(i)
        for t, its in by_table.items():
            out += [(t, [i]) for i in its if alone(i)]
            rest = [i for i in its if not alone(i)]
            rest = [rest[r] for r in rng.permutation(len(rest))]
            out += [(t, rest[g:g + zero_batch]) for g in range(0, len(rest), zero_batch)]
        return out

    def hull(i: int) -> tuple[float, float]:
        tb, k, j = locate(i)
        a, b = rounded(tb.i_lo[j:j + 1], tb.i_hi[j:j + 1])
        return float(a[0]), float(b[0])

    # 2. every target not proven: can a suppressed one reach 0, a perturbed one leave its
    #    interval (up or down, at random)? Feasibility probes, group tested; where it
    #    cannot, the exact interval by bisection.
    pending = []
    for t, tb in tables.items():
        pending += members[t][unsafe(tb, members[t])].tolist()
    phase["pending"] = len(pending)
    direction = {i: bool(rng.random() < 0.5) for i in pending}

    def ask_out(i: int) -> tuple[float | None, float | None]:
        if not pub_t[i]:
            return None, 0.0
        a, b = hull(i)
        up, down = b + 1 <= o_hi[i], a - 1 >= o_lo[i]
        if up and (direction[i] or not down):
            return b + 1, None
        if down:
            return None, a - 1
        return None, -1.0       # neither: propagation already bounds it to [a, b]

    stuck: list[int] = []
    hopeless = [i for i in pending if not pub_t[i] and o_lo[i] >= 1]  # propagation: >= 1
    hopeful = [i for i in pending if pub_t[i] or o_lo[i] < 1]
    for t, group in batches(hopeful, lambda i: not pub_t[i] and o_hi[i] - o_lo[i] <= 3):
        group_test(t, group, ask_out, is_unsafe, stuck.append)
    for i in stuck:                  # perturbed cells: the other direction
        if pub_t[i]:
            tb, k, j = locate(i)
            if is_unsafe(tb, k, j):
                direction[i] = not direction[i]
                group_test(int(t_of[i]), [i], ask_out, is_unsafe, hopeless.append)
        else:
            hopeless.append(i)
    for i in hopeless:
        if time.perf_counter() > deadline:
            out_of_time = True
            break
        tb, k, j = locate(i)
        if is_unsafe(tb, k, j):
            exact_interval(i)
    phase["pending_done"] = round(time.perf_counter() - start, 2)
    phase["pending_probes"] = probes

    # 3. suppressed cells seen only at 0: can they reach 1? (else exact zeros)
    if decide_zeros:
        zeros = []
        for t, tb in tables.items():
            zeros += members[t][zero_open(tb.i_lo, tb.i_hi, pub_t[members[t]])].tolist()
        phase["zeros_pending"] = len(zeros)

        def settle_zero(i: int) -> None:
            lp_lo[i] = lp_hi[i] = 0.0          # min 0 was seen; max < 1

        for t, group in batches(zeros, lambda i: o_hi[i] <= 2):
            group_test(t, group, lambda i: (1.0, None), is_zero_open, settle_zero)
        phase["zeros_done"] = round(time.perf_counter() - start, 2)
    # 4. exact intervals of a random sample of the rest, for the distribution of widths
    for t, tb in tables.items():
        i_lo[members[t]], i_hi[members[t]] = tb.i_lo, tb.i_hi
    pool = np.flatnonzero(feasible & np.isnan(lp_lo) & np.isin(t_of, list(tables)))
    if sample and pool.size:
        for i in rng.choice(pool, size=min(sample, pool.size), replace=False):
            if time.perf_counter() > deadline:
                out_of_time = True
                break
            exact_interval(int(i))
    solves = sum(tb.solves for tb in tables.values())
    for t, tb in tables.items():
        i_lo[members[t]], i_hi[members[t]] = tb.i_lo, tb.i_hi

    done = ~np.isnan(lp_lo) & ~np.isnan(lp_hi)
    best_lo = np.where(done, lp_lo, o_lo)
    best_hi = np.where(done, lp_hi, o_hi)
    # a feasible point outside the propagated interval cannot exist; inner bounds refine
    # only what is already decided
    classes = _disclosure(best_lo, best_hi, min_cell)
    prop = _disclosure(o_lo, o_hi, min_cell)
    null_t = ~pub_t
    proven = feasible & safe_of(i_lo, i_hi, pub_t)
    unresolved = feasible & ~done & ~proven & ~(classes["exact_nonzero"]
                                                 | classes["narrow_small"])
    zero_undecided = feasible & ~done & zero_open(i_lo, i_hi, pub_t) & ~classes["exact"]
    a, b = rounded(i_lo, i_hi)
    inside_undecided = feasible & ~done & null_t & ~classes["inside_small"] \
        & ~((a <= 0) | (b >= min_cell))
    exact_zero = classes["exact"] & (best_lo == 0)
    result: dict[str, Any] = {
        "tables": cube.n_tables, "cells": cube.n_rows,
        "targets": int(n), "targets_suppressed": int(null_t.sum()),
        "targets_published": int(pub_t.sum()),
        "exact": int(classes["exact"].sum()),
        "exact_nonzero": int(classes["exact_nonzero"].sum()),
        "exact_zero": int(exact_zero.sum()),
        "published_exact": int((classes["exact"] & pub_t).sum()),
        "narrow_small": int(classes["narrow_small"].sum()),
        "inside_small": int(classes["inside_small"].sum()),
        "unresolved": int(unresolved.sum()),
        "zero_undecided": int(zero_undecided.sum()),
        "inside_small_undecided": int(inside_undecided.sum()),
        "prop_exact": int(prop["exact"].sum()),
        "prop_exact_nonzero": int(prop["exact_nonzero"].sum()),
        "prop_narrow_small": int(prop["narrow_small"].sum()),
        "prop_inside_small": int(prop["inside_small"].sum()),
        "lp_checked": int(done.sum()),
        "proven_safe_by_feasible_points": int((proven & ~done).sum()),
        "infeasible_tables": len(bad_tables),
        "lp_solves": int(solves), "lp_optimisations": int(ipm_solves),
        "feasibility_probes": probes,
        "out_of_time": out_of_time,
        "propagation_iterations": int(iterations),
        "propagation_seconds": round(prop_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "width_hist": _width_bucket(best_hi - best_lo),
        "width_hist_lp_checked": _width_bucket((best_hi - best_lo)[done]),
        "phases": phase,
    }
    if truth is not None:
        tv = truth[tidx]
        ok = ~np.isnan(tv)
        result["truth_outside_interval"] = int((ok & ((tv < best_lo) | (tv > best_hi))).sum())
        result["exact_correct"] = int((ok & classes["exact"] & (tv == best_lo)).sum())
    result["_detail"] = {"rows": tidx, "lo": best_lo, "hi": best_hi, "decided": done,
                         "proven_safe": proven & ~done, "outer_lo": o_lo, "outer_hi": o_hi}
    return result


def lp_interval_attack(table: pl.DataFrame, fixed: Sequence[str], additive: Sequence[str],
                       count: str, D: int, null_bounds: tuple[float, float | None],
                       cells: pl.DataFrame | None = None, time_budget_s: float = 600.0, *,
                       min_cell: int = 11, published_min: int | None = None,
                       sample: int = 0, seed: int = 0, trials: int = 6,
                       truth: pl.DataFrame | None = None, all_value: str = ALL,
                       decide_zeros: bool = True, use_object_api: bool = True,
                       cells_detail: bool = False) -> dict[str, Any]:
    """Interval (LP) attack on every table of a release (one table per `fixed` key), as in
    the audit of cell suppression: the attacker's integer interval [ceil(LP min),
    floor(LP max)] of every target cell.

    Variables: the finest cells (no `all_value` in any additive dimension) of each table.
    Each published cell bounds the sum of its finest cells: a published p by
    [max(p-D, published_min), p+D] (published_min defaults to min_cell when D > 0, else
    0), a null by `null_bounds` (upper None = unbounded). Targets: every null cell, and
    with D > 0 every published cell too; `cells` (a frame of key columns) restricts them.
    Every cell of a table is a constraint, whether it is a target or not.

    Method, exact but organised to solve few LPs (HiGHS through scipy):
    (1) iterated interval propagation over every sum equation, with integer rounding: an
        outer bound (what the LP interval lies inside), found in well under a second;
    (2) per table, two optimal vertices (min of the suppressed targets' sum; max of the
        targets not yet proven) and midpoints with the truth when given; every feasible
        point, widened by feasible "box" moves (+d/-d on the 2^k corners of a box, which
        keep every margin), is an inner bound (the LP interval contains it). A suppressed
        cell seen at 0 and at >= 1 cannot be exact or narrow inside 1..min_cell-1, nor
        one seen over a width >= 3; a perturbed cell seen at two integers is not exact;
    (3) the others: feasibility probes (dual simplex from the previous basis with one
        bound moved: can the cell be 0? leave its interval?), tested in groups, and where
        they cannot, the exact interval by bisection with probes;
    (4) with `decide_zeros`, suppressed cells seen only at 0 are probed for 1 (group
        testing); those that cannot reach 1 are exact zeros;
    (5) exact intervals for a random `sample` of the rest (for `width_hist_lp_checked`).
    `time_budget_s` bounds the whole; what is left is counted as `unresolved` /
    `zero_undecided` and `out_of_time` is set. `use_object_api=False` uses
    scipy.optimize.linprog(method="highs") for every solve (same results, much slower).

    Returns counts over the targets, each on the best interval known (the exact one where
    decided, else the propagated one; a proven-safe cell is safe on both):
    `exact` (width 0), `exact_nonzero`, `exact_zero`, `published_exact` (a perturbed cell
    recovered exactly), `narrow_small` (width <= 2 inside [1, min_cell-1]), `inside_small`
    (inside [1, min_cell-1], any width; `inside_small_undecided` cells were not decided),
    `prop_*` (propagation alone), `single_line_recoverable` (null cells alone in a line:
    the classic one-subtraction attack), `lp_checked` (exact interval computed),
    `proven_safe_by_feasible_points`, `unresolved` (not proven either way: must be 0 for a
    complete audit), `zero_undecided`, `width_hist`, timings, and given `truth` (key
    columns + `count` with the true values) `truth_outside_interval` (0 unless the assumed
    protection model is wrong) and `exact_correct`. `cells_detail=True` adds the per-cell
    intervals (a frame: keys, published value, lo, hi, lp_decided, proven_safe,
    propagated_lo/hi), for debugging; it is disclosive, keep it out of reports."""
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
                            seed, trials, true_values, use_object_api,
                            decide_zeros=decide_zeros)
    result["single_line_recoverable"] = int((_single_line_recoverable(cube, null)
                                             & target).sum())
    detail = result.pop("_detail")
    if cells_detail:
        result["cells_detail"] = cube.frame.select([*fixed, *additive, count])[
            detail["rows"]].with_columns(
            pl.Series("lo", detail["lo"]), pl.Series("hi", detail["hi"]),
            pl.Series("lp_decided", detail["decided"]),
            pl.Series("proven_safe", detail["proven_safe"]),
            pl.Series("propagated_lo", detail["outer_lo"]),
            pl.Series("propagated_hi", detail["outer_hi"]))
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
        (pl.col("served_lo") > pl.col("served_hi")).alias("inconsistent")).with_columns(
        pl.when(pl.col("inconsistent")).then(pl.col("served"))
        .otherwise(pl.col("served").clip(pl.col("served_lo"), pl.col("served_hi"))))


def denominator_attack(table: pl.DataFrame, fixed: Sequence[str], additive: Sequence[str],
                       count: str = "persons", rate: str = "rate_per_1000_served", *,
                       D: int = 0, min_cell: int = 11, program: str = "program",
                       true_served: pl.DataFrame | None = None,
                       rate_half_step: float | None = None, rounds: int = 5,
                       lp: bool = False, null_bounds: tuple[float, float | None] = (0, None),
                       published_min: int | None = None, time_budget_s: float = 300.0,
                       all_value: str = ALL) -> dict[str, Any]:
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
    result: dict[str, Any] = {
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
                                      time_budget_s, 0, 0, 6, truth)
        result["lp"].pop("_detail")
    return result


def overlap_attack(table: pl.DataFrame, D: int, null_bounds: tuple[float, float | None], *,
                   min_cell: int = 11, published_min: int | None = None,
                   count: str = "persons", truth: pl.DataFrame | None = None
                   ) -> dict[str, int]:
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
                        truth: pl.DataFrame | None = None, all_value: str = ALL
                        ) -> dict[str, int]:
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
    schema = pl.Schema({k: j.schema[k] for k in keys})
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
                          qis: Sequence[str] | None = None) -> dict[str, int]:
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
            "delta_k": int(cast(int, sizes["len"].min())) if sizes.height else 0,
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
                            periods: Sequence[str] | None = None) -> dict[str, int | float]:
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
           "mean_candidates": round(float(cast("float | None", m["_n"].mean()) or 0.0), 3)}
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
                   k: int | None = None) -> dict[str, int]:
    """k-anonymity over the whole released record: the person row's `qis` plus the set of
    (program, period) as one more quasi-identifier ("participation"). Computed with polars
    and confirmed with `pycanon.anonymity.k_anonymity` on a pandas frame (they must agree).
    Returns `records`, `classes`, `k`, `k_pycanon`, `unique_records` and, given `k`,
    `records_below_k`."""
    from pycanon.anonymity import k_anonymity  # type: ignore[import-untyped]  # no stubs

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
    out = {"records": df.height, "classes": sizes.height, "k": int(cast(int, sizes["len"].min())),
           "k_pycanon": int(k_anonymity(df.select(cols).to_pandas(), cols)),
           "unique_records": int(sizes.filter(pl.col("len") == 1).height)}
    if k is not None:
        out["records_below_k"] = int(sizes.filter(pl.col("len") < k)["len"].sum() or 0)
    return out
