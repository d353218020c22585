"""Governance on a lake built by the real pipeline: access zones and file modes, who did
what, a tamper-evident audit log, and a release gate that checks where data came from."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from ids_lakehouse import audit, catalog, delta, releases, zones
from ids_lakehouse.agreements import AgreementError, agreements_dir, load_agreements
from ids_lakehouse.config import Lake
from tests.conftest import PUBLISHED_KEY

KEY = PUBLISHED_KEY
TODAY = dt.date(2026, 6, 1)
REPO = Path(__file__).resolve().parents[1]
PASSED = {m: {"contract": True} for m in
          ("research_person", "research_participation", "indicators", "program_overlap",
           "contact_directory")}


@pytest.fixture(scope="module")
def built(published) -> Path:
    """Every asset materialized by the real pipeline (releases included)."""
    return published


@pytest.fixture
def lake(tmp_path, built, monkeypatch) -> Lake:
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    shutil.copy(built.parent / "anchors.jsonl", tmp_path / "anchors.jsonl")
    monkeypatch.setenv("IDS_AUDIT_ANCHORS", str(tmp_path / "anchors.jsonl"))
    # A copy of the published lake: it keeps the lake's name (its audit signing key), as
    # a lake that moves does.
    monkeypatch.setenv("IDS_LAKE_NAME", str(built.resolve()))
    shutil.copytree(built, tmp_path / "lake", symlinks=True)
    zones.enforce(tmp_path / "lake")
    return Lake(tmp_path / "lake")


# -- zones -------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_of_the_built_lake_has_its_zones_modes(built):
    """As the pipeline left it (no enforce by the test): the teardown of each step did it."""
    assert zones.violations(built) == []
    assert sorted(p.name for p in built.iterdir()) == ["internal", "published", "restricted"]
    assert _mode(built / "restricted") == 0o700 and _mode(built / "published") == 0o755
    assert _mode(built) == 0o755        # traversable: each zone's own mode decides
    restricted = [p for p in (built / "restricted").rglob("*")]
    assert restricted and all(_mode(p) == (0o700 if p.is_dir() else 0o600) for p in restricted)


def test_the_landing_zone_is_restricted_too(built):
    landing = built.parent / "landing"
    files = [p for p in landing.rglob("*") if p.is_file()]
    assert files and all(_mode(p) == 0o600 for p in files)
    assert all(_mode(p) == 0o700 for p in [landing, *landing.rglob("*")] if p.is_dir())


@pytest.mark.parametrize("layer,name,zone", [
    ("bronze", "hmis", "restricted"), ("bronze", "medicaid", "restricted"),
    ("identity", "person_xref", "restricted"), ("gold", "contact_directory", "restricted"),
    ("disclosure", "indicator_basis", "restricted"), ("audit", "events", "restricted"),
    ("silver", "person_record", "internal"), ("gold", "research_person", "internal"),
    ("gold", "indicators", "internal"),
])
def test_tables_live_in_their_declared_zone(built, layer, name, zone):
    path = Lake(built).table(layer, name)
    assert path.relative_to(built).parts[0] == zone and delta.exists(path)
    # (The tiny population quarantines no row: a field problem costs the field.)
    assert Lake(built).quarantine(name).relative_to(built).parts[0] == "restricted"


def test_linkage_models_and_their_name_frequencies_are_restricted_and_catalogued(built):
    tf = sorted(Lake(built).models("linkage").glob("*.tf_*.parquet"))
    assert tf and all(p.relative_to(built).parts[0] == "restricted" for p in tf)
    assert all(_mode(p) == 0o600 for p in tf)
    listed = {e.path for e in catalog.lake_inventory()}
    for p in tf:
        pattern = p.relative_to(built).as_posix().replace("_v0001.", "_v<n>.")
        assert pattern in listed
    dictionary = (Lake(built).docs("catalog") / "data_dictionary.md").read_text()
    assert "linkage_model_v<n>.tf_last_name.parquet` | restricted" in dictionary


def test_every_table_in_the_lake_is_in_the_catalog_with_its_zone(built):
    listed = {e.path: e.zone for e in catalog.lake_inventory()}
    for log in built.glob("**/_delta_log"):
        table = log.parent.relative_to(built).as_posix()
        assert table in listed, f"{table} is not in the catalog"
        assert listed[table] == table.split("/")[0]


def test_releases_are_zoned_by_purpose(lake):
    traveller = load_agreements()["dsa-traveller-followup"]
    research = load_agreements()["dsa-housing-education-research"]
    os.umask(0o022)                 # a caller of the Python API with a lax umask
    releases.release(lake, traveller, dt.date(2026, 1, 15), PASSED, "run-1", 11)
    releases.release(lake, research, TODAY, PASSED, "run-1", 11)
    ops = releases.release_root(lake, traveller) / "v0001" / "contact_directory.parquet"
    res = releases.release_root(lake, research) / "v0001" / "research_person.parquet"
    assert ops.relative_to(lake.root).parts[0] == "restricted" and _mode(ops) == 0o600
    assert res.relative_to(lake.root).parts[0] == "published" and _mode(res) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another OS account needs root")
def test_another_os_account_cannot_read_restricted_data(lake):
    """What an auditor logged in as another account tries: read bronze, identity
    and contact directory files. The published catalog stays readable."""
    nobody = pwd.getpwnam("nobody")
    for parent in [lake.root, *lake.root.parents]:   # let `nobody` reach the lake at all
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    targets = [next(lake.bronze("hmis").rglob("*.parquet")),
               next(lake.identity("person_xref").rglob("*.parquet")),
               next(lake.gold("contact_directory").rglob("*.parquet"))]
    probe = ("import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'rb').read(1)\n"
             "        print('READ', p)\n    except PermissionError:\n        print('DENIED', p)\n")

    def as_nobody(paths):
        return subprocess.run(["/usr/bin/python3", "-c", probe, *map(str, paths)],
                              capture_output=True, text=True, timeout=60,
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                              cwd="/").stdout.split("\n")

    out = as_nobody(targets)
    assert sum(line.startswith("DENIED") for line in out) == 3, out
    listing = subprocess.run(["ls", str(lake.root / "restricted")], capture_output=True,
                             user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                             timeout=60)
    assert listing.returncode != 0                      # cannot even list the zone
    published = lake.docs("catalog") / "catalog.json"
    assert as_nobody([published])[0].startswith("READ")


def test_a_lake_in_the_layout_before_zones_is_refused_clearly(tmp_path):
    (tmp_path / "old" / "bronze" / "hmis").mkdir(parents=True)
    with pytest.raises(zones.ZoneError, match="layout before access zones"):
        zones.prepare(tmp_path / "old")


# -- actors ------------------------------------------------------------------------------

def test_every_audit_event_says_who_acted_and_how(built):
    events = audit.read(Lake(built)).to_pylist()
    assert events
    for e in events:
        assert e["actor"] and e["os_user"] and e["host"], e["kind"]
    runs = [e for e in events if e["run_id"]]
    assert runs and all(e["via"] and e["via"].startswith("run ") for e in runs)
    assert {"ingest_succeeded", "model_trained", "release_created"} <= {e["kind"] for e in events}


def test_a_steward_decision_is_recorded_with_the_steward_and_the_os_account(lake):
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    left, right = xref["unique_id"][0], xref["unique_id"][1]
    done = subprocess.run(
        [sys.executable, "-m", "ids_lakehouse", "steward", "--left", left, "--right", right,
         "--decision", "non_match", "--steward", "ana.steward@ids.example.gov",
         "--reason", "different people (reviewed)"], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "LAKE_ROOT": str(lake.root)}, timeout=120)
    assert done.returncode == 0, done.stderr
    event = audit.read(lake).to_pylist()[-1]
    assert event["kind"] == "steward_decision"
    assert event["actor"] == "ana.steward@ids.example.gov"
    assert event["os_user"] == pwd.getpwuid(os.getuid()).pw_name
    assert event["via"].startswith("cli:steward")
    assert zones.violations(lake.root) == []


# -- tamper evidence ---------------------------------------------------------------------

def _verify_cli(lake: Lake) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ids_lakehouse", "audit", "verify"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "LAKE_ROOT": str(lake.root)})


def test_verify_passes_on_an_untouched_log(lake):
    done = _verify_cli(lake)
    assert done.returncode == 0 and "intact" in done.stdout, done.stderr


def test_the_audit_table_refuses_deletes_and_updates_through_delta(lake):
    table = DeltaTable(str(lake.audit()))
    for attempt in (lambda: table.delete("kind = 'ingest_succeeded'"),
                    lambda: table.update({"message": "'nothing'"}),
                    lambda: write_deltalake(str(lake.audit()), delta.read(lake.audit()),
                                            mode="overwrite")):
        with pytest.raises(Exception, match="append-only"):
            attempt()
    assert _verify_cli(lake).returncode == 0


def _unlock(lake: Lake) -> DeltaTable:
    table = DeltaTable(str(lake.audit()))
    table.alter.set_table_properties({"delta.appendOnly": "false"})
    return DeltaTable(str(lake.audit()))


def test_deleting_an_event_is_found_and_named(lake):
    victim = audit.read(lake).to_pylist()[2]
    _unlock(lake).delete(f"seq = {victim['seq']}")
    done = _verify_cli(lake)
    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert "NOT intact" in first and f"event {victim['seq']} missing" in done.stderr
    assert "no longer append-only" in done.stderr and "DELETE" in done.stderr


def test_editing_an_event_is_found_and_named(lake):
    events = pl.from_arrow(audit.read(lake))
    seq = int(events["seq"][1])
    edited = events.with_columns(pl.when(pl.col("seq") == seq).then(pl.lit("edited"))
                                 .otherwise(pl.col("message")).alias("message"))
    _unlock(lake)
    write_deltalake(str(lake.audit()), edited.to_arrow(), mode="overwrite")
    result = audit.verify(lake)
    assert not result.intact
    assert any(f"seq {seq} " in p and "edited" in p for p in result.problems)


def _rewrite(lake: Lake, events: list[dict], key: bytes | None) -> None:
    """Recompute every link of the chain (with `key`, or with the audit key when None)
    and overwrite the table, as an attacker with write access would."""
    import pyarrow as pa

    key = audit.signing_key(lake) if key is None else key
    prev = audit.GENESIS
    for e in events:
        e["prev_hash"] = prev
        e["hash"] = audit.event_hash(e, key)
        prev = e["hash"]
    _unlock(lake)
    write_deltalake(str(lake.audit()), pa.Table.from_pylist(events, schema=audit.AUDIT_SCHEMA),
                    mode="overwrite")


def test_rewriting_the_chain_without_the_secret_is_caught(lake):
    events = audit.read(lake).to_pylist()
    events[3]["message"] = "rewritten history"
    _rewrite(lake, events, key=b"a guess at the key")
    result = audit.verify(lake)
    assert any(f"seq {events[0]['seq']} " in p and "forged" in p for p in result.problems)


def test_rewriting_the_chain_with_the_secret_is_caught_by_the_anchors(lake):
    """An insider holding the key rewrites a valid chain; the anchors, appended elsewhere,
    still hold the original hashes, and forging them needs the key too."""
    events = audit.read(lake).to_pylist()
    events[3]["message"] = "rewritten history"
    _rewrite(lake, events, key=None)
    result = audit.verify(lake)
    assert any(f"anchor for seq {events[3]['seq']}" in p and "rewritten" in p
               for p in result.problems)
    anchors = audit.anchors_path(lake)
    anchors.write_text("\n".join(json.dumps({"seq": e["seq"], "hash": e["hash"], "version": 0,
                                             "mac": "0" * 64}) for e in events) + "\n")
    assert any("signature is wrong" in p for p in audit.verify(lake).problems)


def test_a_forged_event_is_never_anchored_by_a_later_write(lake):
    """An event appended behind the log's back (chained, but not signed with the key) is
    not vouched for by the next legitimate write."""
    import pyarrow as pa

    events = audit.read(lake).to_pylist()
    forged = {**events[-1], "seq": events[-1]["seq"] + 1, "event_id": "f" * 32,
              "kind": "release_created", "actor": "privacy-officer@ids.example.gov",
              "message": "approved", "prev_hash": events[-1]["hash"]}
    forged["hash"] = audit.event_hash(forged, b"not the key")
    write_deltalake(str(lake.audit()), pa.Table.from_pylist([forged], schema=audit.AUDIT_SCHEMA),
                    mode="append")
    audit.record(lake, "steward_decision", "a legitimate event after the forgery")
    result = audit.verify(lake)
    assert not result.intact
    assert any(f"seq {forged['seq']} (event {'f' * 32})" in p for p in result.problems)
    anchored = [json.loads(line) for line in audit.anchors_path(lake).read_text().splitlines()]
    assert forged["hash"] not in {a["hash"] for a in anchored}


def test_a_remove_disguised_as_an_append_is_found_in_the_log(lake):
    """A hand-written Delta commit that removes the last event's file while calling itself
    a WRITE in append mode, with the anchor file cut to match."""
    log = lake.audit() / "_delta_log"
    last = max(int(p.name.split(".")[0]) for p in log.glob("*.json"))
    added = [json.loads(line)["add"]["path"] for line in
             (log / f"{last:020d}.json").read_text().splitlines() if '"add"' in line]
    commit = [{"commitInfo": {"timestamp": 1, "operation": "WRITE",
                              "operationParameters": {"mode": "Append"}}},
              {"remove": {"path": added[0], "dataChange": True, "deletionTimestamp": 1}}]
    (log / f"{last + 1:020d}.json").write_text("\n".join(map(json.dumps, commit)) + "\n")
    anchors = audit.anchors_path(lake)
    anchors.write_text("\n".join(anchors.read_text().splitlines()[:-1]) + "\n")
    result = audit.verify(lake)
    assert any(f"Delta version {last + 1}: removes a data file" in p for p in result.problems)


def test_restoring_an_older_copy_of_the_log_is_found(lake, tmp_path):
    shutil.copytree(lake.audit(), tmp_path / "old_log")
    audit.record(lake, "release_created", "a release someone wants forgotten")
    shutil.rmtree(lake.audit())
    shutil.copytree(tmp_path / "old_log", lake.audit())
    result = audit.verify(lake)
    assert any("no such event" in p for p in result.problems)


def test_deleting_the_whole_log_is_found_with_the_default_anchors(lake, tmp_path,
                                                                   monkeypatch):
    """By default the anchors live in the Dagster instance's directory, under a name
    derived from the lake's location: nothing inside the lake can point them elsewhere."""
    anchored = audit.anchors_path(lake).read_text()
    monkeypatch.delenv("IDS_AUDIT_ANCHORS")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    default = audit.anchors_path(lake)
    assert default.is_relative_to(tmp_path / "dagster_home")
    default.parent.mkdir(parents=True)
    default.write_text(anchored)
    assert audit.verify(lake).intact
    shutil.rmtree(lake.audit())
    (lake.place("audit") / "lake_id").write_text("../../../../tmp/elsewhere")   # ignored
    result = audit.verify(lake)
    assert any("is gone" in p for p in result.problems), result.problems
    audit.record(lake, "steward_decision", "life goes on")
    assert not audit.verify(lake).intact
    assert audit.anchors_path(lake) == default


