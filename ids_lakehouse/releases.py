"""Gated releases: what is handed to whom, under which agreement.

A release writes `LAKE_ROOT/releases/<agreement>/<version>/` with one Parquet file per mart
and a manifest (files, rows, SHA-256, the Delta version of every input, the agreement and
its fingerprint, the time). The gate refuses — with every reason, audited, nothing
written — when the agreement is not in force, the release asks for a mart or field the
agreement does not permit (or that does not exist), or a blocking check upstream has not
passed. Research pseudonyms are re-keyed per agreement so recipients cannot join files.
A release can be rebuilt byte for byte from its manifest (Delta time travel)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ids_lakehouse import audit, crash, delta, locks
from ids_lakehouse.agreements import Agreement, fingerprint
from ids_lakehouse.config import Lake, pseudonym_key
from ids_lakehouse.deid import holdback, kanon
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.deid.pseudonym import derive_key, pseudonymise

MANIFEST = "manifest.json"


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


def _research(frames: dict[str, pl.DataFrame], agreement: Agreement,
              previous: dict[str, pl.DataFrame] | None) -> tuple[dict[str, pl.DataFrame], dict]:
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
    fields = [c for c in agreement.release["research_person"] if c != "pseudonym"]
    rows = kanon.records(persons.select("pseudonym", *fields), participation)
    rows = rows.filter(pl.len().over([*fields, kanon.PARTICIPATION]) >= k)  # k as released
    persons, participation = kanon.unrecords(rows)
    before = None if previous is None or "research_person" not in previous else (
        previous["research_person"], previous.get("research_participation"))
    moved = holdback.advance_file(before, persons, participation, fields, k,
                                  **holdback.thresholds(f"release/{agreement.id}"))
    out["research_person"] = moved.persons
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
    table = frames["contact_directory"]
    if agreement.population_sources:
        seen = pl.any_horizontal([pl.col("sources").str.split(",").list.contains(s)
                                  for s in agreement.population_sources])
        table = table.filter(seen)
    return {"contact_directory": table}


def extract(lake: Lake, agreement: Agreement, versions: dict[str, int], min_cell: int,
            previous: Path | None = None) -> tuple[dict[str, pl.DataFrame], dict]:
    """The release's tables, from the gold marts at the given Delta versions and (research)
    the recipient's previous release `previous`; and what was held back."""
    frames = {m: pl.from_arrow(delta.read(lake.gold(m), version=versions[m]))
              for m in agreement.release}
    held: dict = {}
    if agreement.purpose == "operations":
        frames = _operations(frames, agreement)
    elif agreement.purpose == "indicators":
        frames = _indicators(frames, agreement, min_cell)
    else:
        before = None if previous is None else {
            p.stem: pl.read_parquet(p) for p in previous.glob("*.parquet")}
        frames, held = _research(frames, agreement, before)
    return {m: f.select(agreement.release[m]).sort(agreement.release[m], nulls_last=True)
            for m, f in frames.items()}, held


