"""Gated releases: what is handed to whom, under which agreement.

A release writes `LAKE_ROOT/<zone>/releases/<agreement>/<version>/` (the zone by purpose)
with one Parquet file per mart and a manifest (files, rows, SHA-256, the Delta version of
every input, the agreement and the fingerprint of the declaration applied, the time). The
gate refuses — with every reason, audited, nothing written — when the agreement is not in
force, the release asks for a mart or field the agreement does not permit (or that does
not exist), a blocking check upstream has not passed, or a row would derive from a source
outside the agreement (see docs/adr/0002). A research release is built from the
agreement's sources alone, with pseudonyms re-keyed per agreement so recipients cannot
join files. A release can be rebuilt byte for byte from its manifest (Delta time
travel)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from ids_lakehouse import audit, crash, delta, locks, storage, zones
from ids_lakehouse.agreements import Agreement, fingerprint
from ids_lakehouse.config import Lake, pseudonym_key
from ids_lakehouse.deid import holdback, kanon
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.deid.pseudonym import derive_key, pseudonymise
from ids_lakehouse.marts import contacts, people, research
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.storage import LakePath, ObjectPath

MANIFEST = "manifest.json"
VERSION_NAME = re.compile(r"v[0-9]{1,9}")


@dataclass(frozen=True)
class Refusal:
    rule: str
    reason: str


class ReleaseRefused(RuntimeError):
    def __init__(self, agreement_id: str, refusals: list[Refusal]):
        self.agreement_id, self.refusals = agreement_id, refusals
        reasons = "; ".join(f"{r.rule}: {r.reason}" for r in refusals)
        super().__init__(f"release under {agreement_id} refused: {reasons}")


def gate(agreement: Agreement, lake: Lake, today: dt.date,
         check_status: dict[str, dict[str, bool | None]]) -> list[Refusal]:
    """Every reason to refuse. `check_status`: mart -> {blocking check: passed, or None if
    it never ran}."""
    refusals = []
    if today < agreement.effective:
        refusals.append(Refusal("not_yet_effective", f"the agreement takes effect on "
                                f"{agreement.effective}; today is {today}"))
    if today > agreement.expires:
        refusals.append(Refusal("expired", f"the agreement expired on {agreement.expires}; "
                                f"today is {today}"))
    for mart, fields in agreement.release.items():
        if mart not in agreement.permitted:
            refusals.append(Refusal("mart_not_permitted", f"{mart} is not permitted"))
            continue
        extra = sorted(set(fields) - set(agreement.permitted[mart]))
        if extra:
            refusals.append(Refusal("field_not_permitted", f"{mart}: {extra} not permitted"))
        if not delta.exists(lake.gold(mart)):
            refusals.append(Refusal("mart_missing", f"{mart} has not been published"))
            continue
        columns = delta.table(lake.gold(mart)).schema().to_arrow().names
        unknown = sorted(set(fields) - set(columns))
        if unknown:
            refusals.append(Refusal("unknown_field", f"{mart} has no fields {unknown}"))
        for check, passed in check_status.get(mart, {}).items():
            if passed is not True:
                state = "never ran" if passed is None else "failed"
                refusals.append(Refusal("upstream_check", f"{mart}:{check} {state}"))
    return refusals


PROVENANCE = "_sources"         # per released row: the sources it derives from (not released)
# What a research release is built from (silver and identity at recorded Delta versions).
RESEARCH_INPUTS = {"person_record": ("silver", "person_record"),
                   "enrollment": ("silver", "enrollment"),
                   "person_xref": ("identity", "person_xref")}


def inputs(agreement: Agreement) -> dict[str, tuple[str, str]]:
    """name -> (layer, table) of everything a release under `agreement` reads."""
    if agreement.purpose == "research":
        return dict(RESEARCH_INPUTS)
    return {m: ("gold", m) for m in agreement.release}


def current_versions(lake: Lake, agreement: Agreement) -> dict[str, int]:
    """The current Delta version of each input of a release under `agreement`."""
    from ids_lakehouse.conform import state

    return {name: state.version(lake, t[1]) if t[0] == "silver" else
            delta.table(lake.table(*t)).version() for name, t in inputs(agreement).items()}


def program_sources() -> dict[str, str]:
    """Program -> the source that delivers it, from the column lineage of the declared
    mappings (enrollment.program is a constant per source); the McKinney-Vento program is
    derived from K-12 enrollment."""
    from ids_lakehouse.sources import load_sources

    out = {}
    for source, defn in load_sources().items():
        program = (defn.mapping.get("enrollment") or {}).get("program")
        if program is not None and program.value is not None:
            out[program.value] = source
            if program.value == "K12":
                out[people.HOMELESS_STUDENTS] = source
    return out


def _party_research(lake: Lake, agreement: Agreement, versions: dict[str, int]
                    ) -> dict[str, pl.DataFrame]:
    """The research file of this agreement, built from its sources alone: its people are
    those known to one of them, their attributes and participation come from those
    sources' records only, then the file is made k-anonymous as the gold one is. Who is in
    it therefore reveals nothing about an agency that is not a party."""
    from ids_lakehouse.conform import state
    from ids_lakehouse.model import load_model

    def read(name: str) -> pl.DataFrame:
        layer, table = RESEARCH_INPUTS[name]
        frame = state.read(lake, table, versions[name]) if layer == "silver" else \
            delta.frame(lake.table(layer, table), version=versions[name])
        return frame.filter(pl.col("source").is_in(agreement.sources))

    xref, records, enrollment = read("person_xref"), read("person_record"), read("enrollment")
    model, policy = load_model(), load_policy()
    persons = people.golden_persons(records, xref)
    years = people.program_years(enrollment, xref, people.FIRST_YEAR, model.as_of)
    built = research.build(persons, years, derive_key(pseudonym_key(),
                                                      research.PSEUDONYM_LABEL),
                           policy, people.FIRST_YEAR, model.as_of)
    sources = persons.select(pseudonymise(persons["person_id"], derive_key(
        pseudonym_key(), research.PSEUDONYM_LABEL)).alias("pseudonym"),
        pl.col("sources").str.split(",").alias(PROVENANCE))
    if built.anonymity.suppression_rate > policy.max_local_suppression:
        raise ReleaseRefused(agreement.id, [Refusal(
            "local_suppression", f"the agreement's population is too small for its file: "
            f"local suppression would remove {built.anonymity.suppression_rate:.0%} of people "
            f"(policy: at most {policy.max_local_suppression:.0%})")])
    frames = {"research_person": built.persons.join(sources, on="pseudonym", how="left"),
              "research_participation": built.participation}
    return {m: frames[m] for m in agreement.release}


def _participation_provenance(frame: pl.DataFrame) -> pl.DataFrame:
    """Each participation row derives from the source delivering its program."""
    return frame.with_columns(pl.concat_list(pl.col("program").replace_strict(
        program_sources(), default=None, return_dtype=pl.String)).alias(PROVENANCE))


def provenance_refusals(frames: dict[str, pl.DataFrame], agreement: Agreement
                        ) -> list[Refusal]:
    """The check on what is about to leave: every row's provenance within the agreement's
    sources. A row whose provenance the lineage cannot name (null or empty) refuses too."""
    refusals = []
    for mart, frame in sorted(frames.items()):
        if mart in load_marts().aggregates:
            continue
        if PROVENANCE not in frame.columns:
            refusals.append(Refusal("provenance_unknown", f"{mart}: rows carry no provenance"))
            continue
        rows = frame.select(PROVENANCE).with_row_index("_r").explode(PROVENANCE)
        unknown = rows.filter(pl.col(PROVENANCE).is_null())["_r"].n_unique()
        outside = (rows.filter(pl.col(PROVENANCE).is_not_null()
                               & ~pl.col(PROVENANCE).is_in(agreement.sources))
                   .group_by(PROVENANCE).agg(pl.col("_r").n_unique().alias("rows"))
                   .sort(PROVENANCE))
        for source, count in outside.iter_rows():
            refusals.append(Refusal("source_not_party", f"{mart}: {count} rows derive from "
                                    f"{source}, which is not among the agreement's sources "
                                    f"{agreement.sources}"))
        if unknown:
            refusals.append(Refusal("provenance_unknown", f"{mart}: {unknown} rows derive "
                                    "from a source the lineage cannot name"))
    return refusals


def aggregate_refusals(lake: Lake, agreement: Agreement) -> list[Refusal]:
    """Aggregates are computed over every linked record (a person's demographics come from
    all of them): every source in the identity index must be one of the agreement's."""
    marts = sorted(set(agreement.release) & load_marts().aggregates)
    if not marts or not delta.exists(lake.identity("person_xref")):
        return []
    feeding = set(delta.frame(lake.identity("person_xref"), columns=["source"])["source"]
                  .unique())
    extra = sorted(feeding - set(agreement.sources))
    return [Refusal("source_not_party", f"{mart}: computed over every linked record, it "
                    f"draws on {extra}, which are not among the agreement's sources")
            for mart in marts if extra]


