"""Agreements, the release gate (every refusal), reproducible releases, and the catalog."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import polars as pl
import pytest
import yaml

from ids_lakehouse import audit, delta, releases
from ids_lakehouse.agreements import AgreementError, agreements_dir, load_agreement, load_agreements
from ids_lakehouse.config import Lake
from tests.conftest import PUBLISHED_KEY

TODAY = dt.date(2026, 6, 1)
KEY = PUBLISHED_KEY


@pytest.fixture
def lake(tmp_path, published, monkeypatch) -> Lake:
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", KEY)
    shutil.copy(published.parent / "anchors.jsonl", tmp_path / "anchors.jsonl")
    monkeypatch.setenv("IDS_AUDIT_ANCHORS", str(tmp_path / "anchors.jsonl"))
    # A copy of the published lake: it keeps the lake's name (its audit signing key), as
    # a lake that moves does.
    monkeypatch.setenv("IDS_LAKE_NAME", str(published.resolve()))
    shutil.copytree(published, tmp_path / "lake")
    for folder in (tmp_path / "lake").glob("*/releases"):
        shutil.rmtree(folder)
    return Lake(tmp_path / "lake")


def agreement(name: str):
    return load_agreements()[name]


PASSED = {m: {"contract": True} for m in
          ("research_person", "research_participation", "indicators", "program_overlap",
           "contact_directory")}


def refused(lake, a, status=PASSED, today=TODAY) -> set[str]:
    with pytest.raises(releases.ReleaseRefused) as info:
        releases.release(lake, a, today, status, "run-x", 11)
    assert not releases.release_root(lake, a).exists()          # nothing written
    events = pl.from_arrow(audit.read(lake)).filter(pl.col("kind") == "release_refused")
    assert events.height >= 1 and a.id in events["message"][-1]    # and it is audited
    return {r.rule for r in info.value.refusals}


def test_shipped_agreements_are_valid():
    assert {a.purpose for a in load_agreements().values()} == {
        "research", "indicators", "operations"}


def test_shipped_agreements_stay_in_force_for_the_demo():
    """The demo and the tests share, release and look up under the shipped agreements as of
    today: one that expires stops them all at once (correctly: nothing is released or
    answered under it). Said here 60 days ahead, naming the file to renew."""
    soon = dt.date.today() + dt.timedelta(days=60)
    ending = sorted(f"{a.id}.yaml (expires {a.expires})" for a in load_agreements().values()
                    if a.expires < soon)
    assert not ending, f"renew in data_model/agreements: {', '.join(ending)}"


@pytest.mark.parametrize("change,key", [
    ({"expires": "2020-01-01"}, "expires is before effective"),
    ({"permitted": {"contact_directory": ["phone"]}}, "do not serve the purpose"),
    ({"min_cell_size": 5}, "below the policy floor"),
    ({"surprise": 1}, "key 'surprise'"),
    ({"recipient": {"organisation": "x", "contact": "nobody"}}, "key 'recipient.contact'"),
])
def test_invalid_agreements_fail_at_load_naming_file_and_key(tmp_path, change, key):
    data = yaml.safe_load((agreements_dir() / "dsa-housing-education-research.yaml")
                          .read_text())
    data.update(change)
    path = tmp_path / "dsa-housing-education-research.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AgreementError) as info:
        load_agreement(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_gate_refuses_an_expired_agreement(lake):
    a = agreement("dsa-housing-education-research")
    assert refused(lake, a, today=a.expires + dt.timedelta(days=1)) == {"expired"}


def test_gate_refuses_an_agreement_not_yet_in_force(lake):
    a = agreement("dsa-housing-education-research")
    assert refused(lake, a, today=a.effective - dt.timedelta(days=1)) == {"not_yet_effective"}


def test_gate_refuses_a_field_the_agreement_does_not_permit(lake):
    a = agreement("dsa-housing-education-research")
    a = a.model_copy(update={"release": {**a.release, "research_person":
                                         [*a.release["research_person"], "zip3"]}})
    a = a.model_copy(update={"permitted": {**a.permitted, "research_person": [
        f for f in a.permitted["research_person"] if f != "zip3"]}})
    assert refused(lake, a) == {"field_not_permitted"}


def test_gate_refuses_a_mart_the_agreement_does_not_permit(lake):
    a = agreement("dsa-public-indicators")
    a = a.model_copy(update={"permitted": {"indicators": a.permitted["indicators"]}})
    assert refused(lake, a) == {"mart_not_permitted"}


def test_gate_refuses_when_an_upstream_check_failed_or_never_ran(lake):
    a = agreement("dsa-public-indicators")
    failed = {**PASSED, "indicators": {"contract": True, "min_cell_size": False}}
    assert refused(lake, a, failed) == {"upstream_check"}
    never = {**PASSED, "program_overlap": {"min_cell_size": None}}
    assert refused(lake, a, never) == {"upstream_check"}


def test_gate_refuses_a_field_the_mart_does_not_have(lake):
    a = agreement("dsa-public-indicators")
    a = a.model_copy(update={"permitted": {**a.permitted, "indicators": [
        *a.permitted["indicators"], "shoe_size"]}, "release": {**a.release, "indicators": [
            *a.release["indicators"], "shoe_size"]}})
    assert refused(lake, a) == {"unknown_field"}


def test_release_reproduces_byte_identically_after_the_marts_move_on(lake, tmp_path):
    a = agreement("dsa-housing-education-research")
    manifest = releases.release(lake, a, TODAY, PASSED, "run-1", 11)
    assert manifest["version"] == "v0001" and {f["name"] for f in manifest["files"]} == {
        "research_person.parquet", "research_participation.parquet"}
    # Its inputs change (a later night: Medicaid's enrollments are withdrawn): the release
    # still rebuilds from its inputs at their recorded versions.
    assert set(manifest["inputs"]) == {"person_record", "enrollment", "person_xref"}
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    from deltalake import write_deltalake

    write_deltalake(str(lake.silver("enrollment")),
                    enrollment.filter(pl.col("source") != "medicaid").to_arrow(),
                    mode="overwrite")
    same = releases.reproduce(lake, a, "v0001", tmp_path / "again")
    assert same == {"research_person.parquet": True, "research_participation.parquet": True}
    second = releases.release(lake, a, TODAY, PASSED, "run-2", 11)
    assert second["version"] == "v0002"
    assert {f["sha256"] for f in second["files"]} != {f["sha256"] for f in manifest["files"]}


def test_research_pseudonyms_are_rekeyed_per_agreement(lake):
    a = agreement("dsa-housing-education-research")
    other = a.model_copy(update={"id": "dsa-other-recipient"})
    releases.release(lake, a, TODAY, PASSED, "run-1", 11)
    gold = set(pl.from_arrow(delta.read(lake.gold("research_person")))["pseudonym"])
    mine = set(pl.read_parquet(releases.release_root(lake, a) / "v0001" /
                               "research_person.parquet")["pseudonym"])
    frames, _ = releases.extract(lake, other, releases.current_versions(lake, other), 11)
    theirs = set(frames["research_person"]["pseudonym"])
    assert mine and not mine & gold and not mine & theirs


def test_operations_release_holds_only_the_agreed_population_and_fields(lake):
    a = agreement("dsa-traveller-followup")
    manifest = releases.release(lake, a, dt.date(2026, 1, 15), PASSED, "run-1", 11)
    df = pl.read_parquet(releases.release_root(lake, a) / "v0001" /
                         "contact_directory.parquet")
    assert df.columns == a.release["contact_directory"]
    directory = pl.from_arrow(delta.read(lake.gold("contact_directory")))
    travellers = directory.filter(pl.col("source") == "travellers")
    assert df.height == travellers.height < directory["person_id"].n_unique()
    assert manifest["files"][0]["rows"] == df.height
    # Every value comes from the immigration agency's own records (the agreement's only
    # source), even for travellers other agencies know too.
    mine = travellers.select(a.release["contact_directory"]).sort("person_id")
    assert df.sort("person_id").equals(mine)
    others = directory.filter(pl.col("source") != "travellers")
    assert others["person_id"].is_in(df["person_id"].implode()).any()   # the case that matters


def test_stricter_agreement_suppresses_more(lake):
    a = agreement("dsa-public-indicators").model_copy(update={"min_cell_size": 25})
    frames, _ = releases.extract(lake, a, releases.current_versions(lake, a), 11)
    persons = frames["indicators"]["persons"]
    assert not persons.is_between(0, 24).any()
    assert frames["indicators"].filter(pl.col("persons").is_null())[
        "rate_per_1000_served"].null_count() == persons.null_count()
    assert persons.null_count() > pl.from_arrow(delta.read(lake.gold("indicators")))[
        "persons"].null_count()


def test_catalog_files_describe_every_entity_source_and_mart(tmp_path):
    from ids_lakehouse import catalog
    from ids_lakehouse.model import load_model
    from ids_lakehouse.sources import load_sources

    files = catalog.write(tmp_path)
    text = files["data_dictionary"].read_text()
    model = load_model()
    for name, entity in model.entities.items():
        assert f"## Entity `{name}`" in text
        for field, f in entity.fields.items():
            assert f"| `{field}` | {f.type} | {f.classification} |" in text
    cat = json.loads(files["catalog"].read_text())
    required = {"title", "description", "keyword", "modified", "publisher", "contactPoint",
                "identifier", "accessLevel", "bureauCode", "programCode"}
    assert cat["conformsTo"] == "https://project-open-data.cio.gov/v1.1/schema"
    for d in cat["dataset"]:
        assert required <= set(d), d["identifier"]
        assert d["accessLevel"] == "public" or "rights" in d
    ids = {d["identifier"] for d in cat["dataset"]}
    assert {f"ids-lakehouse/bronze/{s}" for s in load_sources()} <= ids
    lineage = catalog.column_lineage("person_record")
    assert ("hmis", "DOB") in lineage["dob"] and ("medicaid", "date_of_birth") in lineage["dob"]
    classes = catalog.column_classification(load_sources()["hmis"], model)
    assert classes["SSN"] == "direct_identifier" and classes["ProjectType"] == "sensitive"


def test_two_releases_at_once_publish_one_version(lake):
    """Two runs releasing under one agreement at the same moment: one publishes, the other
    finds the same inputs already released (the lake lock serialises them)."""
    import threading

    a = agreement("dsa-housing-education-research")
    results, errors = [], []

    def go():
        try:
            results.append(releases.release(lake, a, TODAY, PASSED, "concurrent", 11))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert [r["version"] for r in results] == [results[0]["version"]] * 2
    folders = sorted(p.name for p in releases.release_root(lake, a).iterdir())
    assert folders == [results[0]["version"]]


def test_a_refresh_that_changes_nothing_releases_no_new_version(lake):
    """The marts are rewritten every night (new Delta versions); a release whose files
    would come out byte for byte the same is not handed out again."""
    from deltalake import write_deltalake

    a = agreement("dsa-public-indicators")

    def created() -> int:
        return sum(e["kind"] == "release_created" and e["asset"] == f"releases/{a.id}"
                   for e in audit.read(lake).to_pylist())

    first = releases.release(lake, a, TODAY, PASSED, "run-1", 11)
    events = created()
    for mart in a.release:
        same = delta.read(lake.gold(mart))
        write_deltalake(str(lake.gold(mart)), same, mode="overwrite")
    again = releases.release(lake, a, TODAY, PASSED, "run-2", 11)
    assert again["version"] == first["version"] == "v0001"
    assert sorted(p.name for p in releases.release_root(lake, a).iterdir()) == ["v0001"]
    assert created() == events      # the second call handed out nothing and audited nothing


def _add_research_people(lake: Lake, count: int, start: int) -> None:
    """New people in the inputs of a research release (silver records, enrollments and the
    identity index), all copies of one existing person known to HMIS, K-12 and Medicaid
    only — so all have the same, rare, whole record."""
    from deltalake import write_deltalake

    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    wanted = {"hmis", "schools", "medicaid"}
    per_person = xref.group_by("person_id").agg(pl.col("source").unique())
    model = next(p for p, s in per_person.sort("person_id").iter_rows() if set(s) == wanted)
    mine = xref.filter(pl.col("person_id") == model)
    copies = []
    for i in range(start, start + count):
        def copied(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.join(mine.select("source", "source_record_id"),
                              on=["source", "source_record_id"]).with_columns(
                (pl.col("source_record_id") + f"-copy{i}").alias("source_record_id"))
        copies.append((copied(records), copied(enrollment), mine.with_columns(
            (pl.col("source_record_id") + f"-copy{i}").alias("source_record_id"),
            (pl.col("unique_id") + f"-copy{i}").alias("unique_id"),
            pl.lit(f"PCOPY{i:08d}").alias("person_id"))))
    for path, frames in ((lake.silver("person_record"), [records, *(c[0] for c in copies)]),
                         (lake.silver("enrollment"), [enrollment, *(c[1] for c in copies)]),
                         (lake.identity("person_xref"), [xref, *(c[2] for c in copies)])):
        write_deltalake(str(path), pl.concat(frames).to_arrow(), mode="overwrite")


def _released(lake: Lake, a, version: str) -> pl.DataFrame:
    folder = releases.release_root(lake, a) / version
    persons = pl.read_parquet(folder / "research_person.parquet")
    spells = pl.read_parquet(folder / "research_participation.parquet")
    return persons, spells


def test_consecutive_research_releases_hold_back_changes_under_k(lake):
    """Three new people with a rare record would be exactly what differs between two
    versions: they are held back until k people share their change."""
    from ids_lakehouse.deid import kanon

    a = agreement("dsa-housing-education-research")
    first = releases.release(lake, a, TODAY, PASSED, "run-1", 11)
    before = _released(lake, a, first["version"])
    _add_research_people(lake, 3, start=0)
    second = releases.release(lake, a, TODAY, PASSED, "run-2", 11)
    assert second["version"] == first["version"]             # nothing new handed out
    # Eighteen more of the same kind: 21 identical changes reach any threshold (k plus a
    # secret 0..10 per kind of change) and move together.
    _add_research_people(lake, 18, start=3)
    third = releases.release(lake, a, TODAY, PASSED, "run-3", 11)
    assert third["version"] == "v0002" and third["based_on"] == "v0001"
    assert "held_back" not in third                       # no exact counts for recipients
    held = [json.loads(e["details"]) for e in audit.read(lake).to_pylist()
            if e["kind"] == "disclosure_holdback" and e["run_id"] == "run-3"]
    # The copies, and the person they copy (whose record was too rare to release alone).
    assert held[-1]["changes_applied"] >= 21
    after = _released(lake, a, "v0002")
    added = set(after[0]["pseudonym"]) - set(before[0]["pseudonym"])
    assert len(added) >= 21
    qis = [c for c in a.release["research_person"] if c != "pseudonym"]
    assert kanon.whole_record_k(*after, qis) >= a.k_anonymity
    # The release can still be rebuilt byte for byte from its manifest.
    assert all(releases.reproduce(lake, a, "v0002", lake.root / "again").values())
