"""Data requests: a requester asks for columns of marts, for a purpose, for a recipient and
a period; the policy (data_model/requests.yaml) answers from the declarations alone and
says why; a steward decides what the policy leaves to a steward, with a reason; an
approved request drafts an agreement file in the shape of data_model/agreements/.

The policy's answer is a pure function of the request and the declarations: the same
request always gets the same answer and the same reasons (each answer records the digest
of the declarations it was computed under). Requests live in the restricted zone
(LAKE_ROOT/restricted/sharing/requests.sqlite); filing and deciding are audited."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from ids_lakehouse import audit
from ids_lakehouse.config import Lake
from ids_lakehouse.declarations import parse
from ids_lakehouse.marts.declaration import Purpose, load_marts
from ids_lakehouse.model import load_model
from ids_lakehouse.sharing import store
from ids_lakehouse.sources import load_sources

Need = Literal["open", "steward", "refused"]
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
CLASS_WORDS = {"quasi_identifier": "a quasi-identifier", "sensitive": "sensitive",
               "direct_identifier": "a direct identifier",
               "non_identifying": "non-identifying"}
INVISIBLE = ("Cc", "Cf", "Zl", "Zp")    # controls, format (bidi, zero-width), separators
ORDER: dict[str, int] = {"open": 0, "steward": 1, "refused": 2}
EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


class RequestPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sla_days: int = Field(ge=1)
    max_period_days: int = Field(ge=1)
    max_days_ahead: int = Field(ge=0)
    max_requests_per_day: int = Field(ge=1)
    regimes: dict[str, Need]
    classifications: dict[str, Need]


@lru_cache(maxsize=1)
def load_request_policy() -> RequestPolicy:
    text = resources.files("data_model").joinpath("requests.yaml").read_text()
    return RequestPolicy.model_validate(parse(text))


def _text(max_length: int) -> Any:
    return Field(min_length=1, max_length=max_length)


class DataRequest(BaseModel):
    """What a requester files. Text is one line of printable characters."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: StrictStr = _text(200)
    purpose: Purpose
    recipient_organisation: StrictStr = _text(200)
    recipient_contact: StrictStr = _text(254)
    legal_basis: StrictStr = _text(1000)
    justification: StrictStr = _text(2000)
    start: dt.date
    end: dt.date
    columns: dict[StrictStr, list[StrictStr]] = Field(min_length=1)    # mart -> columns
    sources: list[StrictStr] = Field(min_length=1)

    @field_validator("title", "recipient_organisation", "recipient_contact", "legal_basis",
                     "justification")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(unicodedata.category(c) in INVISIBLE for c in value):
            raise ValueError("holds control or invisible characters (line breaks, escapes)")
        return value.strip()

    @field_validator("title", "recipient_organisation", "legal_basis", "justification")
    @classmethod
    def _no_identifiers(cls, value: str) -> str:
        # Requests are kept, shown to stewards and turned into agreement files: no one's
        # identifiers in them.
        from ids_lakehouse.deid.scanner import identifiers_in_text, in_words

        found = identifiers_in_text(value)
        if found:
            raise ValueError(f"looks like it holds {in_words(found)}: describe without "
                             "copying identifiers, dates or long numbers")
        return value

    @field_validator("columns")
    @classmethod
    def _names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # Names, not text: what is not a plain name is not filed (nor audited).
        if not all(NAME.fullmatch(m) and all(NAME.fullmatch(c) for c in cs)
                   for m, cs in value.items()):
            raise ValueError("mart and column names are lower-case names (a-z, 0-9, _)")
        return {m: sorted(set(cs)) for m, cs in value.items()}

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: list[str]) -> list[str]:
        if not all(NAME.fullmatch(s) for s in value):
            raise ValueError("agency names are lower-case names (a-z, 0-9, _)")
        return sorted(set(value))

    @field_validator("recipient_contact")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL.fullmatch(value):
            raise ValueError("must be an e-mail address")
        return value