def _research(frames: dict[str, pl.DataFrame], agreement: Agreement,
              previous: dict[str, pl.DataFrame] | None
              ) -> tuple[dict[str, pl.DataFrame], dict[str, int | bool]]:
    """Re-keys the pseudonyms for this agreement; keeps k over the whole released record
    (person row and participation); and, against the recipient's previous release, lets
    changes through only in groups of at least k identical changes (deid/holdback.py), so
    comparing two versions singles nobody out. Returns the frames and what was held."""
    key = derive_key(pseudonym_key(), f"release/{agreement.id}")
    out = {m: f.with_columns(pseudonymise(f["pseudonym"], key).alias("pseudonym"))
           for m, f in frames.items()}
    k = agreement.k_anonymity
    if "research_person" not in out:
        return out, {}
    persons, participation = out["research_person"], out.get("research_participation")
    provenance = persons.select("pseudonym", PROVENANCE)
    fields = [c for c in agreement.release["research_person"] if c != "pseudonym"]
    rows = kanon.records(persons.select("pseudonym", *fields), participation)
    rows = rows.filter(pl.len().over([*fields, kanon.PARTICIPATION]) >= k)  # k as released
    persons, participation = kanon.unrecords(rows)
    before = None if previous is None or "research_person" not in previous else (
        previous["research_person"], previous.get("research_participation"))
    moved = holdback.advance_file(before, persons, participation, fields, k,
                                  **holdback.thresholds(f"release/{agreement.id}"))
    # A row carried over from the previous version (a change held back) was released
    # before under this same agreement: its provenance is that release's.
    carried = pl.lit(agreement.sources, dtype=pl.List(pl.String))
    out["research_person"] = moved.persons.join(provenance, on="pseudonym", how="left") \
        .with_columns(pl.col(PROVENANCE).fill_null(carried))
    if "research_participation" in out:
        out["research_participation"] = moved.participation
    return out, {"changes_applied": moved.applied, "changes_held_back": moved.held_back,
                 "whole_change_set_held": moved.whole_change_set_held}


