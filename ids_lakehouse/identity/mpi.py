"""The master person index: link silver person records into people with stable IDs.

Tables under LAKE_ROOT/identity/: person_link (scored pairs above the floor),
person_xref (record -> person_id), person_id_events (created / merged / split),
review_queue (pairs awaiting a steward, with the reason), person_index (every ID ever minted) and
steward_decisions (kept and honoured on every run). Model versions live in
LAKE_ROOT/models/linkage/ as JSON."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl
from deltalake import write_deltalake

from ids_lakehouse import crash, delta, locks
from ids_lakehouse.config import Lake
from ids_lakehouse.identity import clustering, linkage
from ids_lakehouse.identity.stable_ids import INDEX_SCHEMA, XREF_SCHEMA, ColumnTypes, assign
from ids_lakehouse.storage import LakePath

DECISION_SCHEMA: ColumnTypes = {"unique_id_l": pl.String, "unique_id_r": pl.String,
                                "decision": pl.String, "steward": pl.String,
                                "reason": pl.String, "decided_at": pl.Datetime("us", "UTC")}
DECISIONS = ("match", "non_match")   # what a steward decides on a pair


# A build without a model (none saved, the records cannot train one): model_version
# NO_MODEL, mode UNLINKED, no pair scored, each record its own person.
NO_MODEL = 0
UNLINKED = "unlinked"


@dataclass
class IdentityResult:
    model_version: int
    trained: bool
    mode: str               # full | incremental | UNLINKED (no model: `untrained` says why)
    rescored: int           # records whose pairs were scored in this run
    records: int
    people: int
    links: int
    events: dict[str, int]
    review_pairs: int
    tables: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)
    rolled_back: dict[str, int] = field(default_factory=dict)   # left by a dead build
    decisions_version: int = -1     # the steward_decisions version this build honoured
    untrained: str | None = None    # why no model exists yet (mode UNLINKED), else None


# Every table of the identity layer: what the nightly build writes, and what stewards do.
TABLES = {
    "person_link": "Scored record pairs at or above the link floor (ids, probability, "
                   "weight, comparison levels; no compared values).",
    "person_xref": "Every silver person record -> its stable person_id, with its best "
                   "in-cluster match probability, run and model version.",
    "person_id_events": "Append-only: person IDs created, merged (older ID survives) or "
                        "split (larger part keeps the ID), with run.",
    "review_queue": "Pairs awaiting a steward decision, each with why: the uncertainty band, "
                    "a guard (twins, dates of birth), or clustering holding it back.",
    "person_index": "The master person index: every person ID ever minted, and when and in "
                    "which run.",
}
STEWARD_TABLE = ("steward_decisions", "Steward decisions on pairs (match or non-match; who, "
                 "when, why), written by `ids-lakehouse steward` and honoured by every "
                 "build.")


def models_dir(lake: Lake) -> LakePath:
    return lake.models("linkage")


def spill_dir(lake: Lake) -> Path:
    """Where the linkage engine may spill to disk (record comparisons: inside the lake)."""
    return lake.spill()


def _read(path: LakePath, schema: ColumnTypes, version: int | None = None) -> pl.DataFrame:
    if not delta.exists(path) or (version is not None and version < 0):
        return pl.DataFrame(schema=schema)
    return delta.frame(path, columns=list(schema), version=version).cast(pl.Schema(schema))


def decisions_version(lake: Lake) -> int:
    """The steward_decisions table's current Delta version (-1 before any decision)."""
    path = lake.identity("steward_decisions")
    return delta.table(path).version() if delta.exists(path) else -1


def applied_decisions_version(lake: Lake) -> int | None:
    """The steward_decisions version the current index was built with (each build says
    so in its person_xref commit); None without an index, or for an index built before
    builds said so."""
    path = lake.identity("person_xref")
    if not delta.exists(path):
        return None
    found = delta.table(path).history(1)[0].get("ids_decisions_version")
    return int(found) if found is not None else None


def steward_decisions(lake: Lake, version: int | None = None) -> pl.DataFrame:
    """The latest decision per pair (as of `version` of the table, by default now)."""
    d = _read(lake.identity("steward_decisions"), DECISION_SCHEMA, version)
    return (d.with_columns(pl.min_horizontal("unique_id_l", "unique_id_r").alias("a"),
                           pl.max_horizontal("unique_id_l", "unique_id_r").alias("b"))
            .sort("decided_at").unique(["a", "b"], keep="last")
            .drop("unique_id_l", "unique_id_r")
            .rename({"a": "unique_id_l", "b": "unique_id_r"}))