@dataclass(frozen=True)
class Finding:
    rule: str           # the rule's name, stable
    need: Need
    message: str        # why, in words (names marts, columns, regimes; never a value)


@dataclass(frozen=True)
class Evaluation:
    outcome: Literal["granted_aggregate", "needs_steward", "refused"]
    findings: list[Finding]
    declarations: str       # digest of the declarations the answer was computed under

    def as_json(self) -> str:
        return json.dumps({"outcome": self.outcome, "declarations": self.declarations,
                           "findings": [f.__dict__ for f in self.findings]}, sort_keys=True)


def declarations_digest() -> str:
    """SHA-256 over the declarations an answer depends on (as loaded)."""
    parts = [load_model().model_dump_json(), load_marts().model_dump_json(),
             load_request_policy().model_dump_json(),
             *(s.model_dump_json() for _, s in sorted(load_sources().items()))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def lineage_regimes(lineage: list[str]) -> list[tuple[str, str]]:
    """(upstream field, legal regime) of each silver field a mart column derives from."""
    model = load_model()
    out: list[tuple[str, str]] = []
    for item in lineage:
        table, _, column = item.partition(".")
        layer, _, entity = table.partition("/")
        if layer == "silver" and entity in model.entities and \
                column in model.entities[entity].fields:
            out.append((item, model.entities[entity].fields[column].legal_regime))
    return out


def evaluate(request: DataRequest, today: dt.date,
             policy: RequestPolicy | None = None) -> Evaluation:
    """The policy's answer to a request, with every finding that led to it."""
    policy = policy or load_request_policy()
    marts = load_marts()
    sources = load_sources()
    findings: list[Finding] = []

    def add(rule: str, need: Need, message: str) -> None:
        findings.append(Finding(rule, need, message))

    if request.end < request.start:
        add("period", "refused", "the period ends before it starts")
    elif (request.end - request.start).days > policy.max_period_days:
        add("period", "refused", f"the period is longer than {policy.max_period_days} days")
    elif request.end < today:
        add("period", "refused", "the period has already ended")
    elif (request.start - today).days > policy.max_days_ahead:
        add("period", "refused", f"the period starts more than {policy.max_days_ahead} days "
            "ahead")
    unknown = sorted(set(request.sources) - set(sources))
    if unknown:
        add("sources", "refused", f"sources {', '.join(unknown)} are not declared")
    for mart_name, columns in sorted(request.columns.items()):
        mart = marts.marts.get(mart_name)
        if mart is None:
            add("marts_only", "refused", f"{mart_name} is not a mart: only marts are shared; "
                "other tables (raw deliveries, the identity index, registers, the audit log) "
                "never leave the lakehouse")
            continue
        if mart.purpose != request.purpose:
            add("purpose", "refused", f"{mart_name} serves the {mart.purpose} purpose, not "
                f"{request.purpose}")
            continue
        missing = sorted(set(columns) - set(mart.columns))
        if missing:
            add("known_columns", "refused", f"{mart_name} has no column "
                f"{', '.join(missing)}")
        if not columns:
            add("known_columns", "refused", f"no column of {mart_name} was chosen")
        if mart.aggregate:
            add("aggregate", "open", f"{mart_name} is published as protected counts (small "
                "cells suppressed, cell-key perturbation): open data")
            continue
        add("person_level", "steward", f"{mart_name} holds records of people, not counts: "
            "a named steward decides, under an agreement")
        for column in sorted(set(columns) & set(mart.columns)):
            declared = mart.columns[column]
            cls = declared.classification
            if cls == "direct_identifier" and request.purpose != "operations":
                add("direct_identifiers", "refused", f"{mart_name}.{column} is a direct "
                    "identifier: direct identifiers leave only under an operations purpose")
            elif policy.classifications.get(cls, "steward") != "open":
                add("classification", policy.classifications.get(cls, "steward"),
                    f"{mart_name}.{column} is {CLASS_WORDS.get(cls, cls)}: person-level "
                    "data needs a named steward's decision and an agreement")
            for upstream, regime in lineage_regimes(list(declared.lineage)):
                need = policy.regimes.get(regime, "steward")
                if need != "open":
                    add(f"regime:{regime}", need, f"{mart_name}.{column} derives from "
                        f"{upstream}, under {regime.replace('_', ' ')}")
    worst = max((ORDER[f.need] for f in findings), default=0)
    outcome: Literal["granted_aggregate", "needs_steward", "refused"] = \
        ("granted_aggregate", "needs_steward", "refused")[worst]
    return Evaluation(outcome, findings, declarations_digest())


# ------------------------------------------------------------------ storage

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "requester TEXT NOT NULL, filed_at TEXT NOT NULL, body TEXT NOT NULL, "
    "evaluation TEXT NOT NULL, status TEXT NOT NULL, decided_by TEXT, decided_at TEXT, "
    "decision_reason TEXT, draft TEXT)",
)
STATUSES = {"granted_aggregate": "granted (open data)", "needs_steward": "waiting for a steward",
            "refused": "refused by the policy", "approved": "approved by a steward",
            "denied": "denied by a steward"}