def _write(frames: dict[str, pl.DataFrame], folder: Path) -> list[dict]:
    files = []
    for mart, frame in sorted(frames.items()):
        path = folder / f"{mart}.parquet"
        pq.write_table(frame.to_arrow(), path, compression="zstd", write_statistics=False)
        data = path.read_bytes()
        files.append({"name": path.name, "mart": mart, "rows": frame.height,
                      "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return files


def release_root(lake: Lake, agreement_id: str) -> Path:
    return lake.root / "releases" / agreement_id


def published(lake: Lake, agreement_id: str) -> list[Path]:
    """The published versions, oldest first (a version is published once its manifest is
    in place; a staging folder is not)."""
    return sorted((p for p in release_root(lake, agreement_id).glob("v*")
                   if (p / MANIFEST).exists()), key=lambda p: int(p.name[1:]))


def next_version(lake: Lake, agreement_id: str) -> str:
    done = published(lake, agreement_id)
    return f"v{int(done[-1].name[1:]) + 1 if done else 1:04d}"


def _digest(files: list[dict]) -> list[tuple[str, str]]:
    return sorted((f["name"], f["sha256"]) for f in files)


def _latest_same(lake: Lake, agreement: Agreement, files: list[dict]) -> dict | None:
    """The latest published release when it holds exactly these files (by SHA-256) under
    this agreement text: a re-run, a refresh whose marts came out the same, or a run that
    died after publishing adds no version."""
    done = published(lake, agreement.id)
    if not done:
        return None
    manifest = json.loads((done[-1] / MANIFEST).read_text())
    if _digest(manifest["files"]) != _digest(files) or \
            manifest["agreement_sha256"] != fingerprint(agreement.id):
        return None
    return manifest


def release(lake: Lake, agreement: Agreement, today: dt.date,
            check_status: dict[str, dict[str, bool | None]], run_id: str,
            min_cell: int) -> dict:
    refusals = gate(agreement, lake, today, check_status)
    if refusals:
        audit.record(lake, "release_refused", f"release under {agreement.id} refused",
                     asset=f"releases/{agreement.id}", run_id=run_id,
                     details={"agreement": agreement.id,
                              "refusals": [r.__dict__ for r in refusals]})
        raise ReleaseRefused(agreement.id, refusals)
    with locks.exclusive(lake, f"release-{agreement.id}"):
        return _publish(lake, agreement, run_id, min_cell)


def _publish(lake: Lake, agreement: Agreement, run_id: str, min_cell: int) -> dict:
    """Extract, stage and rename into place the next version (one publisher at a time)."""
    versions = {m: delta.table(lake.gold(m)).version() for m in agreement.release}
    inputs = {m: {"table": f"gold/{m}", "delta_version": v} for m, v in versions.items()}
    done = published(lake, agreement.id)
    previous = done[-1] if done else None
    frames, held = extract(lake, agreement, versions, min_cell, previous)
    if held:    # exact counts are for the restricted audit log, not the recipient's manifest
        audit.record(lake, "disclosure_holdback", f"release under {agreement.id}: changes "
                     "applied and held back", asset=f"releases/{agreement.id}", run_id=run_id,
                     details=held)
    version = next_version(lake, agreement.id)
    final = release_root(lake, agreement.id) / version
    staging = final.with_name(f".{version}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = _write(frames, staging)
    same = _latest_same(lake, agreement, files)
    if same is not None:    # nothing new to hand out
        shutil.rmtree(staging)
        _audit_created(lake, agreement, same, run_id, only_if_missing=True)
        return same
    manifest = {
        "agreement": agreement.id, "agreement_sha256": fingerprint(agreement.id),
        "version": version, "purpose": agreement.purpose,
        "recipient": agreement.recipient.model_dump(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id, "min_cell_size": min_cell,
        "inputs": inputs,
        "based_on": previous.name if previous is not None and agreement.purpose == "research"
        else None,
        "files": files,
        "pseudonym_key": f"derived per agreement: release/{agreement.id}"
        if agreement.purpose == "research" else None,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    crash.point("release.after_files")
    os.replace(staging, final)
    _audit_created(lake, agreement, manifest, run_id)
    return manifest


def _audit_created(lake: Lake, agreement: Agreement, manifest: dict, run_id: str,
                   only_if_missing: bool = False) -> None:
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
                 f"{agreement.recipient.organisation}", asset=asset, run_id=run_id,
                 details={k: manifest[k] for k in ("agreement", "version", "inputs", "files")})


def reproduce(lake: Lake, agreement: Agreement, version: str, into: Path) -> dict[str, bool]:
    """Rebuild a release from its manifest (inputs at their recorded Delta versions) into
    `into`; returns, per file, whether its SHA-256 matches the manifest."""
    manifest = json.loads((release_root(lake, agreement.id) / version / MANIFEST).read_text())
    versions = {m: i["delta_version"] for m, i in manifest["inputs"].items()}
    into.mkdir(parents=True, exist_ok=True)
    based_on = manifest.get("based_on")
    previous = release_root(lake, agreement.id) / based_on if based_on else None
    frames, _ = extract(lake, agreement, versions, manifest["min_cell_size"], previous)
    rebuilt = _write(frames, into)
    recorded = {f["name"]: f["sha256"] for f in manifest["files"]}
    return {f["name"]: recorded.get(f["name"]) == f["sha256"] for f in rebuilt}
