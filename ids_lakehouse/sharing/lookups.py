"""Operations query-and-retrieve (`POST /v1/lookups`): a partner under an operations
agreement submits people as it knows them and gets, per person, the agreement's permitted
fields of the one person the submission confirms, "refer_for_review", or "no_match";
never a list of candidates, a score or comparison levels, never a partial or wildcard
search (first name, last name and date of birth are required, and a match needs them
exact: identity/realtime.py's CONFIRMED).

Who is answerable: the people of the agreement's latest release of its person-level mart
(for dsa-traveller-followup, contact_directory: the travellers, with the values the
release decided from the agreement's own sources). The submitted person is compared with
the records of the agreement's own `sources` only, with the nightly model
(identity/realtime.py): other agencies' records decide nothing and show through nothing;
anyone else is "no_match", as is nobody.

Submitted values are standardised by conform's own standardisers (United States
conventions). An optional value that cannot be used (an invalid ZIP or phone), or that
the agreement does not let the partner see (its agreeing or not could flip the answer),
is left out of the matching and named in the answer's `unused` with its status; an
unusable name makes that person's answer `invalid`. Nothing submitted or returned is
logged or audited: the audit event holds the counts of each outcome."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from ids_lakehouse import delta, releases, storage
from ids_lakehouse.agreements import Agreement
from ids_lakehouse.config import Lake
from ids_lakehouse.identity import linkage, mpi, realtime
from ids_lakehouse.sharing.limits import SharedLimit

INVALID = "invalid"
TEXT = Field(default=None, min_length=1, max_length=100)


class Person(BaseModel):
    """One person as the requesting agency knows them."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    ref: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                     description="The requester's own reference, echoed in the answer "
                                 "(not personal data: letters, digits, _ . : - only).")
    first_name: str = Field(min_length=1, max_length=100)
    middle_name: str | None = TEXT
    last_name: str = Field(min_length=1, max_length=100)
    dob: dt.date = Field(strict=True, description="Date of birth, YYYY-MM-DD (nothing else: "
                                                  "no time, no other format).")
    sex: str | None = Field(default=None, pattern=r"^[FMfm]$")
    ssn: str | None = Field(default=None, min_length=1, max_length=20)
    national_id: str | None = Field(default=None, min_length=1, max_length=40)
    national_id_type: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{1,39}$")
    street: str | None = Field(default=None, min_length=1, max_length=200)
    zip: str | None = Field(default=None, min_length=1, max_length=20)
    phone: str | None = Field(default=None, min_length=1, max_length=40)


class LookupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    people: list[Person] = Field(min_length=1)

    @classmethod
    def parse(cls, body: bytes) -> LookupBody:
        """The body, refused (ValueError) when it repeats a key in an object (JSON parsers
        keep one of the two silently: which one the caller meant is unknown) or a ref
        (each answer is told apart by its ref)."""
        refuse_repeated_keys(body)
        parsed = cls.model_validate_json(body)
        refs = [p.ref for p in parsed.people]
        if len(set(refs)) != len(refs):
            raise ValueError("each person's ref must be unique in a request")
        return parsed


def refuse_repeated_keys(body: bytes) -> None:
    """ValueError when a JSON object repeats a key (parsers keep one of the two silently:
    which one the caller meant is unknown) or the body is not JSON."""
    import json

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("a key is repeated in an object")
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:
        raise ValueError(str(exc) if "repeated" in str(exc) else "not JSON") from None


class NotAnswerable(LookupError):
    """The agreement has nothing the lookups can answer from (no release yet, or no
    person-level mart in it), or the index is not built."""


@dataclass(frozen=True)
class Answerable:
    """An agreement's released person-level mart: who is answerable, with what."""
    folder: Path
    version: int
    mart: str
    rows: dict[str, dict[str, Any]]
    fields: frozenset[str]        # what the agreement lets the partner see of a person
    agreement: Agreement          # the declaration they were read under


