"""What the console's pages show, read from the lake and the declarations (no web here).

Nothing here decides who may see what: web.py asks the session first. Functions that
return personal data say so (`records`, `quarantined_rows`); everything else returns ids,
counts, rules and declarations only."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ids_lakehouse import delta, storage
from ids_lakehouse.agreements import Agreement, load_agreements
from ids_lakehouse.config import Lake
from ids_lakehouse.identity import linkage, mpi
from ids_lakehouse.sources import load_sources
from ids_lakehouse.storage import LakePath

# ---------------------------------------------------------------- review queue

# The silver fields a steward compares for each comparison of the model.
COMPARED: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name",), "middle_initial": ("middle_name",),
    "last_name": ("last_name", "name_suffix"), "dob": ("dob",),
    "identifier": ("ssn", "national_id_type", "national_id"),
    "location": ("street", "city", "state", "zip", "phone"), "sex": ("sex",),
}
_WORDS = {"Exact match": "the same", "All other comparisons": "different",
          "Jaro-Winkler distance of {c} >= 0.92": "nearly the same (a typo)",
          "Jaro-Winkler distance of {c} >= 0.8": "similar",
          "Damerau-Levenshtein distance of dob_text <= 1": "one digit apart",
          "exact": "the same", "null": "missing on one side"}


@dataclass(frozen=True)
class Level:
    words: str               # the comparison level in words
    weight: float | None     # its match weight, log2(m/u); None: not estimated


@dataclass(frozen=True)
class Pair:
    key: str                 # opaque: pages name a pair by this, never by record ids
    left: str                # unique ids (source:record_id)
    right: str
    probability: float
    weight: float
    reason: str
    run_id: str
    levels: dict[str, Level] = field(default_factory=dict)


def pair_key(left: str, right: str) -> str:
    return hashlib.sha256(f"{left}\0{right}".encode()).hexdigest()[:20]


def _words(label: str, comparison: str) -> str:
    if label.endswith("is NULL"):
        return "missing on one side"
    if label.startswith("Exact match on"):
        return "the same"
    return _WORDS.get(label.replace(comparison, "{c}"), _WORDS.get(label, label))


@lru_cache(maxsize=8)
def _levels(model_file: Path, mtime: float) -> dict[str, dict[int, Level]]:
    settings = json.loads(model_file.read_text())
    out: dict[str, dict[int, Level]] = {}
    for comparison in settings["comparisons"]:
        name = comparison["output_column_name"]
        levels = comparison["comparison_levels"]
        not_null = [lv for lv in levels if not lv.get("is_null_level")]
        table = {linkage.NULL_LEVEL: Level("missing on one side", 0.0)}
        for i, lv in enumerate(not_null):
            m, u = lv.get("m_probability"), lv.get("u_probability")
            weight = math.log2(m / u) if m and u else None
            table[len(not_null) - 1 - i] = Level(_words(lv["label_for_charts"], name), weight)
        out[name] = table
    return out


def levels(lake: Lake) -> dict[str, dict[int, Level]]:
    """Comparison -> level (gamma) -> words and weight, from the latest saved model."""
    directory = mpi.models_dir(lake)
    version = linkage.latest_version(directory)
    if not version:
        return {}
    model_file = directory / f"linkage_model_v{version:04d}.json"
    return _levels(model_file, storage.mtime(model_file))


def _version(path: LakePath) -> int:
    return delta.table(path).version() if delta.exists(path) else -1


# The queue as last read, per lake: (the versions it was read at, the pairs).
_QUEUES: dict[LakePath, tuple[tuple[int, int, int], list[Pair]]] = {}


def review_queue(lake: Lake) -> list[Pair]:
    """Open pairs not yet decided, most uncertain (closest to 0.5) first. Read again only
    when the queue, the decisions or the model changed (1,898 pairs took ~60 ms to read
    and order at 100,000 people, on every page that names a pair)."""
    path = lake.identity("review_queue")
    if not delta.exists(path):
        return []
    versions = (_version(path), _version(lake.identity("steward_decisions")),
                linkage.latest_version(mpi.models_dir(lake)))
    cached = _QUEUES.get(lake.root)
    if cached is not None and cached[0] == versions:
        return cached[1]
    pairs = _read_queue(lake, path)
    _QUEUES[lake.root] = (versions, pairs)
    return pairs


def _read_queue(lake: Lake, path: LakePath) -> list[Pair]:
    queue = delta.frame(path).filter(pl.col("status") == "open")
    decided = mpi.steward_decisions(lake).select("unique_id_l", "unique_id_r")
    queue = queue.join(decided, on=["unique_id_l", "unique_id_r"], how="anti")
    queue = queue.sort((pl.col("match_probability") - 0.5).abs(), "unique_id_l",
                       "unique_id_r")
    words = levels(lake)
    out = []
    for row in queue.iter_rows(named=True):
        lv = {c: words.get(c, {}).get(row[f"gamma_{c}"], Level(str(row[f"gamma_{c}"]), None))
              for c in linkage.GAMMAS}
        out.append(Pair(pair_key(row["unique_id_l"], row["unique_id_r"]), row["unique_id_l"],
                        row["unique_id_r"], row["match_probability"], row["match_weight"],
                        row["reason"], row["run_id"], lv))
    return out


def find_pair(lake: Lake, key: str) -> Pair | None:
    return next((p for p in review_queue(lake) if p.key == key), None)


def records(lake: Lake, pair: Pair) -> dict[str, dict[str, str]]:
    """PERSONAL DATA: the compared silver fields of both records of a pair
    ({"left": {field: value}, "right": ...}); for a steward who chose to reveal them."""
    wanted = sorted({f for fs in COMPARED.values() for f in fs})
    out: dict[str, dict[str, str]] = {}
    for side, uid in (("left", pair.left), ("right", pair.right)):
        source, record_id = uid.split(":", 1)
        found = delta.frame(lake.silver("person_record"), columns=wanted,
                            filter=(pc.field("source") == source)
                            & (pc.field("source_record_id") == record_id))
        row = found.row(0, named=True) if found.height else {}
        out[side] = {f: "" if row.get(f) is None else str(row[f]) for f in wanted}
    return out


@dataclass(frozen=True)
class Decision:
    left: str
    right: str
    decision: str
    steward: str
    reason: str
    decided_at: dt.datetime
    applied: bool            # an identity build ran after it
    same_person: bool | None  # what the index says now (None: a record is not in it)


def identity_built_at(lake: Lake) -> dt.datetime | None:
    """When the master person index was last written."""
    path = lake.identity("person_xref")
    if not delta.exists(path):
        return None
    stamp = delta.table(path).history(1)[0]["timestamp"]
    return dt.datetime.fromtimestamp(stamp / 1000, dt.timezone.utc)


def decisions(lake: Lake, limit: int = 200) -> list[Decision]:
    """The latest decision per pair, newest first, with whether the current index honoured
    it: it was in the decisions the build read (its person_xref commit says which version;
    an index from before builds said so is judged by time)."""
    d = mpi.steward_decisions(lake).sort("decided_at", descending=True).head(limit)
    honoured = mpi.applied_decisions_version(lake)
    seen: set[tuple[str, str, Any]] = set()
    if honoured is not None:
        seen = {tuple(r) for r in mpi.steward_decisions(lake, honoured).select(
            "unique_id_l", "unique_id_r", "decided_at").iter_rows()}
    built = identity_built_at(lake)
    ids = pl.concat([d["unique_id_l"], d["unique_id_r"]]).unique().to_list()
    xref: dict[str, str] = {}
    if ids and delta.exists(lake.identity("person_xref")):
        found = delta.frame(lake.identity("person_xref"), columns=["unique_id", "person_id"],
                            filter=pc.field("unique_id").isin(ids))
        xref = dict(found.iter_rows())
    out = []
    for r in d.iter_rows(named=True):
        a, b = xref.get(r["unique_id_l"]), xref.get(r["unique_id_r"])
        applied = ((r["unique_id_l"], r["unique_id_r"], r["decided_at"]) in seen
                   if honoured is not None
                   else built is not None and built > r["decided_at"])
        out.append(Decision(r["unique_id_l"], r["unique_id_r"], r["decision"], r["steward"],
                            r["reason"], r["decided_at"], applied,
                            None if a is None or b is None else a == b))
    return out


# ---------------------------------------------------------------- quarantine

@dataclass(frozen=True)
class Delivery:
    source: str
    file: str
    sha256: str
    landed_at: dt.datetime
    status: str               # accepted | rejected
    rule: str | None          # why a rejected delivery was rejected
    reason: str | None
    rows_read: int
    rows_written: int
    rows_quarantined: int
    by_rule: list[tuple[str, str, str, int]]   # (stage, rule, column, rows) in quarantine


def deliveries(lake: Lake, since: dt.datetime | None = None, *, rules: bool = True,
               sha256: str | None = None) -> list[Delivery]:
    """Every delivery (newest first; or one, by `sha256`). With `rules`, its rows in
    quarantine now, counted by stage, rule and column (no value): ingest's and conform's;
    `rows_quarantined` is then their total (the ledger counts ingest's only)."""
    ledger_path = lake.bronze("_deliveries")
    if not delta.exists(ledger_path):
        return []
    ledger = delta.frame(ledger_path).sort("landed_at", descending=True)
    if since is not None:
        ledger = ledger.filter(pl.col("landed_at") >= since)
    if sha256 is not None:
        ledger = ledger.filter(pl.col("file_sha256") == sha256)
    counts: dict[tuple[str, str], list[tuple[str, str, str, int]]] = {}
    for source in ledger["source"].unique().to_list() if rules else []:
        path = lake.quarantine(source)
        if not delta.exists(path):
            continue
        q = delta.frame(path, columns=["_file_sha256", "_stage", "_rule", "_column"],
                        filter=None if sha256 is None else pc.field("_file_sha256") == sha256)
        q = q.group_by("_file_sha256", "_stage", "_rule", "_column").len().sort(
            "len", descending=True)
        for sha, stage, rule, column, n in q.iter_rows():
            counts.setdefault((source, sha), []).append((stage or "", rule or "",
                                                         column or "", n))
    out = []
    for r in ledger.iter_rows(named=True):
        by_rule = counts.get((r["source"], r["file_sha256"]), [])
        out.append(Delivery(r["source"], r["file"], r["file_sha256"], r["landed_at"],
                            r["status"], r["rule"], r["reason"], r["rows_read"] or 0,
                            r["rows_written"] or 0,
                            sum(n for *_, n in by_rule) if by_rule
                            else r["rows_quarantined"] or 0, by_rule))
    return out


def quarantine_by_day(found: list[Delivery], days: int = 30
                      ) -> list[tuple[dt.date, str, int]]:
    """(day, source, rows in quarantine) per landing day and source, over the last `days`
    days of `found` (from `deliveries`)."""
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    total: dict[tuple[dt.date, str], int] = {}
    for d in found:
        if d.landed_at >= since and d.rows_quarantined:
            key = (d.landed_at.date(), d.source)
            total[key] = total.get(key, 0) + d.rows_quarantined
    return sorted((day, source, n) for (day, source), n in total.items())


MAX_ROWS_SHOWN = 500
MAX_RAW_CHARS = 2_000     # of one delivered row: a hostile file's megabyte rows stay small


@dataclass(frozen=True)
class QuarantinedRows:
    by_stage: dict[str, int]          # rows of the delivery in quarantine now, per stage
    rows: list[dict[str, Any]]        # PERSONAL DATA: the first MAX_ROWS_SHOWN
    truncated: int                    # delivered rows cut to MAX_RAW_CHARS


def quarantined_rows(lake: Lake, source: str, sha256: str) -> QuarantinedRows:
    """PERSONAL DATA: a delivery's quarantined rows in stage and row order, each delivered
    row (`_raw`) cut to MAX_RAW_CHARS characters; for stewards."""
    if source not in load_sources() or not delta.exists(lake.quarantine(source)):
        return QuarantinedRows({}, [], 0)
    q = delta.frame(lake.quarantine(source),
                    columns=["_row_number", "_stage", "_rule", "_column", "_reason", "_raw"],
                    filter=pc.field("_file_sha256") == sha256)
    by_stage = dict(q.group_by("_stage").len().sort("_stage").iter_rows())
    shown = q.sort("_stage", "_row_number", nulls_last=True).head(MAX_ROWS_SHOWN)
    long = shown["_raw"].str.len_chars() > MAX_RAW_CHARS
    shown = shown.with_columns(pl.col("_raw").str.slice(0, MAX_RAW_CHARS),
                               long.alias("_truncated"))
    return QuarantinedRows({str(k): int(v) for k, v in by_stage.items()}, shown.to_dicts(),
                           int(long.sum()))


# ---------------------------------------------------------------- releases ledger

@dataclass(frozen=True)
class ReleaseFile:
    name: str
    mart: str
    rows: int
    sha256: str
    columns: list[str]


@dataclass(frozen=True)
class Release:
    agreement: Agreement
    version: str
    created_at: str
    run_id: str
    files: list[ReleaseFile]
    inputs: dict[str, dict[str, Any]]
    min_cell_size: int | None


@dataclass(frozen=True)
class LedgerEvent:
    at: dt.datetime
    kind: str
    actor: str
    message: str
    agreement: str | None
    table: str | None       # "name vN" when a table of a release was read
    rows: int | None


def releases(lake: Lake, columns: bool = True) -> list[Release]:
    """Every release of every agreement, newest first, from its manifest; with `columns`,
    the released columns are read from each file's own schema (what left, not what was
    meant to)."""
    out = []
    for agreement in load_agreements().values():
        root = storage.local_only(lake.releases(agreement.id, agreement.purpose),
                                  "The steward console")
        for manifest_path in sorted(root.glob("v*/manifest.json")):
            m = json.loads(manifest_path.read_text())
            files = [ReleaseFile(f["name"], f.get("mart", ""), f["rows"], f["sha256"],
                                 _columns(manifest_path.parent / f["name"]) if columns
                                 else [])
                     for f in m["files"]]
            out.append(Release(agreement, m["version"], m["created_at"], m.get("run_id", ""),
                               files, m.get("inputs", {}), m.get("min_cell_size")))
    return sorted(out, key=lambda r: r.created_at, reverse=True)


def _columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError):
        return []