class RequestError(ValueError):
    """Why a request cannot be filed or decided (one line; names fields, never values)."""


class TooMany(RequestError):
    """Over the requests one person may file in 24 hours."""


@dataclass(frozen=True)
class Filed:
    id: int
    requester: str
    filed_at: dt.datetime
    request: DataRequest
    evaluation: dict[str, Any]
    status: str
    decided_by: str | None
    decided_at: dt.datetime | None
    decision_reason: str | None
    draft: str | None

    def age_days(self, now: dt.datetime) -> int:
        end = self.decided_at or now
        return (end - self.filed_at).days

    def due(self, policy: RequestPolicy) -> dt.datetime | None:
        if self.evaluation["outcome"] != "needs_steward":
            return None
        return self.filed_at + dt.timedelta(days=policy.sla_days)

    def overdue(self, now: dt.datetime, policy: RequestPolicy) -> bool:
        due = self.due(policy)
        return self.status == "needs_steward" and due is not None and now > due


def path(lake: Lake) -> Path:
    return lake.local("sharing", "requests.sqlite")


def _connect(lake: Lake) -> sqlite3.Connection:
    return store.connect(lake, path(lake), SCHEMA, durable=True)


def parse_request(raw: dict[str, Any]) -> DataRequest:
    """A request from its fields; RequestError names the fields that are wrong."""
    try:
        return DataRequest.model_validate(raw)
    except ValidationError as exc:
        said = []
        for e in exc.errors(include_input=False):
            where = ".".join(str(p) for p in e["loc"][:1]) or "request"
            # Our own validators' words hold no input; pydantic's may quote it.
            why = e["msg"].removeprefix("Value error, ") if e["type"] == "value_error" \
                else None
            said.append(f"{where}: {why}" if why else where)
        raise RequestError(f"check {'; '.join(sorted(set(said)))}") from None