def test_a_planted_symbolic_link_is_reported_not_followed(lake, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("not the lake's")
    target.chmod(0o644)
    (lake.place("audit") / "evil").symlink_to(target)
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    done = subprocess.run(
        [sys.executable, "-m", "ids_lakehouse", "steward", "--left", xref["unique_id"][0],
         "--right", xref["unique_id"][1], "--decision", "match", "--steward",
         "ana.steward@ids.example.gov", "--reason", "same person"], capture_output=True,
        text=True, cwd=REPO, env={**os.environ, "LAKE_ROOT": str(lake.root)}, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("warning: 1 symbolic links inside the lake")
    assert _mode(target) == 0o644                          # the target was not touched
    assert any("symbolic link" in v for v in zones.violations(lake.root))


def test_a_missing_log_entry_is_reported_not_crashed_on(lake):
    log = lake.audit() / "_delta_log"
    middle = sorted(log.glob("*.json"))[2]
    middle.unlink()
    done = _verify_cli(lake)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Delta log entries missing" in done.stderr


def test_cutting_events_off_the_end_is_found(lake):
    events = audit.read(lake).to_pylist()
    last = events[-1]["seq"]
    _unlock(lake).delete(f"seq >= {last - 1}")
    result = audit.verify(lake)
    assert any(f"anchor for seq {last}" in p and "no such event" in p
               for p in result.problems)


def test_the_chain_continues_across_processes_and_after_a_lost_anchor(lake):
    """An event committed by a process that died before anchoring it is anchored by the
    next writer: the log stays verifiable."""
    anchors = audit.anchors_path(lake)
    lines = anchors.read_text().splitlines()
    anchors.write_text("\n".join(lines[:-1]) + "\n")        # the last anchor never written
    audit.record(lake, "test_event", "after a crash")
    result = audit.verify(lake)
    assert result.intact, result.problems
    assert result.events == result.anchors == len(lines) + 1


# -- provenance --------------------------------------------------------------------------

def test_a_research_release_holds_nothing_from_a_source_outside_the_agreement(lake):
    a = load_agreements()["dsa-housing-education-research"]
    assert "childcare" not in a.sources and "travellers" not in a.sources
    releases.release(lake, a, TODAY, PASSED, "run-1", 11)
    folder = releases.release_root(lake, a) / "v0001"
    participation = pl.read_parquet(folder / "research_participation.parquet")
    assert participation.height > 0
    assert set(participation["program"]) <= {"HMIS", "K12", "K12_MCKINNEY_VENTO", "MEDICAID"}
    # The gold file (all sources) does hold childcare participation: the release is narrower.
    gold = pl.from_arrow(delta.read(lake.gold("research_participation")))
    assert "CHILDCARE_SUBSIDY" in set(gold["program"])


def test_a_research_release_narrows_with_the_agreement_sources(lake):
    """Dropping Medicaid (and its owner) from the agreement removes Medicaid participation
    and everyone known to Medicaid alone."""
    a = load_agreements()["dsa-housing-education-research"]
    narrow = a.model_copy(update={"sources": ["hmis", "schools", "births"]})
    frames, _ = releases.extract(lake, narrow, releases.current_versions(lake, narrow), 11)
    assert "MEDICAID" not in set(frames["research_participation"]["program"])
    full, _ = releases.extract(lake, a, releases.current_versions(lake, a), 11)
    assert frames["research_person"].height < full["research_person"].height


def _agreement_file(tmp_path: Path, name: str, **change) -> Path:
    data = yaml.safe_load((agreements_dir() / f"{name}.yaml").read_text())
    data.update(change)
    folder = tmp_path / "agreements"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return folder


@pytest.mark.parametrize("name,change,reason", [
    ("dsa-housing-education-research",
     {"sources": ["hmis", "schools", "medicaid", "births", "childcare"]},
     "source 'childcare': its data owner early-learning-data@dcyf.example.gov is not a party"),
    ("dsa-traveller-followup", {"population_sources": []},
     "an operations agreement must name its population"),
    ("dsa-traveller-followup", {"population_sources": ["medicaid"]},
     "population_sources ['medicaid'] are not among the agreement's sources"),
    ("dsa-housing-education-research", {"sources": ["nowhere"]}, "not declared"),
    ("dsa-housing-education-research", {"id": "../escape"}, "key 'id'"),
    ("dsa-housing-education-research",
     {"permitted": {"contact_directory": ["phone"]}}, "do not serve the purpose"),
])
def test_refusals_at_load_are_audited(lake, tmp_path, name, change, reason):
    folder = _agreement_file(tmp_path, name, **change)
    before = audit.read(lake).num_rows
    with pytest.raises(AgreementError) as info:
        load_agreements(folder)
    assert reason in str(info.value)
    events = audit.read(lake).to_pylist()
    assert len(events) == before + 1
    event = events[-1]
    assert event["kind"] == "agreement_refused" and event["actor"]
    assert reason in json.loads(event["details"])["reason"]
    assert audit.verify(lake).intact


def test_an_indicators_release_over_sources_outside_the_agreement_is_refused(lake):
    a = load_agreements()["dsa-public-indicators"]
    narrow = a.model_copy(update={"sources": ["medicaid", "hmis", "schools", "childcare"]})
    before = releases.published(lake, narrow)
    with pytest.raises(releases.ReleaseRefused) as info:
        releases.release(lake, narrow, TODAY, PASSED, "run-1", 11)
    reasons = [r.reason for r in info.value.refusals if r.rule == "source_not_party"]
    assert len(reasons) == 2 and all("births" in r and "travellers" in r for r in reasons)
    event = audit.read(lake).to_pylist()[-1]
    assert event["kind"] == "release_refused"
    assert "source_not_party" in event["details"]
    assert releases.published(lake, narrow) == before          # nothing new written


def test_the_output_check_refuses_rows_from_a_non_party_source():
    """The last check before anything is written, on rows as they would leave."""
    a = load_agreements()["dsa-housing-education-research"]
    frames = {"research_participation": pl.DataFrame({
        "pseudonym": ["a", "b", "c"], "program": ["HMIS", "CHILDCARE_SUBSIDY", "NEW_THING"]})}
    frames = {m: releases._participation_provenance(f) for m, f in frames.items()}
    refusals = releases.provenance_refusals(frames, a)
    assert {r.rule for r in refusals} == {"source_not_party", "provenance_unknown"}
    assert any("1 rows derive from childcare" in r.reason for r in refusals)


def test_the_contact_directory_shortcut_equals_survivorship_of_every_group(built):
    """contacts.build takes a person's single record per source as is; the result must be
    what survivorship over every (person, source) group gives."""
    from ids_lakehouse.marts import contacts
    from ids_lakehouse.marts.people import linked, survive

    lake = Lake(built)
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    full = survive(linked(records, xref), ["person_id", "source"], contacts.ATTRIBUTES)
    built_now = contacts.build(records, xref)
    assert built_now.equals(full.select(contacts.FIELDS).sort(["person_id", "source"]))
    groups = linked(records, xref).group_by("person_id", "source").len()
    assert (groups["len"] > 1).any() and (groups["len"] == 1).any()   # both paths ran


# -- round 3 of the red team -------------------------------------------------------------

def _steward_cli(lake: Lake, *, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    return subprocess.run(
        [sys.executable, "-m", "ids_lakehouse", "steward", "--left", xref["unique_id"][0],
         "--right", xref["unique_id"][1], "--decision", "match", "--steward",
         "ana.steward@ids.example.gov", "--reason", "same person"], capture_output=True,
        text=True, cwd=REPO, timeout=120,
        env={**os.environ, "LAKE_ROOT": str(lake.root), **(extra_env or {})})


def test_an_event_replayed_from_a_clone_of_the_lake_never_verifies(lake, tmp_path,
                                                                   monkeypatch):
    """A clone (same secret, another place) signs with its own lake's key: its events
    copied into this log are not anchored by a later write, and verify names them."""
    import pyarrow as pa

    clone = Lake(tmp_path / "clone")
    shutil.copytree(lake.root, clone.root)
    with monkeypatch.context() as mp:
        mp.delenv("IDS_LAKE_NAME")
        mp.setenv("IDS_AUDIT_ANCHORS", str(tmp_path / "clone_anchors.jsonl"))
        # Under its own name the clone cannot append to the copied log, even without an
        # anchor file: the log's last event does not verify under the clone's key...
        with pytest.raises(audit.AuditKeyError):
            audit.record(clone, "steward_decision", "decided in the clone")
        # ...so the attacker starts the clone's log afresh and signs an event there.
        shutil.rmtree(clone.audit())
        audit.record(clone, "steward_decision", "decided in the clone")
        replayed = audit.read(clone).to_pylist()[-1]
    write_deltalake(str(lake.audit()), pa.Table.from_pylist([replayed],
                                                            schema=audit.AUDIT_SCHEMA),
                    mode="append")
    audit.record(lake, "steward_decision", "an ordinary write after the replay")
    result = audit.verify(lake)
    assert any(f"event {replayed['event_id']}" in p for p in result.problems), result.problems


def test_a_zone_replaced_by_a_symbolic_link_stops_every_write(lake, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("secret")
    (outside / "id_rsa").chmod(0o600)
    shutil.rmtree(lake.root / "published")
    (lake.root / "published").symlink_to(outside)
    done = _steward_cli(lake)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is a symbolic link inside the lake" in done.stderr
    assert _mode(outside / "id_rsa") == 0o600 and _mode(outside) == 0o700


def test_a_release_never_writes_through_a_planted_link(lake, tmp_path):
    traveller = load_agreements()["dsa-traveller-followup"]
    outside = tmp_path / "exfiltrate"
    outside.mkdir()
    target = lake.root / "restricted" / "releases" / traveller.id
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside)
    with pytest.raises(zones.ZoneError, match="symbolic link"):
        releases.release(lake, traveller, dt.date(2026, 1, 15), PASSED, "run-1", 11)
    assert list(outside.iterdir()) == []


def test_a_planted_hard_link_is_left_alone_and_reported(lake, tmp_path):
    outside = tmp_path / "private.txt"
    outside.write_text("someone else's")
    outside.chmod(0o600)
    os.link(outside, lake.docs("catalog") / "planted.json")
    done = zones.enforce(lake.root)
    assert _mode(outside) == 0o600 and done.hard_links
    assert any("hard link" in v for v in zones.violations(lake.root))


def test_a_lost_anchor_file_does_not_bless_what_was_done_meanwhile(lake):
    """Without anchors nothing already in the table is trusted: a tail cut while they
    were gone stays reported after ordinary writes, until an operator anchors, on record."""
    anchors = audit.anchors_path(lake)
    events = audit.read(lake).to_pylist()
    anchors.unlink()
    _unlock(lake).delete(f"seq >= {events[-2]['seq']}")
    audit.record(lake, "steward_decision", "ordinary write 1")
    audit.record(lake, "steward_decision", "ordinary write 2")
    result = audit.verify(lake)
    assert any("no anchor" in p for p in result.problems), result.problems
    done = subprocess.run([sys.executable, "-m", "ids_lakehouse", "audit", "anchor",
                           "--operator", "ops@ids.example.gov"], capture_output=True,
                          text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "LAKE_ROOT": str(lake.root)})
    assert done.returncode == 0, done.stderr
    last = audit.read(lake).to_pylist()[-1]
    assert last["kind"] == "audit_anchored" and last["actor"] == "ops@ids.example.gov"
    remaining = audit.verify(lake).problems        # the Delta history still shows the cut
    assert remaining and all("no anchor" not in p for p in remaining), "\n".join(remaining)


def test_a_writer_killed_between_commit_and_anchor_leaves_a_verifiable_log(lake, tmp_path):
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    (crashes / "audit.before_anchor").touch()
    env = {"IDS_CRASH_DIR": str(crashes)}
    killed = _steward_cli(lake, extra_env=env)
    assert killed.returncode == -9
    assert _steward_cli(lake, extra_env=env).returncode == 0
    result = audit.verify(lake)
    assert result.intact, result.problems


def test_a_steward_killed_after_the_audit_leaves_no_unaudited_decision(lake, tmp_path):
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    (crashes / "steward.after_audit").touch()
    decisions = delta.count(lake.identity("steward_decisions"))
    killed = _steward_cli(lake, extra_env={"IDS_CRASH_DIR": str(crashes)})
    assert killed.returncode == -9
    assert delta.count(lake.identity("steward_decisions")) == decisions   # nothing in force
    assert audit.read(lake).to_pylist()[-1]["kind"] == "steward_decision"  # but on record
    assert audit.verify(lake).intact


# -- round 4 -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "short", "another-key-of-the-right-length-0123456789"])
def test_a_writer_without_the_logs_key_records_nothing_and_says_so(lake, key):
    env = {k: v for k, v in os.environ.items() if k != "IDS_PSEUDONYM_KEY"}
    if key is not None:
        env["IDS_PSEUDONYM_KEY"] = key
    decisions, events = delta.count(lake.identity("steward_decisions")), audit.read(lake).num_rows
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    done = subprocess.run(
        [sys.executable, "-m", "ids_lakehouse", "steward", "--left", xref["unique_id"][0],
         "--right", xref["unique_id"][1], "--decision", "match", "--steward",
         "ana.steward@ids.example.gov", "--reason", "same person"], capture_output=True,
        text=True, cwd=REPO, timeout=120, env={**env, "LAKE_ROOT": str(lake.root)})
    assert done.returncode == 2 and done.stderr.startswith("error: IDS_PSEUDONYM_KEY")
    assert "Traceback" not in done.stderr
    assert delta.count(lake.identity("steward_decisions")) == decisions
    assert audit.read(lake).num_rows == events and audit.verify(lake).intact


def test_a_torn_anchor_line_is_noted_not_fatal(lake):
    anchors = audit.anchors_path(lake)
    with anchors.open("a") as f:
        f.write('{"seq": 99, "hash": "ab')           # a write cut by a crash
    audit.record(lake, "steward_decision", "the next write")
    result = audit.verify(lake)
    assert result.intact, result.problems
    assert any("not valid JSON" in n for n in result.notes)


@pytest.mark.parametrize("anchors", ["kept", "lost"])
def test_a_run_under_another_key_writes_nothing(lake, built, tmp_path, monkeypatch, anchors):
    """A run whose IDS_PSEUDONYM_KEY did not sign the lake's audit log used to ingest,
    conform and link, failing only when it came to audit: data no event accounts for. It
    now refuses before any step writes."""
    from dagster import DagsterInstance

    from ids_lakehouse.ingest.delivery import ledger
    from pipelines.definitions import build_definitions
    from pipelines.demo import Outcome, materialize_everything

    landing = tmp_path / "landing"
    shutil.copytree(built.parent / "landing", landing)
    src = landing / "hmis" / "hmis_client_2025-12-31.csv"
    (landing / "hmis" / "hmis_client_2026-01-01.csv").write_bytes(src.read_bytes() + b"\n")
    monkeypatch.setenv("LANDING_ROOT", str(landing))
    before = {t: delta.table(lake.table(*t)).version()
              for t in (("bronze", "hmis"), ("silver", "person_record"),
                        ("identity", "person_xref"))}
    decided = ledger(lake).num_rows
    audited = delta.table(lake.audit()).version()
    if anchors == "lost":      # a recreated DAGSTER_HOME: the log's own signatures decide
        (tmp_path / "anchors.jsonl").unlink()
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", "another-key-" + "9" * 32)
    outcome = Outcome()
    with DagsterInstance.ephemeral() as instance:
        materialize_everything(build_definitions(), instance, outcome)
    assert outcome.runs_failed and not outcome.runs_ok
    assert {t: delta.table(lake.table(*t)).version() for t in before} == before
    assert ledger(lake).num_rows == decided
    assert delta.table(lake.audit()).version() == audited
    if anchors == "kept":
        monkeypatch.setenv("IDS_PSEUDONYM_KEY", KEY)
        assert audit.verify(lake).problems == []


def test_a_spool_killed_between_its_commit_and_emptying_is_not_committed_twice(lake,
                                                                              tmp_path):
    """The gateway's audit spool: its flush commits, then empties the file; killed in
    between, the next start's recovery finds the events already in the log."""
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    (crashes / "audit.spool_committed").touch()
    before = audit.read(lake).num_rows
    script = ("from ids_lakehouse import audit, config\n"
              "s = audit.Spool(config.lake())\n"
              "for i in range(3):\n"
              "    s.add('sharing_request', f'request {i}', via='test')\n"
              "s.flush()\n")
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120,
                            env={**os.environ, "IDS_CRASH_DIR": str(crashes)})
    assert killed.returncode == -9
    assert audit.read(lake).num_rows == before + 3          # committed, spool not emptied
    assert len(list(audit.spool_dir(lake).glob("*.jsonl"))) == 1
    assert audit.Spool.recover(lake) == 0
    assert audit.read(lake).num_rows == before + 3
    assert not list(audit.spool_dir(lake).glob("*.jsonl"))
    assert audit.verify(lake).intact