# The statuses of an optional field that is used (or was not given).
USABLE = {"valid", "possible", "partial", "missing"}


class UsedUp(Exception):
    """The agreement's people per minute are used up (the request is refused whole)."""


class Lookups:
    """The index and the answerable populations, loaded once and reloaded when the
    identity build or the release changes (looked at most every `recheck_s` seconds).
    With `allowance`, each request's people are taken from its agreement's allowance
    before they are answered, or the request is refused (UsedUp)."""

    def __init__(self, lake: Lake, max_batch: int = 100, recheck_s: float = 60.0,
                 allowance: SharedLimit | None = None) -> None:
        self.lake, self.max_batch, self.recheck_s = lake, max_batch, recheck_s
        self.allowance = allowance
        self.lock = threading.Lock()
        self.index: realtime.Index | None = None
        self.index_version: int | None = None
        self.index_sources: frozenset[str] = frozenset()
        self.checked = -1e9
        self.answerable: dict[str, tuple[float, Answerable]] = {}
        self.together = Together(self._answer_jobs, max_people=max(500, max_batch))

    def warm(self) -> None:
        """Load the index now if there is one (a gateway without one still serves
        Delta Sharing; its lookups answer 503 until the index is built)."""
        try:
            self.current()
        except NotAnswerable:
            pass

    def current(self) -> realtime.Index:
        with self.lock:
            if time.monotonic() - self.checked >= self.recheck_s or self.index is None:
                xref = self.lake.identity("person_xref")
                version = delta.table(xref).version() if delta.exists(xref) else None
                if version is None:
                    raise NotAnswerable("the master person index is not built yet")
                sources = lookup_sources()
                if version != self.index_version or sources != self.index_sources:
                    self.index = load_index(self.lake, sources)
                    self.index_version, self.index_sources = version, sources
                self.checked = time.monotonic()
            assert self.index is not None
            return self.index

    def population(self, agreement: Agreement) -> Answerable:
        """The agreement's answerable people, from its latest release (looked for at
        most every `recheck_s` seconds, as the index is), with what the agreement as it
        stands now permits: an edited declaration is applied at once (the permitted
        fields were kept from the first load for as long as the release stood)."""
        cached = self.answerable.get(agreement.id)
        if cached is not None and cached[1].agreement != agreement:
            cached = None
        if cached is not None and time.monotonic() - cached[0] < self.recheck_s:
            return cached[1]
        published = releases.published(self.lake, agreement)
        if not published:
            raise NotAnswerable("nothing is released under this agreement yet")
        folder = storage.local_only(published[-1], "The sharing gateway")
        if cached is not None and cached[1].folder == folder:
            self.answerable[agreement.id] = (time.monotonic(), cached[1])
            return cached[1]
        for mart in sorted(agreement.release):
            path = folder / f"{mart}.parquet"
            if path.exists() and "person_id" in pq.read_schema(path).names:
                fields = [f for f in agreement.permitted.get(mart, []) if f != "person_id"]
                frame = pl.read_parquet(path, columns=["person_id", *fields])
                rows = {r.pop("person_id"): _jsonable(r) for r in frame.iter_rows(named=True)}
                permitted = frozenset(agreement.permitted.get(mart, []))
                if not {"first_name", "last_name", "dob"} <= permitted:
                    raise NotAnswerable("this agreement does not permit the names and date "
                                        "of birth a lookup must confirm")
                answer = Answerable(folder, int(folder.name[1:]), mart, rows, permitted,
                                    agreement)
                self.answerable[agreement.id] = (time.monotonic(), answer)
                return answer
        raise NotAnswerable("this agreement releases no person-level mart to answer from")

    def submit(self, agreement: Agreement, people: list[Person]) -> Future[Answered]:
        """The answer, when it comes (UsedUp, NotAnswerable or another error as the
        future's exception). Await it with asyncio.wrap_future: no thread waits."""
        return self.together.submit(agreement, people)

    def _answer_jobs(self, agreement: Agreement, jobs: list[_Job]) -> None:
        """Answer waiting requests of one agreement together: each request's people are
        taken from the allowance first (a refused request gets UsedUp)."""
        allowed = self.allowance.allow_each(agreement.id, [len(j.people) for j in jobs]) \
            if self.allowance is not None else [True] * len(jobs)
        for job, ok in zip(jobs, allowed, strict=True):
            if not ok:
                job.future.set_exception(UsedUp())
        jobs = [j for j, ok in zip(jobs, allowed, strict=True) if ok]
        if not jobs:
            return
        try:
            results, meta = self.answer(agreement, [p for j in jobs for p in j.people])
        except BaseException as error:      # each waiting request gets it
            for job in jobs:
                job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            job.future.set_result(Answered(results[start:start + len(job.people)], meta))
            start += len(job.people)

    def answer(self, agreement: Agreement, people: list[Person]
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per person, the answer; and the versions it was given from."""
        index, answerable = self.current(), self.population(agreement)
        frame, problems, unused = standardise(people, answerable.fields, agreement.id)
        usable = [i for i, p in enumerate(problems) if not p]
        candidates = index.candidates(frame[usable], set(agreement.sources)) if usable else []
        decided = dict(zip(usable, index.decide(candidates, set(answerable.rows)),
                           strict=True))
        results: list[dict[str, Any]] = []
        for i, person in enumerate(people):
            answer: dict[str, Any] = {"ref": person.ref}
            if problems[i]:
                answer |= {"outcome": INVALID, "problems": problems[i]}
            else:
                o = decided[i]
                answer["outcome"] = o.outcome
                if o.outcome == realtime.MATCH and o.person_id is not None:
                    # The permitted fields only: no score, no comparison levels (they
                    # would tell what the index holds beyond them).
                    answer["person"] = {"person_id": o.person_id,
                                        **answerable.rows[o.person_id]}
            if unused[i]:
                answer["unused"] = unused[i]
            results.append(answer)
        return results, {"model_version": index.model_version,
                         "release_version": answerable.version, "mart": answerable.mart}


@dataclass(frozen=True)
class Answered:
    """One request's answers, and the versions they were given from."""
    results: list[dict[str, Any]]
    meta: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"results": self.results, **self.meta}

    def counts(self) -> dict[str, Any]:
        """What the audit log may hold about it: counts of each outcome, versions."""
        counts = {realtime.MATCH: 0, realtime.REVIEW: 0, realtime.NO_MATCH: 0, INVALID: 0}
        for answer in self.results:
            counts[answer["outcome"]] += 1
        return counts | {k: self.meta[k] for k in ("model_version", "release_version")}