def _indicators(frames: dict[str, pl.DataFrame], agreement: Agreement, min_cell: int
                ) -> dict[str, pl.DataFrame]:
    """A stricter agreement hides every published count under its own minimum."""
    if agreement.min_cell_size <= min_cell:
        return dict(frames)
    hidden = pl.col("persons") < agreement.min_cell_size
    out = {}
    for mart, frame in frames.items():
        out[mart] = frame.with_columns(
            [pl.when(hidden).then(None).otherwise(pl.col(c)).alias(c)
             for c in ("persons", "rate_per_1000_served") if c in frame.columns])
    return out


def _operations(frames: dict[str, pl.DataFrame], agreement: Agreement
                ) -> dict[str, pl.DataFrame]:
    table = contacts.for_release(frames["contact_directory"], agreement.sources,
                                 agreement.population_sources)
    return {"contact_directory": table.with_columns(
        pl.col("sources").str.split(",").alias(PROVENANCE))}


def extract(lake: Lake, agreement: Agreement, versions: dict[str, int], min_cell: int,
            previous: LakePath | None = None
            ) -> tuple[dict[str, pl.DataFrame], dict[str, int | bool]]:
    """The release's tables, from its inputs at the given Delta versions and (research)
    the recipient's previous release `previous`; and what was held back. Refuses when a row
    would derive from a source outside the agreement."""
    held: dict[str, int | bool] = {}
    if agreement.purpose == "research":
        before = None if previous is None else {
            p.stem: storage.read_parquet(p) for p in previous.glob("*.parquet")}
        frames, held = _research(_party_research(lake, agreement, versions), agreement, before)
        if "research_participation" in frames:
            frames["research_participation"] = _participation_provenance(
                frames["research_participation"])
    else:
        frames = {m: delta.frame(lake.gold(m), version=versions[m]) for m in agreement.release}
        frames = (_operations(frames, agreement) if agreement.purpose == "operations"
                  else _indicators(frames, agreement, min_cell))
    refusals = provenance_refusals(frames, agreement)
    if refusals:
        raise ReleaseRefused(agreement.id, refusals)
    return {m: f.select(agreement.release[m]).sort(agreement.release[m], nulls_last=True)
            for m, f in frames.items()}, held