class DecisionError(ValueError):
    """A steward decision that cannot be recorded. The message is one line, names the bad
    argument and holds no personal data (it may quote a unique_id)."""


STEWARD_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
UNIQUE_ID = re.compile(r"[^\s:]+:.*\S.*")      # source:record_id
MAX_REASON = 1000
MAX_UNIQUE_ID = 200


def check_free_text(flag: str, text: str) -> None:
    """Free text about people goes to the audit log: what looks like an identifier, a
    date or a long number in it is refused (DecisionError names the kinds, not the text)."""
    from ids_lakehouse.deid.scanner import identifiers_in_text, in_words

    found = identifiers_in_text(text)
    if found:
        raise DecisionError(f"{flag} looks like it holds {in_words(found)}: describe the "
                            "evidence without copying values (it is kept in the audit log)")


def _check_decision_fields(left: str, right: str, decision: str, steward: str,
                           reason: str, typed: bool = True) -> None:
    """What a decision must satisfy on its own, without looking at the lake. `typed`: the
    record ids were typed by a person (the CLI), not taken from the index (the console),
    so they must also be printable."""
    for flag, value in (("--left", left), ("--right", right), ("--steward", steward),
                        ("--reason", reason)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DecisionError(f"{flag} is not valid UTF-8 text") from None
        if flag in ("--steward", "--reason") and value.strip() and \
                any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
            raise DecisionError(f"{flag} holds control characters (line breaks, escapes); "
                                "write it on one line of plain text")
    if decision not in DECISIONS:
        raise DecisionError(f"decision must be one of {', '.join(DECISIONS)}")
    if len(steward) > 254 or not STEWARD_EMAIL.fullmatch(steward):
        raise DecisionError("--steward must be the steward's e-mail address "
                            "(name@domain.tld, no spaces)")
    if not reason.strip():
        raise DecisionError("--reason is empty; say why the records are (not) the same "
                            "person")
    if len(reason) > MAX_REASON:
        raise DecisionError(f"--reason is {len(reason):,} characters; keep it to "
                            f"{MAX_REASON:,} at most")
    for flag, uid in (("--left", left), ("--right", right)):
        if len(uid) > MAX_UNIQUE_ID or (typed and not uid.isprintable()) or \
                not UNIQUE_ID.fullmatch(uid):
            raise DecisionError(f"{flag} is not a unique_id of the form source:record_id")
    check_free_text("--reason", reason)
    if left == right:
        raise DecisionError("--left and --right are the same record; a decision needs two "
                            "different records")


def validate_decision(lake: Lake, left: str, right: str, decision: str, steward: str,
                      reason: str, typed: bool = True) -> None:
    """Raise DecisionError unless the decision can be recorded: well-formed arguments,
    a lake that exists, a built identity index, and both records in it."""
    _check_decision_fields(left, right, decision, steward, reason, typed)
    if not lake.root.is_dir():
        raise DecisionError(f"no lake at {lake.root}: set LAKE_ROOT to an existing lake")
    xref = lake.identity("person_xref")
    if not delta.exists(xref):
        raise DecisionError("the identity index is not built yet (no person_xref table): "
                            "run the identity asset first")
    import pyarrow.compute as pc

    known = set(delta.read(xref, columns=["unique_id"],
                           filter=pc.field("unique_id").isin([left, right]))
                .column("unique_id").to_pylist())
    for flag, uid in (("--left", left), ("--right", right)):
        if uid not in known:
            raise DecisionError(f"{flag} {uid} is not in the person index")


def record_decision(lake: Lake, left: str, right: str, decision: str, steward: str,
                    reason: str, *, check_index: bool = False, typed: bool = True) -> None:
    """Append a steward decision on the pair (left, right). Raises DecisionError, and
    records nothing, when the decision is malformed; with check_index (as the steward CLI
    does) also when the lake, its identity index or either record is missing."""
    if check_index:
        validate_decision(lake, left, right, decision, steward, reason, typed)
    else:
        _check_decision_fields(left, right, decision, steward, reason, typed)
    row = pl.DataFrame([{"unique_id_l": left, "unique_id_r": right, "decision": decision,
                         "steward": steward, "reason": reason,
                         "decided_at": dt.datetime.now(dt.timezone.utc)}],
                       schema=DECISION_SCHEMA)
    write_deltalake(str(lake.identity("steward_decisions")), row.to_arrow(), mode="append")


def decide(lake: Lake, left: str, right: str, decision: str, steward: str, reason: str,
           via: str, typed: bool = True) -> None:
    """A steward's decision on a pair, as the CLI and the console take it: validated
    against the index (DecisionError), audited, then recorded; honoured from the next
    identity build. The audit event comes first: a process killed between the two leaves
    an audited decision to re-enter, never an unaudited one in force."""
    from ids_lakehouse import audit, zones

    validate_decision(lake, left, right, decision, steward, reason, typed)
    zones.prepare(lake.root)
    audit.record(lake, "steward_decision", f"{decision}: {left} / {right}", actor=steward,
                 via=via, details={"left": left, "right": right, "decision": decision,
                                   "reason": reason})
    crash.point("steward.after_audit")
    record_decision(lake, left, right, decision, steward, reason, typed=typed)


@dataclass(frozen=True)
class Model:
    settings: linkage.Model
    tf: dict[str, pl.DataFrame]
    version: int
    trained_now: bool


def model_for(lake: Lake, records: pl.DataFrame, retrain: bool) -> Model | str:
    """The saved model, or a newly trained one when asked, when none exists yet, or when
    the saved one was trained on other comparisons than this code defines (the review
    guards read its levels by number; every pair is then scored again).

    When no model exists yet and the records cannot train one (linkage.untrainable: a
    first agency delivering each person once, a handful of records), the reason: there is
    nothing to link by, and the next run tries again. Asked to retrain, or to replace a
    model of another design, on such records, or when the model the index was built with
    is missing, linkage.NotEnoughToTrain is raised: the links a model made are not
    dropped."""
    saved = linkage.load_model(models_dir(lake))
    if not retrain and saved is not None and \
            linkage.design(saved[0]) == linkage.current_design():
        return Model(*saved, trained_now=False)
    try:
        settings, tf = linkage.train(records, spill=spill_dir(lake))
    except linkage.NotEnoughToTrain as exc:
        if saved is not None:
            raise
        built_with = _index_model_versions(lake) - {NO_MODEL}
        if built_with:
            # The index was linked by a model that is gone: unlinked now, it would split
            # every linked person (a tester deleted models/linkage).
            raise linkage.NotEnoughToTrain(
                f"the index was built with linkage model v{max(built_with)}, which is "
                f"missing from {models_dir(lake)}: restore it (a new one cannot be "
                f"trained: {exc.reason})", exc.reason) from None
        return exc.reason
    return Model(settings, tf, linkage.save_model(settings, tf, models_dir(lake)), True)


def _index_model_versions(lake: Lake) -> set[int]:
    """The model versions the current person_xref was built with (none: no index)."""
    path = lake.identity("person_xref")
    if not delta.exists(path):
        return set()
    return set(delta.frame(path, columns=["model_version"])["model_version"].unique())


def _prior_hashes(lake: Lake, version: int) -> pl.DataFrame | None:
    """unique_id and record_hash of the previous index, when it was built with model
    `version` and its pairs are kept; None means every pair must be scored."""
    xref_path, link_path = lake.identity("person_xref"), lake.identity("person_link")
    if not delta.exists(xref_path) or not delta.exists(link_path) or \
            "record_hash" not in delta.table(xref_path).schema().to_arrow().names:
        return None
    prior = delta.frame(xref_path, columns=["unique_id", "record_hash", "model_version"])
    if prior.height == 0 or set(prior["model_version"].unique()) != {version}:
        return None
    return prior.drop("model_version")


def score(lake: Lake, records: pl.DataFrame, current: pl.DataFrame, model: Model,
          full: bool) -> tuple[pl.DataFrame, str, int]:
    """Scored pairs for this run. Incremental when the previous index was built with the
    same model: only new or changed records (by `current`'s record_hash) are scored
    (against everyone), and the previous pairs among unchanged records are kept; otherwise
    every pair is scored."""
    spill = spill_dir(lake)
    prior = None if full else _prior_hashes(lake, model.version)
    if prior is None:
        return (linkage.predict(records, model.settings, model.tf, spill=spill), "full",
                records.height)
    changed = current.join(prior, on=["unique_id", "record_hash"], how="anti")["unique_id"]
    removed = prior.join(current, on="unique_id", how="anti")["unique_id"]
    dirty = pl.concat([changed, removed]).implode()
    kept = (delta.frame(lake.identity("person_link"))
            .filter(~pl.col("unique_id_l").is_in(dirty) & ~pl.col("unique_id_r").is_in(dirty)))
    fresh = (linkage.predict_changed(records, changed, model.settings, model.tf,
                                     spill=spill) if changed.len() else None)
    columns = fresh.columns if fresh is not None else [
        c for c in kept.columns if c not in ("run_id", "model_version")]
    pairs = kept.select(columns) if fresh is None else pl.concat(
        [kept.select(columns).cast(fresh.schema), fresh])
    return pairs, "incremental", changed.len()


def held_apart(pairs: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Pairs clustering must not join (unique_id_l, unique_id_r, reason), a row per
    reason: a steward's non_match, a guard that says the two are two people, surnames
    that disagree (binding only through a record without a surname). Every reason is
    kept: a twins-guard reason binds only through a record without a first name, so it
    cannot stand for a steward's non_match, nor for the surnames' reason."""
    masks = linkage.guard_masks(pairs)
    guarded = pl.concat([pairs.filter(masks[reason]).select(
        "unique_id_l", "unique_id_r", pl.lit(reason).alias("reason"))
        for reason in linkage.HELD_APART])
    surnames = pairs.filter(
        (pl.col("gamma_last_name") == linkage.LAST_NAME_DISAGREES)
        & ~pl.col("gamma_identifier").is_in([linkage.IDENTIFIER_EXACT,
                                             linkage.IDENTIFIER_ONE_EDIT_APART])).select(
        "unique_id_l", "unique_id_r", pl.lit(linkage.SURNAMES_DISAGREE).alias("reason"))
    stewards = decisions.filter(pl.col("decision") == "non_match").select(
        "unique_id_l", "unique_id_r", pl.lit(clustering.DECIDED_APART).alias("reason"))
    return pl.concat([stewards, guarded, surnames])


def build(lake: Lake, person_record: pl.DataFrame, run_id: str, *, retrain: bool = False,
          full: bool = False,
          review_band: tuple[float, float] = (linkage.LINK_FLOOR, linkage.MATCH_THRESHOLD),
          ) -> IdentityResult:
    rolled_back = discard_uncommitted(lake)
    now = dt.datetime.now(dt.timezone.utc)
    records = linkage.linkage_input(person_record)
    model = model_for(lake, records, retrain)
    hashes = records.select("unique_id", "source_dataset").with_columns(
        linkage.fingerprint(records))
    if isinstance(model, str):      # no model yet, none trainable: each record alone
        version, trained, untrained = NO_MODEL, False, model
        pairs, mode, rescored = pl.DataFrame(schema=linkage.PAIR_SCHEMA), UNLINKED, 0
    else:
        version, trained, untrained = model.version, model.trained_now, None
        pairs, mode, rescored = score(lake, records,
                                      hashes.select("unique_id", "record_hash"), model,
                                      full or trained)
    # The decisions as of one version, said in the person_xref commit: a decision recorded
    # while this build runs is left for the next one, and known to be.
    honoured = decisions_version(lake)
    decisions = steward_decisions(lake, honoured)
    linked = linkage.auto_link(pairs)
    prior_xref = _read(lake.identity("person_xref"), XREF_SCHEMA)
    prior_index = _read(lake.identity("person_index"), INDEX_SCHEMA)
    apart = held_apart(pairs, decisions)
    grouped = clustering.cluster(
        records["unique_id"], pairs.filter(linked).with_columns(
            (pl.col("gamma_identifier") == linkage.IDENTIFIER_EXACT).alias("strong"),
            (pl.col("gamma_first_name") == linkage.NULL_LEVEL).alias("nameless"),
            (pl.col("gamma_last_name") == linkage.NULL_LEVEL).alias("surnameless")),
        decisions.filter(pl.col("decision") == "match"), apart, prior_xref)
    result = assign(grouped.clusters, prior_xref, prior_index, run_id, now)

    best = (pairs.join(result.xref, left_on="unique_id_l", right_on="unique_id")
            .join(result.xref, left_on="unique_id_r", right_on="unique_id", suffix="_r")
            .filter(pl.col("person_id") == pl.col("person_id_r")))
    best_prob = pl.concat([best.select(pl.col("unique_id_l").alias("unique_id"),
                                       "match_probability"),
                           best.select(pl.col("unique_id_r").alias("unique_id"),
                                       "match_probability")]) \
        .group_by("unique_id").agg(pl.col("match_probability").max())
    xref = (result.xref.join(best_prob, on="unique_id", how="left")
            .join(hashes, on="unique_id")
            .with_columns(pl.col("unique_id").str.splitn(":", 2).struct.field("field_1")
                          .alias("source_record_id"),
                          pl.lit(run_id).alias("run_id"), pl.lit(version).alias("model_version"))
            .rename({"source_dataset": "source"})
            .select("source", "source_record_id", "unique_id", "person_id",
                    "match_probability", "record_hash", "run_id", "model_version"))
    decided = decisions.select("unique_id_l", "unique_id_r")
    low, high = review_band
    in_band = (pl.col("match_probability") >= low) & (pl.col("match_probability") < high)
    # Why each pair waits for a steward: the uncertainty band, a guard, or clustering
    # leaving it out (it would join records that conflict or established people).
    why = (pairs.with_columns(linkage.held_for_review(pairs).alias("reason"))
           .join(grouped.held_back.rename({"reason": "_held"}),
                 on=["unique_id_l", "unique_id_r"], how="left")
           .with_columns(pl.when(in_band).then(pl.lit("in the uncertainty band"))
                         .otherwise(pl.coalesce("_held", "reason")).alias("reason"))
           .drop("_held"))
    review = (why.filter(pl.col("reason").is_not_null())
              .join(decided, on=["unique_id_l", "unique_id_r"], how="anti")
              .with_columns(pl.lit(run_id).alias("run_id"), pl.lit("open").alias("status")))
    links = pairs.filter(pl.col("match_probability") >= linkage.LINK_FLOOR).sort(
        ["unique_id_l", "unique_id_r"]).with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(version).alias("model_version"))
    events = result.events.with_columns(pl.lit(run_id).alias("run_id"),
                                        pl.lit(now).alias("recorded_at"))
    tables = {"person_link": links, "person_xref": xref, "review_queue": review,
              "person_index": result.index, "person_id_events": events}
    return IdentityResult(
        model_version=version, trained=trained, mode=mode, rescored=rescored,
        records=records.height,
        people=xref["person_id"].n_unique(), links=links.height,
        events=dict(events.group_by("event").len().iter_rows()), review_pairs=review.height,
        tables=tables, rolled_back=rolled_back, decisions_version=honoured,
        untrained=untrained)


def update(lake: Lake, person_record: pl.DataFrame, run_id: str, *, retrain: bool = False,
           full: bool = False) -> IdentityResult:
    """Build and write the index: the identity layer's one entry point. One build at a time
    on a lake (a second waits for the first), so two runs never mint IDs from the same
    prior index."""
    with locks.exclusive(lake, "identity"):
        result = build(lake, person_record, run_id, retrain=retrain, full=full)
        write(lake, result, run_id)
    return result


# person_xref is written last: its commit is what makes a build the current one. Rows a
# build wrote before dying (index entries, events) are rolled back by the next build.
WRITE_ORDER = ("person_link", "review_queue", "person_index", "person_id_events",
               "person_xref")


def write(lake: Lake, result: IdentityResult, run_id: str) -> None:
    """Replace the current tables (Delta keeps every earlier version); append events."""
    from deltalake import CommitProperties

    for name in WRITE_ORDER:
        frame = result.tables[name]
        mode: Literal["append", "overwrite"] = (
            "append" if name == "person_id_events" else "overwrite")
        if mode == "append" and frame.height == 0:
            continue
        if name == "person_xref":
            crash.point("identity.before_xref")
        write_deltalake(str(lake.identity(name)), frame.to_arrow(), mode=mode,
                        schema_mode="merge" if mode == "append" else "overwrite",
                        commit_properties=CommitProperties(custom_metadata={
                            "ids_run_id": run_id,
                            "ids_decisions_version": str(result.decisions_version)}))


def discard_uncommitted(lake: Lake) -> dict[str, int]:
    """Roll back what a build that died before committing person_xref left behind: ID
    events and index entries written after the last person_xref commit. (Identity builds
    never overlap: the downstream run limit serialises them.)"""
    xref = lake.identity("person_xref")
    cutoff = None
    if delta.exists(xref):
        last = delta.table(xref).history(limit=1)[0]
        cutoff = dt.datetime.fromtimestamp(last["timestamp"] / 1000, dt.timezone.utc)
    removed = {}
    for name, column in (("person_id_events", "recorded_at"), ("person_index", "minted_at")):
        path = lake.identity(name)
        if not delta.exists(path):
            continue
        where = None if cutoff is None else \
            f"{column} > '{cutoff.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
        metrics = delta.table(path).delete(where)
        removed[name] = metrics.get("num_deleted_rows", 0)
    return {k: v for k, v in removed.items() if v}