@dataclass
class _Job:
    agreement: Agreement
    people: list[Person]
    future: Future[Answered] = field(default_factory=Future)


class Together:
    """Concurrent requests answered together. Standardising and blocking a batch costs
    about the same for one person as for eight (8 against 12 ms at 1,000,000 people:
    most of it is per query, not per row), so one thread takes every request waiting
    when it is free and hands each agreement's requests to `answer` together (which
    settles each request's future). An idle gateway answers a request at once (nothing
    waits for a batch to fill); a busy one answers in larger batches, never more than
    `max_people` people at a time. Requests wait on their futures, not in threads."""

    def __init__(self, answer: Callable[[Agreement, list[_Job]], None],
                 max_people: int) -> None:
        from collections import deque

        self.answer, self.max_people = answer, max_people
        self.waiting: deque[_Job] = deque()
        self.ready = threading.Condition()
        threading.Thread(target=self._run, name="lookups", daemon=True).start()

    def submit(self, agreement: Agreement, people: list[Person]) -> Future[Answered]:
        job = _Job(agreement, people)
        with self.ready:
            self.waiting.append(job)
            self.ready.notify()
        return job.future

    def _take(self) -> list[_Job]:
        with self.ready:
            while not self.waiting:
                self.ready.wait()
            jobs = [self.waiting.popleft()]
            people = len(jobs[0].people)
            while self.waiting and people + len(self.waiting[0].people) <= self.max_people:
                jobs.append(self.waiting.popleft())
                people += len(jobs[-1].people)
            return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            groups: dict[str, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.agreement.id, []).append(job)
            for group in groups.values():
                try:
                    self.answer(group[0].agreement, group)
                except BaseException as error:      # nothing left waiting for ever
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(error)