def _write(frames: dict[str, pl.DataFrame], folder: LakePath) -> list[dict[str, Any]]:
    files = []
    for mart, frame in sorted(frames.items()):
        buffer = io.BytesIO()
        pq.write_table(frame.to_arrow(), buffer, compression="zstd", write_statistics=False)
        data = buffer.getvalue()
        (folder / f"{mart}.parquet").write_bytes(data)
        files.append({"name": f"{mart}.parquet", "mart": mart, "rows": frame.height,
                      "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return files


def release_root(lake: Lake, agreement: Agreement) -> LakePath:
    return lake.releases(agreement.id, agreement.purpose)


def published(lake: Lake, agreement: Agreement) -> list[LakePath]:
    """The published versions, oldest first (a version is published once its manifest is
    in place; a staging folder is not, nor a folder set aside under another name, such as
    v0007.withdrawn: it took every request of its agreement down)."""
    return sorted((p for p in release_root(lake, agreement).glob("v*")
                   if VERSION_NAME.fullmatch(p.name) and (p / MANIFEST).exists()),
                  key=lambda p: int(p.name[1:]))


def next_version(lake: Lake, agreement: Agreement) -> str:
    done = published(lake, agreement)
    return f"v{int(done[-1].name[1:]) + 1 if done else 1:04d}"


def _digest(files: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((f["name"], f["sha256"]) for f in files)


def _latest_same(lake: Lake, agreement: Agreement, files: list[dict[str, Any]]
                 ) -> dict[str, Any] | None:
    """The latest published release when it holds exactly these files (by SHA-256) under
    this agreement text: a re-run, a refresh whose marts came out the same, or a run that
    died after publishing adds no version."""
    done = published(lake, agreement)
    if not done:
        return None
    manifest: dict[str, Any] = json.loads((done[-1] / MANIFEST).read_text())
    if _digest(manifest["files"]) != _digest(files) or \
            manifest["agreement_sha256"] != fingerprint(agreement):
        return None
    return manifest


def release(lake: Lake, agreement: Agreement, today: dt.date,
            check_status: dict[str, dict[str, bool | None]], run_id: str,
            min_cell: int, by: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """`by`: who asked (audit.launched_by of the run), recorded on every audit event."""
    by = by or {}
    zones.prepare(lake.root)        # private umask, whoever calls
    try:
        refusals = gate(agreement, lake, today, check_status) + \
            aggregate_refusals(lake, agreement)
        if refusals:
            raise ReleaseRefused(agreement.id, refusals)
        with locks.exclusive(lake, f"release-{agreement.id}"):
            manifest = _publish(lake, agreement, run_id, min_cell, by)
        zones.enforce(lake.root, under=release_root(lake, agreement))
        return manifest
    except ReleaseRefused as exc:
        audit.record(lake, "release_refused", f"release under {agreement.id} refused",
                     asset=f"releases/{agreement.id}", run_id=run_id, **by,
                     details={"agreement": agreement.id,
                              "refusals": [r.__dict__ for r in exc.refusals]})
        raise


def _publish(lake: Lake, agreement: Agreement, run_id: str, min_cell: int,
             by: Mapping[str, str | None]) -> dict[str, Any]:
    """Extract, stage and rename into place the next version (one publisher at a time)."""
    tables = inputs(agreement)
    versions = current_versions(lake, agreement)
    read = {name: {"table": "/".join(tables[name]), "delta_version": v}
            for name, v in versions.items()}
    done = published(lake, agreement)
    previous = done[-1] if done else None
    frames, held = extract(lake, agreement, versions, min_cell, previous)
    if held:    # exact counts are for the restricted audit log, not the recipient's manifest
        audit.record(lake, "disclosure_holdback", f"release under {agreement.id}: changes "
                     "applied and held back", asset=f"releases/{agreement.id}", run_id=run_id, **by,
                     details=held)
    version = next_version(lake, agreement)
    final = release_root(lake, agreement) / version
    # Locally: staged beside it and renamed into place. An object store has no rename:
    # the files go to the version's own prefix and the manifest, one PUT, comes last (a
    # version without its manifest is not published, and the next run writes it again).
    staging = final if isinstance(final, ObjectPath) else \
        final.with_name(f".{version}.building")
    storage.rmtree(staging)
    staging.mkdir(parents=True)
    files = _write(frames, staging)
    same = _latest_same(lake, agreement, files)
    if same is not None:    # nothing new to hand out
        storage.rmtree(staging)
        _audit_created(lake, agreement, same, run_id, by, only_if_missing=True)
        return same
    manifest: dict[str, Any] = {
        "agreement": agreement.id, "agreement_sha256": fingerprint(agreement),
        "version": version, "purpose": agreement.purpose,
        "recipient": agreement.recipient.model_dump(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id, "min_cell_size": min_cell,
        "inputs": read,
        "based_on": previous.name if previous is not None and agreement.purpose == "research"
        else None,
        "files": files,
        "pseudonym_key": f"derived per agreement: release/{agreement.id}"
        if agreement.purpose == "research" else None,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True)
    if isinstance(staging, Path) and isinstance(final, Path):
        (staging / MANIFEST).write_text(text)
        crash.point("release.after_files")
        os.replace(staging, final)          # published
    else:
        crash.point("release.after_files")
        (final / MANIFEST).write_text(text)  # published: one PUT
    _audit_created(lake, agreement, manifest, run_id, by)
    return manifest


def _audit_created(lake: Lake, agreement: Agreement, manifest: dict[str, Any], run_id: str,
                   by: Mapping[str, str | None], only_if_missing: bool = False) -> None:
    """Every published version has its release_created event (a run that died between
    publishing and auditing gets it written by the next run)."""
    asset = f"releases/{agreement.id}"
    if only_if_missing:
        events = audit.read(lake).to_pylist()
        if any(e["kind"] == "release_created" and e["asset"] == asset and
               json.loads(e["details"]).get("version") == manifest["version"]
               for e in events):
            return
    audit.record(lake, "release_created", f"{agreement.id} {manifest['version']} for "
                 f"{agreement.recipient.organisation}", asset=asset, run_id=run_id, **by,
                 details={k: manifest[k] for k in ("agreement", "version", "inputs", "files")})


def reproduce(lake: Lake, agreement: Agreement, version: str, into: Path) -> dict[str, bool]:
    """Rebuild a release from its manifest (inputs at their recorded Delta versions) into
    `into`; returns, per file, whether its SHA-256 matches the manifest."""
    manifest = json.loads((release_root(lake, agreement) / version / MANIFEST).read_text())
    versions = {m: i["delta_version"] for m, i in manifest["inputs"].items()}
    into.mkdir(parents=True, exist_ok=True)
    based_on = manifest.get("based_on")
    previous = release_root(lake, agreement) / based_on if based_on else None
    frames, _ = extract(lake, agreement, versions, manifest["min_cell_size"], previous)
    rebuilt = _write(frames, into)
    recorded = {f["name"]: f["sha256"] for f in manifest["files"]}
    return {f["name"]: recorded.get(f["name"]) == f["sha256"] for f in rebuilt}