def file(lake: Lake, requester: str, request: DataRequest,
         now: dt.datetime | None = None) -> Filed:
    """File a request: the policy answers at once; audited before it is stored."""
    now = now or dt.datetime.now(dt.timezone.utc)
    policy = load_request_policy()
    evaluation = evaluate(request, now.date(), policy)
    marts, sources = load_marts().marts, load_sources()
    # Declared names only in the audit log (anything else is counted, not written).
    declared = {m: [c for c in cs if c in marts[m].columns]
                for m, cs in request.columns.items() if m in marts}
    undeclared = sum(len(cs) for cs in request.columns.values()) - \
        sum(len(cs) for cs in declared.values())
    con = _connect(lake)
    try:
        with store.transaction(con):
            since = (now - dt.timedelta(days=1)).isoformat()
            filed_today = con.execute("SELECT count(*) FROM requests WHERE requester = ? AND "
                                      "filed_at > ?", (requester, since)).fetchone()[0]
            if filed_today >= policy.max_requests_per_day:
                raise TooMany(f"{filed_today} requests filed in the last 24 hours: the limit "
                              f"is {policy.max_requests_per_day}")
            cur = con.execute("INSERT INTO requests (requester, filed_at, body, evaluation, "
                              "status) VALUES (?, ?, ?, ?, ?)",
                              (requester, now.isoformat(), request.model_dump_json(),
                               evaluation.as_json(), evaluation.outcome))
            rid = int(cur.lastrowid or 0)
            audit.record(lake, "data_request_filed", f"request {rid} filed: "
                         f"{evaluation.outcome}", actor=requester, via="console",
                         details={"request": rid, "purpose": request.purpose,
                                  "columns": declared, "undeclared_names": undeclared,
                                  "sources": [s for s in request.sources if s in sources],
                                  "outcome": evaluation.outcome,
                                  "rules": sorted({f.rule for f in evaluation.findings}),
                                  "declarations": evaluation.declarations})
    finally:
        con.close()
    found = get(lake, rid)
    assert found is not None
    return found


def _stored(body: str) -> DataRequest:
    """A filed request as it was filed: not validated again (today's validators may be
    stricter than those it passed; a read must not fail, nor quote it in an error)."""
    fields = json.loads(body)
    for day in ("start", "end"):
        fields[day] = dt.date.fromisoformat(fields[day])
    return DataRequest.model_construct(**fields)


def _row(row: tuple[Any, ...]) -> Filed:
    return Filed(row[0], row[1], dt.datetime.fromisoformat(row[2]),
                 _stored(row[3]), json.loads(row[4]), row[5], row[6],
                 dt.datetime.fromisoformat(row[7]) if row[7] else None, row[8], row[9])


COLUMNS = ("id, requester, filed_at, body, evaluation, status, decided_by, decided_at, "
           "decision_reason, draft")


def get(lake: Lake, rid: int) -> Filed | None:
    if not path(lake).exists():
        return None
    con = _connect(lake)
    try:
        row = con.execute(f"SELECT {COLUMNS} FROM requests WHERE id = ?", (rid,)).fetchone()
        return None if row is None else _row(row)
    finally:
        con.close()


def waiting(lake: Lake) -> list[dt.datetime]:
    """When each request waiting for a steward was filed (for counts; nothing parsed)."""
    if not path(lake).exists():
        return []
    con = _connect(lake)
    try:
        return [dt.datetime.fromisoformat(r[0]) for r in con.execute(
            "SELECT filed_at FROM requests WHERE status = 'needs_steward'")]
    finally:
        con.close()


def listing(lake: Lake, requester: str | None = None) -> list[Filed]:
    """Every request (or one requester's): those waiting for a steward first, oldest
    (the most overdue) first, then the others, newest first."""
    if not path(lake).exists():
        return []
    con = _connect(lake)
    try:
        sql = f"SELECT {COLUMNS} FROM requests"
        order = (" ORDER BY status != 'needs_steward', CASE WHEN status = 'needs_steward' "
                 "THEN id ELSE -id END")
        rows = con.execute(sql + " WHERE requester = ?" + order, (requester,)) \
            if requester is not None else con.execute(sql + order)
        return [_row(r) for r in rows]
    finally:
        con.close()