LEDGER_KINDS = ("release_created", "release_refused", "sharing_request", "sharing_refused",
                "sharing_token_issued", "sharing_token_revoked")


LEDGER_DAYS = 90


def ledger_events(lake: Lake, kinds: tuple[str, ...] = LEDGER_KINDS, limit: int = 500
                  ) -> list[LedgerEvent]:
    """Audit events of the last LEDGER_DAYS days about releases and who fetched what
    (newest first; the time filter lets older files of the log be skipped). Sharing
    requests that touched no table (listing shares) are left out unless refused."""
    if not delta.exists(lake.audit()):
        return []
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=LEDGER_DAYS)
    events = pl.from_arrow(delta.read(
        lake.audit(), columns=["recorded_at", "kind", "actor", "message", "details"],
        filter=pc.field("kind").isin(list(kinds)) & (pc.field("recorded_at") >= since)))
    assert isinstance(events, pl.DataFrame)
    events = events.sort("recorded_at", descending=True)
    out = []
    for r in events.iter_rows(named=True):
        details = json.loads(r["details"] or "{}")
        if r["kind"] == "sharing_request" and not {"table", "query", "outcomes"} & set(details):
            continue
        if r["kind"] == "sharing_refused" and details.get("endpoint") == "unrouted":
            continue        # a browser's or a scanner's stray path, not a release event
        table = f"{details['table']} v{details.get('version')}" if details.get("table") \
            else None
        out.append(LedgerEvent(r["recorded_at"], r["kind"], r["actor"], r["message"],
                               details.get("agreement"), table, details.get("rows")))
        if len(out) >= limit:
            break
    return out