def lookup_sources() -> frozenset[str]:
    """The sources any operations agreement answers from (its `sources`)."""
    from ids_lakehouse.agreements import load_agreements

    return frozenset(s for a in load_agreements().values() if a.purpose == "operations"
                     for s in a.sources)


def load_index(lake: Lake, sources: frozenset[str]) -> realtime.Index:
    """The records of `sources` (answers come from an agreement's own sources only: the
    index holds no other agency's records), with their person ids and the saved model.
    At 1,000,000 people the whole index took 3.6 GB in two workers and 23 s to load."""
    import pyarrow.dataset as pads

    saved = linkage.load_model(mpi.models_dir(lake))
    if saved is None:
        raise NotAnswerable("no linkage model is saved yet")
    model, tf, version = saved
    records = delta.frame(lake.silver("person_record"), columns=linkage.SILVER_COLUMNS,
                          filter=pads.field("source").isin(sorted(sources)))
    xref = delta.frame(lake.identity("person_xref"), columns=["unique_id", "person_id"],
                       filter=pads.field("source").isin(sorted(sources)))
    return realtime.Index(records, xref, model, tf, version)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}


# Optional submitted fields and the linkage columns they fill.
OPTIONAL = {"middle_name": ("middle_initial",), "sex": ("sex",), "ssn": ("ssn", "ssn_last4"),
            "national_id": ("national_id", "national_id_type"), "street": ("street",),
            "zip": ("zip",), "phone": ("phone",)}


