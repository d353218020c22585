"""Remote statistical queries (`POST /v1/queries`): a researcher under an agreement with a
`queries` section asks for counts (and sums or means of a declared numeric measure) of
people, grouped and filtered by the fields the agreement lists, and gets a
differentially private answer; no record, and no exact count, ever leaves.

What is counted: people in a year. The data is the held-back indicator basis
(disclosure/indicator_basis: one row per person, year and program with the person's
county, age band, sex and race/ethnicity that year), restricted to the programs of the
agreement's own sources. A person is in a year's population when they were in any
(`programs.any`, the default: all the agreement's programs) or all (`programs.all`) of
the listed programs that year; grouping by `program` counts them in each listed program
they were in. A query over several years must group by `year`.

Output control (docs/adr/0006-remote-queries-differential-privacy.md): every cell of the
group-by grid (its public values, from the code lists, never from the data: an empty
cell is answered like any other) gets discrete Gaussian noise from OpenDP; a cell whose
noisy count is under the agreement's min_cell_size is published as null. A query costs
rho = OpenDP's privacy map of its sensitivity (the cells one person can be counted in:
the years in scope, times the programs when grouped by program), spent from the
agreement's budget (all its tokens together) before the answer leaves, and refused when
the budget cannot pay. The same query on the same data gets the same answer again at no
cost. Spending is recorded in disclosure/query_ledger.sqlite (restricted) in one transaction,
so workers in several processes share one budget, and a crash after the spend loses
budget, never leaks an unpaid answer."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ids_lakehouse import crash, delta
from ids_lakehouse.agreements import Agreement
from ids_lakehouse.config import Lake
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.marts import indicators, people
from ids_lakehouse.marts.publish import BASIS
from ids_lakehouse.model import load_model
from ids_lakehouse.sharing import store
from ids_lakehouse.sharing.lookups import refuse_repeated_keys
from ids_lakehouse.sources import load_sources

LEDGER = "query_ledger.sqlite"
LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spends (query_id TEXT PRIMARY KEY, agreement TEXT NOT NULL, "
    "token_id TEXT NOT NULL, recorded_at TEXT NOT NULL, basis_version INTEGER NOT NULL, "
    "shape_sha256 TEXT NOT NULL, rho REAL NOT NULL, answer TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS by_shape ON spends (agreement, shape_sha256, basis_version)")
METHOD = "differential privacy (zero-concentrated, rho); discrete Gaussian noise (OpenDP)"


class QueryError(ValueError):
    """A query refused before it runs; the message names fields and positions, never a
    value the caller sent."""


class BudgetExhausted(QueryError):
    pass


class NotReady(LookupError):
    """No indicator basis has been published yet."""


class Programs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[str] | None = Field(default=None, min_length=1, max_length=32)
    all: list[str] | None = Field(default=None, min_length=1, max_length=32)


class Numeric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: str | None = Field(default=None, max_length=64)
    sum: str | None = Field(default=None, max_length=64)


class QueryBody(BaseModel):
    """A query. `where` maps a field to the values kept (years as numbers)."""
    model_config = ConfigDict(extra="forbid")
    measure: Literal["persons"] | Numeric = "persons"
    group_by: list[str] = Field(default=[], max_length=6)
    where: dict[str, list[StrictStr | StrictInt]] = Field(default={}, max_length=6)
    programs: Programs | None = None
    sigma: float | None = Field(default=None, gt=0, le=10_000, strict=True, description=(
        "More noise than the policy's least (noise_sigma) costs less budget."))

    @classmethod
    def parse(cls, body: bytes) -> QueryBody:
        refuse_repeated_keys(body)
        return cls.model_validate_json(body)


@dataclass(frozen=True)
class Plan:
    """A validated query: what to count, over which grid, at what cost."""
    group_by: tuple[str, ...]
    where: tuple[tuple[str, tuple[Any, ...]], ...]
    mode: str                          # any | all
    selected: tuple[str, ...]          # programs
    measure: str                       # persons | mean:<name> | sum:<name>
    sigma: float
    contributions: int                 # cells one person can be counted in
    grid: tuple[tuple[Any, ...], ...]

    @property
    def shape(self) -> dict[str, Any]:
        """The query in canonical form (public field names and code values only): what
        is audited and what makes two queries the same."""
        return {"measure": self.measure, "group_by": list(self.group_by),
                "where": {f: list(v) for f, v in self.where},
                "programs": {self.mode: list(self.selected)}, "sigma": self.sigma}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.shape, sort_keys=True).encode()).hexdigest()

    @property
    def numeric(self) -> str | None:
        return None if self.measure == "persons" else self.measure.split(":", 1)[1]


@lru_cache(maxsize=1)
def _all_programs() -> tuple[str, ...]:
    return (*load_model().codes("program"), people.HOMELESS_STUDENTS)


def agreement_programs(agreement: Agreement) -> tuple[str, ...]:
    """The programs of the agreement's own sources (the K-12 McKinney-Vento program with a
    source that delivers the homeless flag)."""
    declared = load_sources()
    out: set[str] = set()
    for source in agreement.sources:
        enrollment = declared[source].mapping.get("enrollment", {})
        if "program" in enrollment and enrollment["program"].value:
            out.add(enrollment["program"].value)
        if "homeless_flag" in enrollment:
            out.add(people.HOMELESS_STUDENTS)
    return tuple(p for p in _all_programs() if p in out)


def _domains(agreement: Agreement) -> dict[str, tuple[Any, ...]]:
    model = load_model()
    values = indicators.domain(model, load_policy())
    out: dict[str, tuple[Any, ...]] = {
        d: tuple(v for v in values[d] if v != indicators.ALL) for d in indicators.ADDITIVE}
    out["year"] = tuple(range(people.FIRST_YEAR, model.as_of.year + 1))
    out["program"] = agreement_programs(agreement)
    return out


def plan(body: QueryBody, agreement: Agreement) -> Plan:
    """The query validated against the agreement and the public domains (QueryError)."""
    terms = agreement.queries
    if terms is None:
        raise QueryError("this agreement does not permit statistical queries")
    policy = load_policy().remote_queries
    domains = _domains(agreement)
    allowed = set(terms.fields)
    if len(set(body.group_by)) != len(body.group_by):
        raise QueryError("group_by names a field twice")
    for i, f in enumerate(body.group_by):
        if f not in allowed:
            raise QueryError(f"group_by.{i} is not a field this agreement may query")
    where: dict[str, tuple[Any, ...]] = {}
    for f, values in body.where.items():
        if f not in allowed:
            raise QueryError("where: a field this agreement may not query")
        if f == "program":
            raise QueryError("where.program: choose programs with `programs`")
        if not values or len(set(values)) != len(values):
            raise QueryError(f"where.{f}: give distinct values")
        domain = domains[f]
        for j, v in enumerate(values):      # strict types: "2024" is not 2024
            if v not in domain:
                raise QueryError(f"where.{f}.{j} is not a value of {f}")
        # The domain's own values, in its order: nothing the caller typed reaches the SQL.
        where[f] = tuple(v for v in domain if v in set(values))
    mine = domains["program"]
    chosen = body.programs or Programs(any=list(mine))
    if (chosen.any is None) == (chosen.all is None):
        raise QueryError("programs: give exactly one of `any` or `all`")
    mode = "any" if chosen.any is not None else "all"
    listed = chosen.any if chosen.any is not None else chosen.all
    assert listed is not None
    for j, p in enumerate(listed):
        if p not in mine:
            raise QueryError(f"programs.{mode}.{j} is not a program of this agreement")
    if len(set(listed)) != len(listed):
        raise QueryError(f"programs.{mode} names a program twice")
    selected = tuple(p for p in mine if p in set(listed))
    measure = "persons"
    if isinstance(body.measure, Numeric):
        kind = "mean" if body.measure.mean is not None else "sum"
        name = body.measure.mean if kind == "mean" else body.measure.sum
        if (body.measure.mean is None) == (body.measure.sum is None) or \
                name not in terms.measures:
            raise QueryError("measure: give one of `mean` or `sum` of a measure this "
                             "agreement may use")
        measure = f"{kind}:{name}"
    sigma = body.sigma if body.sigma is not None else policy.noise_sigma
    if sigma < policy.noise_sigma:
        raise QueryError(f"sigma: at least {policy.noise_sigma}")
    years = where.get("year", domains["year"])
    if "year" not in body.group_by and len(years) > 1:
        raise QueryError("people are counted per year: group by year, or keep one year "
                         "with where.year")
    axes = [selected if f == "program" else where.get(f, domains[f]) for f in body.group_by]
    cells = math.prod(len(a) for a in axes)
    if cells > policy.max_cells:
        raise QueryError(f"the answer would have {cells} cells; at most {policy.max_cells}")
    contributions = len(years) * (len(selected) if "program" in body.group_by else 1)
    return Plan(tuple(body.group_by), tuple(sorted(where.items())), mode, selected, measure,
                float(sigma), contributions, tuple(itertools.product(*axes)))


# -- the data: the basis in DuckDB, reloaded when a newer version is published ------------

@dataclass
class Frame:
    """The basis as queried: `py` (person-years: attributes, `mask` with a bit per program
    and `n` people) and `pyp` (person-year-programs, the same with `program`)."""
    con: duckdb.DuckDBPyConnection
    version: int
    committed_at: str
    bits: dict[str, int]


def load_frame(lake: Lake) -> Frame:
    path = lake.disclosure(BASIS)
    if not delta.exists(path):
        raise NotReady("no indicator basis has been published yet (run the marts)")
    table = delta.table(path)
    version = table.version()
    stamp = table.history(1)[0].get("timestamp")
    committed = (dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).isoformat(timespec="seconds")
                 if isinstance(stamp, int) else "")
    basis = delta.frame(path, columns=[*indicators.UNIT, *indicators.ADDITIVE],
                        version=version)
    bits = {p: 1 << i for i, p in enumerate(_all_programs())}
    rows = (basis.sort(indicators.UNIT)
            .unique(indicators.UNIT, keep="first", maintain_order=True)
            .with_columns(pl.col("program").replace_strict(bits, default=0,
                                                           return_dtype=pl.Int32)
                          .alias("bit")))
    py = (rows.group_by("person_id", "year", maintain_order=True)
          .agg(*[pl.col(a).first() for a in indicators.ADDITIVE],
               pl.col("bit").sum().alias("mask")))
    pyp = rows.join(py.select("person_id", "year", "mask"), on=["person_id", "year"])
    con = duckdb.connect(config={"threads": "2"})
    for name, frame in (("py", py), ("pyp", pyp)):
        # People with the same attributes and programs in a year are counted together:
        # 2.1 million person-years at 1,000,000 people are far fewer combinations.
        keys = [c for c in frame.columns if c not in ("person_id", "bit")]
        con.register("src", frame.group_by(keys).agg(pl.len().cast(pl.Int64).alias("n"))
                     .to_arrow())
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM src")
        con.unregister("src")
    return Frame(con, version, committed, bits)


def _literal(v: Any) -> str:
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def sql(p: Plan, f: Frame, agreement_bits: int, bounds: tuple[int, int] | None) -> str:
    """The query over the basis; every name and value in it comes from the plan's
    validated fields and the public domains."""
    table = "pyp" if "program" in p.group_by else "py"
    sel = sum(f.bits[x] for x in p.selected)
    conditions = [f"(mask & {sel}) = {sel}" if p.mode == "all" else f"(mask & {sel}) <> 0"]
    if table == "pyp":
        conditions.append(f"program IN ({', '.join(_literal(x) for x in p.selected)})")
    for field_name, values in p.where:
        conditions.append(f"{field_name} IN ({', '.join(_literal(v) for v in values)})")
    measures = ["sum(n)::BIGINT AS n"]
    if bounds is not None:
        lo, hi = bounds
        measures.append(f"sum(n * (2 * least(greatest(bit_count(mask & {agreement_bits}), "
                        f"{lo}), {hi}) - {lo + hi}))::BIGINT AS s")
    dims = list(p.group_by)
    select = ", ".join([*dims, *measures])
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    return f"SELECT {select} FROM {table} WHERE {' AND '.join(conditions)}{group}"


# -- noise and cost (OpenDP) ---------------------------------------------------------------

@lru_cache(maxsize=64)
def _mechanism(scale: float) -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=float)
    return space >> dp.m.then_gaussian(scale=scale)


def cost(p: Plan, bounds: tuple[int, int] | None) -> float:
    """rho of the answer: OpenDP's privacy map of each noisy vector's L2 sensitivity."""
    rho = float(_mechanism(p.sigma).map(math.sqrt(p.contributions)))
    if bounds is not None:
        width = bounds[1] - bounds[0]
        rho += float(_mechanism(p.sigma * width).map(width * math.sqrt(p.contributions)))
    return rho


@lru_cache(maxsize=1)
def _opendp_version() -> str:
    from importlib.metadata import version

    return version("opendp")


def _noisy(values: list[int], scale: float) -> list[int]:
    """Each value plus its own discrete Gaussian noise. A big grid is sampled in two
    halves at once (OpenDP's sampler releases the GIL: 7,680 cells 200 -> 115 ms); the
    noise of every cell is independent either way, so the output is the same mechanism."""
    if not values:
        return []
    mechanism = _mechanism(scale)
    if len(values) < PARALLEL_CELLS:
        return [int(v) for v in mechanism(values)]
    half = len(values) // 2
    parts = list(_sampler().map(mechanism, [values[:half], values[half:]]))
    return [int(v) for part in parts for v in part]


PARALLEL_CELLS = 2_048


@lru_cache(maxsize=1)
def _sampler() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2, thread_name_prefix="dp-noise")


# -- the service ------------------------------------------------------------------------------

class Queries:
    def __init__(self, lake: Lake, recheck_s: float = 60.0) -> None:
        self.lake, self.recheck_s = lake, recheck_s
        self._frame: Frame | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.ledger = Ledger(lake, lake.local("disclosure", LEDGER))

    def warm(self) -> None:
        _mechanism(load_policy().remote_queries.noise_sigma)     # OpenDP loaded: 0.15 s
        try:
            self.current()
        except NotReady:
            pass

    def current(self) -> Frame:
        with self._lock:
            now = time.monotonic()
            if self._frame is None or now - self._checked > self.recheck_s:
                path = self.lake.disclosure(BASIS)
                latest = delta.table(path).version() if delta.exists(path) else None
                if self._frame is None or latest != self._frame.version:
                    self._frame = load_frame(self.lake)
                self._checked = now
            return self._frame

    def ask(self, agreement: Agreement, token_id: str, p: Plan) -> dict[str, Any]:
        """The protected answer to a plan (BudgetExhausted, NotReady)."""
        terms = agreement.queries
        assert terms is not None
        frame = self.current()
        measure = load_policy().remote_queries.measures.get(p.numeric or "")
        bounds = (measure.lower, measure.upper) if measure else None
        rho = cost(p, bounds)
        earlier = self._earlier(agreement, p.digest, frame.version)
        if earlier is not None:
            return earlier
        spent = self.spent(agreement.id)
        if spent + rho > terms.budget_rho + 1e-12:
            raise self._exhausted(agreement, rho, spent)
        agreement_bits = sum(frame.bits[x] for x in agreement_programs(agreement))
        got = frame.con.cursor().execute(sql(p, frame, agreement_bits, bounds)).fetchall()
        exact = {tuple(r[:len(p.group_by)]): r[len(p.group_by):] for r in got}
        counts = [int(exact.get(c, (0,))[0]) for c in p.grid]
        noisy = _noisy(counts, p.sigma)
        sums = None
        if bounds is not None:
            width = bounds[1] - bounds[0]
            sums = _noisy([int(exact.get(c, (0, 0))[1]) for c in p.grid], p.sigma * width)
        answer = self._answer(p, agreement, frame, noisy, sums, bounds, rho)
        return self._spend(agreement, token_id, p, frame, rho, answer)

    def _answer(self, p: Plan, agreement: Agreement, frame: Frame, noisy: list[int],
                sums: list[int] | None, bounds: tuple[int, int] | None, rho: float
                ) -> dict[str, Any]:
        small = agreement.min_cell_size
        rows, suppressed = [], 0
        value_name = p.measure.replace(":", "_")
        for i, cell in enumerate(p.grid):
            n = noisy[i]
            row = [*cell, n if n >= small else None]
            if sums is not None and bounds is not None:
                lo, hi = bounds
                if n < small:
                    row.append(None)
                elif p.measure.startswith("mean"):
                    row.append(round(min(max((lo + hi) / 2 + sums[i] / (2 * n), lo), hi), 3))
                else:
                    row.append(round((sums[i] + n * (lo + hi)) / 2))
            suppressed += n < small
            rows.append(row)
        columns = [*p.group_by, "persons"] + ([value_name] if sums is not None else [])
        return {
            "query_id": str(uuid.uuid4()),
            "columns": columns, "rows": rows,
            "protection": {
                "method": METHOD, "library": f"opendp {_opendp_version()}", "sigma": p.sigma,
                # The noise on the sum of (value - midpoint): the mean is midpoint +
                # that sum / persons, the sum midpoint x persons + that sum.
                "sigma_centred_sum": p.sigma * (bounds[1] - bounds[0]) / 2 if bounds else None,
                "bounds": list(bounds) if bounds else None,
                "contributions_per_person": p.contributions, "rho": round(rho, 6),
                "min_cell_size": agreement.min_cell_size, "cells": len(rows),
                "cells_suppressed": suppressed, "repeat": False},
            "provenance": {"dataset": f"disclosure/{BASIS}", "delta_version": frame.version,
                           "committed_at": frame.committed_at,
                           "as_of": load_model().as_of.isoformat(),
                           "programs": list(p.selected)},
            "query": p.shape}

    # -- the budget --------------------------------------------------------------------------

    def spent(self, agreement_id: str) -> float:
        return self.ledger.spent(agreement_id)

    def _earlier(self, agreement: Agreement, digest: str, version: int
                 ) -> dict[str, Any] | None:
        """The answer this agreement already paid for, for the same query on the same data."""
        stored = self.ledger.earlier(agreement.id, digest, version)
        return None if stored is None else self._repeat(agreement, stored)

    def _repeat(self, agreement: Agreement, stored: str) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(stored)
        answer["protection"] |= {"repeat": True, "rho": 0.0}
        answer["budget"] = _budget(agreement, self.spent(agreement.id))
        return answer

    def _exhausted(self, agreement: Agreement, rho: float, spent: float) -> BudgetExhausted:
        b = _budget(agreement, spent)
        return BudgetExhausted(
            f"the agreement's privacy-loss budget cannot pay for this query: it costs rho "
            f"{rho:.4f}, {b['rho_remaining']:.4f} of {b['rho_budget']} remains (more noise, "
            "fewer years or no grouping by program cost less)")

    def _spend(self, agreement: Agreement, token_id: str, p: Plan, frame: Frame, rho: float,
               answer: dict[str, Any]) -> dict[str, Any]:
        """Records the spend (with the answer, for repeats) before the answer leaves; a
        query paid for by a concurrent request meanwhile gets that request's answer."""
        terms = agreement.queries
        assert terms is not None
        outcome, value = self.ledger.spend(
            agreement.id, token_id, answer["query_id"], frame.version, p.digest, rho,
            json.dumps(answer), terms.budget_rho)
        if outcome == "earlier":
            assert isinstance(value, str)
            return self._repeat(agreement, value)
        assert isinstance(value, float)
        if outcome == "exhausted":
            raise self._exhausted(agreement, rho, value)
        crash.point("queries.after_spend")
        answer["budget"] = _budget(agreement, value)
        return answer


def _budget(agreement: Agreement, spent: float) -> dict[str, float]:
    assert agreement.queries is not None
    budget = agreement.queries.budget_rho
    return {"rho_budget": budget, "rho_spent": round(spent, 6),
            "rho_remaining": round(max(budget - spent, 0.0), 6)}


class Ledger:
    """What each agreement has spent, and the answers it paid for: a SQLite database in
    the restricted disclosure zone (a transaction checks and spends at once, across the
    gateway's worker processes; a committed spend survives kill -9). Not a Delta table:
    reading a table of one small commit per query cost 200 ms after a hundred queries."""

    def __init__(self, lake: Lake, path: Path) -> None:
        self.lake, self.path = lake, path

    def _connect(self) -> sqlite3.Connection:
        return store.connect(self.lake, self.path, LEDGER_SCHEMA, durable=True)

    def spent(self, agreement_id: str) -> float:
        with closing(self._connect()) as con:
            return _spent(con, agreement_id)

    def earlier(self, agreement_id: str, digest: str, version: int) -> str | None:
        with closing(self._connect()) as con:
            return _earlier(con, agreement_id, digest, version)

    def spend(self, agreement_id: str, token_id: str, query_id: str, version: int,
              digest: str, rho: float, answer: str, budget: float
              ) -> tuple[str, str | float]:
        """("earlier", its answer) | ("exhausted", spent) | ("paid", spent after)."""
        with closing(self._connect()) as con, store.transaction(con):
            stored = _earlier(con, agreement_id, digest, version)
            if stored is not None:
                return "earlier", stored
            spent = _spent(con, agreement_id)
            if spent + rho > budget + 1e-12:
                return "exhausted", spent
            con.execute("INSERT INTO spends VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                query_id, agreement_id, token_id,
                dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"), version,
                digest, rho, answer))
            return "paid", spent + rho


def _spent(con: sqlite3.Connection, agreement_id: str) -> float:
    row = con.execute("SELECT coalesce(sum(rho), 0) FROM spends WHERE agreement = ?",
                      (agreement_id,)).fetchone()
    return float(row[0])


def _earlier(con: sqlite3.Connection, agreement_id: str, digest: str, version: int
             ) -> str | None:
    row = con.execute("SELECT answer FROM spends WHERE agreement = ? AND shape_sha256 = ? "
                      "AND basis_version = ? LIMIT 1", (agreement_id, digest, version)
                      ).fetchone()
    return None if row is None else str(row[0])