def decide(lake: Lake, rid: int, steward: str, decision: str, reason: str,
           now: dt.datetime | None = None) -> Filed:
    """A steward approves or denies a request the policy left to a steward (audited);
    approval drafts its agreement."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if decision not in ("approved", "denied"):
        raise RequestError("the decision must be approved or denied")
    from ids_lakehouse.deid.scanner import identifiers_in_text, in_words

    reason = reason.strip()
    if not reason or len(reason) > 1000 or any(unicodedata.category(c) in ("Cc", "Cf")
                                               for c in reason):
        raise RequestError("the reason must be one line of at most 1,000 characters")
    if identifiers_in_text(reason):
        raise RequestError(f"the reason looks like it holds "
                           f"{in_words(identifiers_in_text(reason))}: it is kept in the "
                           "audit log, so describe without copying values")
    con = _connect(lake)
    try:
        with store.transaction(con):
            row = con.execute(f"SELECT {COLUMNS} FROM requests WHERE id = ?",
                              (rid,)).fetchone()
            if row is None:
                raise RequestError("no such request")
            filed = _row(row)
            if filed.status != "needs_steward":
                raise RequestError(f"this request is {STATUSES[filed.status]}: nothing to "
                                   "decide")
            if steward == filed.requester:
                raise RequestError("a steward cannot decide their own request")
            if decision == "approved" and filed.request.end < now.date():
                raise RequestError("the request's period has ended: deny it, or ask the "
                                   "requester to file it again")
            try:
                draft = draft_agreement(filed, steward, now.date()) \
                    if decision == "approved" else None
            except ValidationError as exc:
                raise RequestError("the drafted agreement would not load ("
                                   f"{exc.errors(include_input=False)[0]['msg']}): deny it, "
                                   "or ask the requester to file it again") from None
            audit.record(lake, "data_request_decided", f"request {rid} {decision}",
                         actor=steward, via="console",
                         details={"request": rid, "decision": decision, "reason": reason,
                                  "draft_sha256": hashlib.sha256(draft.encode()).hexdigest()
                                  if draft else None})
            con.execute("UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, "
                        "decision_reason = ?, draft = ? WHERE id = ?",
                        (decision, steward, now.isoformat(), reason, draft, rid))
    finally:
        con.close()
    found = get(lake, rid)
    assert found is not None
    return found


def draft_agreement(filed: Filed, steward: str, today: dt.date) -> str:
    """The agreement an approved request becomes, as a YAML file for data_model/agreements/
    (validated as one; the parties still sign it: `effective` is not before approval)."""
    from ids_lakehouse.agreements import Agreement
    from ids_lakehouse.deid.policy import load_policy

    r = filed.request
    sources = load_sources()
    policy = load_policy()
    slug = re.sub(r"[^a-z0-9]+", "-", r.title.lower()).strip("-")[:40] or "request"
    body: dict[str, Any] = {
        "id": f"dsa-request-{filed.id}-{slug}".rstrip("-"),
        "title": r.title,
        "data_owners": sorted({sources[s].data_owner for s in r.sources}),
        "recipient": {"organisation": r.recipient_organisation,
                      "contact": r.recipient_contact},
        "purpose": r.purpose,
        "legal_basis": r.legal_basis,
        "approver": steward,
        "approved_on": today,
        "effective": max(r.start, today),
        "expires": r.end,
        "min_cell_size": policy.min_cell_size,
        "k_anonymity": policy.k_anonymity,
        "permitted": {m: sorted(c) for m, c in sorted(r.columns.items())},
        "release": {m: sorted(c) for m, c in sorted(r.columns.items())},
        "sources": sorted(r.sources),
    }
    if r.purpose == "operations":
        body["population_sources"] = sorted(r.sources)
    Agreement.model_validate(body)       # a draft that would not load is never offered
    header = (f"# Drafted from data request {filed.id} (filed {filed.filed_at:%Y-%m-%d} by "
              f"{filed.requester}), approved by {steward} on {today.isoformat()}.\n"
              "# Review, have the parties sign, then add it to data_model/agreements/.\n")
    return header + yaml.dump(body, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)


class _PlainDumper(yaml.SafeDumper):
    """Like the hand-written agreements: no anchors and aliases for repeated values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