def standardise(people: list[Person], permitted: frozenset[str] | None = None,
                kept_for: str | None = None
                ) -> tuple[pl.DataFrame, list[dict[str, str]], list[dict[str, str]]]:
    """The submitted people as linkage input (linkage.linkage_input's columns); per person,
    the required fields that are unusable (field -> status) and the optional ones left
    out of the matching (field -> status). The fields are read by conform's own
    standardisers, with the United States conventions of a source that declares none.

    With `permitted` (the fields the agreement lets the partner see), an optional field
    outside it is not used ("not_permitted"): whether it agrees could flip the answer, and
    so tell the partner what they may not see (a wrong middle name vetoed a match).

    With `kept_for` (an agreement), the KEPT fields' values are kept for that agreement's
    next batches (see KEPT); without it nothing is kept."""
    from ids_lakehouse.conform import standardise as std
    from ids_lakehouse.sources import Conventions

    text = ["first_name", "middle_name", "last_name", "sex", "ssn", "street", "zip", "phone",
            "national_id", "national_id_type"]
    # A field the partner may not see is not read at all: as if not given.
    withheld = [f for f in OPTIONAL if f not in permitted] if permitted is not None else []
    hidden = {*withheld, *(["national_id_type"] if "national_id" in withheld else [])}
    columns: dict[str, list[Any]] = {c: [None if c in hidden else getattr(p, c)
                                         for p in people] for c in text}
    # Identifiers and postcodes folded here, once per value (std.ssn_frame's `folded`).
    for c in FOLDED:
        columns[f"_fold_{c}"] = [std.fold_text(v) if v is not None else None
                                 for v in columns[c]]
    declared = id_types()
    conventions = Conventions()
    key = (tuple(sorted(declared)), conventions.postcode_pattern)
    expressions, outputs = _expressions(*key), _outputs(*key)
    # Fields kept between batches are read from what earlier batches computed (carried
    # into the frame as `_known_<column>`); an optional field nobody in the batch gave is
    # not standardised (a single lookup rarely brings an SSN): its outputs are those of a
    # null, computed once. The frame holds only the inputs of what is computed (a column
    # costs its Series).
    given: dict[str, list[Any]] = {}
    schema: dict[str, Any] = {}
    computed: list[pl.Expr] = []
    keeps = KEPT if kept_for is not None else ()
    for part, exprs in expressions.items():
        if part in keeps:
            kept = _KEPT.setdefault((kept_for, key, part), {})
            if all(v in kept for v in columns[part]):
                for i, (name, dtype) in enumerate(outputs[part]):
                    given[f"_known_{name}"] = [kept[v][i] for v in columns[part]]
                    schema[f"_known_{name}"] = dtype
                    computed.append(pl.col(f"_known_{name}").alias(name))
                continue
        if part in OPTIONAL_INPUTS and all(v is None for v in columns[part]):
            computed += _when_absent(*key, part)
            continue
        computed += exprs
        for name in _inputs(*key)[part]:
            given[name] = [p.dob for p in people] if name == "dob" else columns[name]
            schema[name] = pl.Date if name == "dob" else pl.String
    # (A submitted value has no surrounding white space: the model strips it.)
    phones = std.phones(pl.Series(columns["phone"], dtype=pl.String), conventions.country,
                        stripped=True)
    frame = pl.DataFrame(given | {"_phone": phones["phone"]},
                         schema=schema | {"_phone": pl.String})
    out = frame.select(*computed, pl.col("_phone").alias("phone"))
    for part in keeps:
        if f"_known_{outputs[part][0][0]}" not in given:
            kept = _KEPT[(kept_for, key, part)]
            if len(kept) >= KEPT_MAX:
                kept.clear()
            kept.update(zip(columns[part], out.select([n for n, _ in outputs[part]]).rows(),
                            strict=True))
    out = out.with_columns(pl.when(pl.col("national_id").is_not_null())
                           .then(pl.Series(columns["national_id_type"], dtype=pl.String))
                           .alias("national_id_type"))
    problems: list[dict[str, str]] = []
    unused: list[dict[str, str]] = []
    phone_status = phones["phone_status"].to_list()
    for i, row in enumerate(out.iter_rows(named=True)):
        # A name without a letter ("--", "?") is no name to match on.
        problems.append({c: "unusable" for c in ("first_name", "last_name")
                         if not any(ch.isalpha() for ch in row[c] or "")})
        left_out = {}
        if row["ssn_status"] not in USABLE:
            left_out["ssn"] = str(row["ssn_status"])
        if row["zip_status"] not in USABLE:
            left_out["zip"] = str(row["zip_status"])
        if phone_status[i] not in USABLE:
            left_out["phone"] = str(phone_status[i])
        nid = people[i].national_id
        if nid is not None and row["national_id"] is None:
            left_out["national_id"] = ("unknown_type" if people[i].national_id_type
                                       not in declared else "invalid")
        unused.append(left_out)
    for i, person in enumerate(people):
        for f in withheld:
            if getattr(person, f) is not None or (f == "national_id" and
                                                  person.national_id_type is not None):
                unused[i][f] = "not_permitted"
    return linkage.linkage_input(out), problems, unused


FOLDED = ("ssn", "national_id", "zip")

# Submitted fields whose standardised values are kept between batches, by value: names,
# sex and postcodes recur from one lookup to the next (standardising them was a third of
# a lookup's time). Identifiers, streets and phones are one person's: computed each time,
# never kept. Kept per agreement: a value another partner submitted answers faster (no
# standardising), and across agreements that timing would tell one partner which names
# another looked up. At most KEPT_MAX values per agreement and field (then forgotten
# all at once).
KEPT = ("first_name", "middle_name", "last_name", "sex", "zip")
KEPT_MAX = 20_000
_KEPT: dict[tuple[str | None, Any, str], dict[str | None, tuple[Any, ...]]] = {}


# The submitted fields that may be absent, and whose standardising is skipped then.
OPTIONAL_INPUTS = ("middle_name", "ssn", "national_id", "street", "zip")


@lru_cache(maxsize=8)
def _expressions(id_types_declared: tuple[str, ...], postcode_pattern: str
                 ) -> dict[str, list[pl.Expr]]:
    """The standardising expressions by the submitted field they read, built once:
    building them (thousands of Python objects) cost more than running them on a few
    rows."""
    from ids_lakehouse.conform import standardise as std

    declared = id_types()
    # National ids: each type read by its declaration in data_model/sources (one pattern
    # per type), an undeclared type not at all.
    national: list[pl.Expr] = [
        pl.when(pl.col("national_id_type") == kind).then(e)
        for kind in id_types_declared for e in std.national_id_frame(
            pl.col("national_id"), declared[kind].id_type, declared[kind].pattern,
            pl.col("_fold_national_id"))[:1]]
    return {
        "first_name": [std.name(pl.col("first_name")).alias("first_name")],
        "middle_name": [std.name(pl.col("middle_name")).alias("middle_name")],
        "last_name": [std.without_suffix(std.name(pl.col("last_name"))).alias("last_name")],
        "dob": [pl.col("dob")], "sex": [pl.col("sex").str.to_uppercase()],
        "ssn": std.ssn_frame(pl.col("ssn"), pl.col("_fold_ssn")),
        "national_id": [pl.coalesce(national or [pl.lit(None, pl.String)])
                        .alias("national_id")],
        "street": [std.street(pl.col("street")).alias("street")],
        "zip": std.postcode_frame(pl.col("zip"), postcode_pattern, pl.col("_fold_zip")),
        "": [pl.lit("lookup").alias("source"),
             pl.int_range(pl.len()).cast(pl.String).alias("source_record_id")]}


@lru_cache(maxsize=8)
def _outputs(id_types_declared: tuple[str, ...], postcode_pattern: str
             ) -> dict[str, list[tuple[str, pl.DataType]]]:
    """The columns (name, type) each field's expressions give, in order."""
    exprs = _expressions(id_types_declared, postcode_pattern)
    inputs = ["first_name", "middle_name", "last_name", "sex", "ssn", "national_id",
              "national_id_type", "street", "zip", *(f"_fold_{c}" for c in FOLDED)]
    nulls = pl.DataFrame({c: [None] for c in [*inputs, "dob"]},
                         schema={**dict.fromkeys(inputs, pl.String), "dob": pl.Date})
    return {part: list(nulls.select(e).schema.items()) for part, e in exprs.items()}


@lru_cache(maxsize=8)
def _inputs(id_types_declared: tuple[str, ...], postcode_pattern: str
            ) -> dict[str, list[str]]:
    """The submitted columns each field's expressions read."""
    exprs = _expressions(id_types_declared, postcode_pattern)
    return {part: sorted({n for e in group for n in e.meta.root_names()})
            for part, group in exprs.items()}


@lru_cache(maxsize=64)
def _when_absent(id_types_declared: tuple[str, ...], postcode_pattern: str, field: str
                 ) -> list[pl.Expr]:
    """What `_expressions(...)[field]` gives for a null input, as literals."""
    inputs = [field, f"_fold_{field}", "national_id_type"]
    nulls = pl.DataFrame({c: [None] for c in inputs}, schema=dict.fromkeys(inputs, pl.String))
    row = nulls.select(_expressions(id_types_declared, postcode_pattern)[field])
    return [pl.lit(row[c][0], dtype=row.schema[c]).alias(c) for c in row.columns]


def id_types() -> dict[str, Any]:
    """The national id types the sources declare, with their declarations."""
    from ids_lakehouse.sources import load_sources

    out = {}
    for defn in load_sources().values():
        fm = defn.mapping.get("person_record", {}).get("national_id")
        if fm is not None and fm.id_type:
            out[fm.id_type] = fm
    return out
