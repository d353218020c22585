"""Onboarding an agency by declaration alone: a YAML file, no code. The agency delivers
person records only, in another country's conventions (its own identifier, four-digit
postcodes, lower-case state codes, day.month.year dates, phone numbers without a country
code, the street number in its own column), with some bad fields. The whole graph runs on
the real pipeline (a fresh process, as Dagster loads the code) with IDS_SOURCES_DIR
pointing at the shipped declarations plus this one; the test then reads what each layer
kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.sources import load_source, sources_dir

FOREIGN = """\
source: overseas
agency: Overseas health service (test)
description: Patients registered abroad; person records only.
data_owner: "owner@overseas.example.org"
steward: "steward@overseas.example.org"
file_pattern: "*.csv"
format: csv
csv: {delimiter: ";"}
columns: [patient_no, given, family, born, medicare, house_no, street_name, town, postcode,
          state, phone]
required_columns: [patient_no]
record_id: patient_no
conventions:
  country: AU
  postcode_pattern: "[0-9]{4}"
  state_codes: [ACT, NSW, NT, QLD, SA, TAS, VIC, WA]
mapping:
  person_record:
    first_name: {column: given}
    last_name: {column: family}
    dob: {column: born, format: "%d.%m.%Y"}
    national_id: {column: medicare, id_type: AU_MEDICARE, pattern: "[2-6][0-9]{9}"}
    street: {columns: [house_no, street_name]}
    city: {column: town}
    state: {column: state}
    zip: {column: postcode}
    phone: {column: phone}
"""
SECRET_SURNAME = "Quarrington"


def _rows(persons: pl.DataFrame) -> list[dict]:
    """Records of people the US agencies know, as the overseas agency writes them."""
    rows = []
    for i, p in enumerate(persons.iter_rows(named=True)):
        dob = p["dob"]
        rows.append({
            "patient_no": f"P{i:05d}", "given": p["first_name"], "family": p["last_name"],
            "born": dob.strftime("%d.%m.%Y"), "medicare": f"{2000000000 + i * 7919}",
            "house_no": str(10 + i), "street_name": "Macquarie Street", "town": "Sydney",
            "postcode": "2000", "state": "nsw", "phone": f"02 9{i % 10}74 4{i % 7}00"})
    # Field problems: each costs its field, not the person.
    rows[0] |= {"born": "31.02.1980"}                       # no such date
    rows[1] |= {"born": "01.01.1850"}                       # before the model's minimum
    rows[2] |= {"family": ""}                               # no surname
    rows[3] |= {"medicare": "12-34"}                        # not the declared pattern
    rows[4] |= {"postcode": "20000", "state": "Ontario"}    # not AU conventions
    rows[5] |= {"phone": "123"}
    # A row no purpose can use: quarantined.
    rows.append({k: "" for k in rows[0]} | {"patient_no": "P99999",
                                             "street_name": SECRET_SURNAME})
    # The same record id twice in a person-only delivery: the second is quarantined.
    rows.append(dict(rows[10]))
    return rows


def _write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True)
    header = list(rows[0])
    lines = [";".join(header)] + [";".join(r[c] or "" for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _materialize(root: Path, declarations: Path, landing: Path) -> tuple[dict, str]:
    """Every asset on the real pipeline, in a fresh process: the outcome and its stderr."""
    env = {**os.environ, "IDS_SOURCES_DIR": str(declarations),
           "LANDING_ROOT": str(landing), "LAKE_ROOT": str(root / "lake"),
           "IDS_PSEUDONYM_KEY": "test-only-key-" + "1" * 32,
           "IDS_AUDIT_ANCHORS": str(root / "anchors.jsonl")}
    script = ("import json, dagster\n"
              "from pipelines.demo import Outcome, materialize_everything\n"
              "from pipelines.definitions import build_definitions\n"
              "with dagster.DagsterInstance.ephemeral() as instance:\n"
              "    o = Outcome()\n"
              "    materialize_everything(build_definitions(), instance, o)\n"
              "print(json.dumps({'failed': o.runs_failed, 'checks_failed': o.checks_failed,"
              " 'ok': o.runs_ok}))\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory, tiny_landing) -> tuple[Path, dict, list[dict]]:
    root = tmp_path_factory.mktemp("onboarding")
    declarations = root / "sources"
    shutil.copytree(sources_dir(), declarations)
    (declarations / "overseas.yaml").write_text(FOREIGN)
    load_source(declarations / "overseas.yaml")  # a malformed declaration fails here
    landing = root / "landing"
    shutil.copytree(tiny_landing, landing)
    known = pl.read_parquet(tiny_landing / "_truth" / "person_truth.parquet")
    persons = pl.read_parquet(tiny_landing / "_truth" / "persons.parquet").filter(
        pl.col("adult") & ~pl.col("twin")
        & pl.col("true_person_id").is_in(known["true_person_id"].implode())).head(120)
    rows = _rows(persons)
    _write(rows, landing / "overseas" / "patients.csv")
    outcome, _ = _materialize(root, declarations, landing)
    truth = {r["patient_no"]: p for r, p in zip(rows, persons.iter_rows(named=True),
                                                 strict=False)}
    return root / "lake", outcome, [truth]


def test_every_layer_runs_for_a_person_only_foreign_source(onboarded):
    lake_root, outcome, _ = onboarded
    lake = Lake(lake_root)
    assert outcome["checks_failed"] == [], outcome
    for layer, name in (("identity", "person_xref"), ("gold", "research_person"),
                        ("gold", "contact_directory"), ("gold", "indicators")):
        assert delta.count(lake.table(layer, name)) > 0, (layer, name)
    # Releases: the research agreement's file is built from its own sources and published;
    # the public indicators are computed over every linked record, and the new agency is
    # not a party to that agreement yet, so that release is refused (and audited) until
    # the agreement is amended: the only failed run.
    assert list((lake_root / "published" / "releases" /
                 "dsa-housing-education-research").glob("v*"))
    assert outcome["failed"] == ["downstream assets"], outcome
    from ids_lakehouse import audit

    refused = [e for e in audit.read(lake).to_pylist() if e["kind"] == "release_refused"]
    assert refused and all("overseas" in e["message"] + str(e["details"])
                           for e in refused)


def test_nothing_delivered_is_lost_or_silently_nulled(onboarded):
    lake_root, _, _ = onboarded
    lake = Lake(lake_root)
    person = pl.from_arrow(delta.read(lake.silver("person_record"))).filter(
        pl.col("source") == "overseas")
    quarantine = pl.from_arrow(delta.read(lake.quarantine("overseas")))
    assert person.height == 120 and quarantine.height == 2     # 122 rows delivered
    assert sorted(quarantine["_rule"].to_list()) == ["duplicate_record_id",
                                                     "no_identifying_field"]
    assert SECRET_SURNAME not in "".join(quarantine["_reason"].to_list())
    by_id = {r["source_record_id"]: r for r in person.iter_rows(named=True)}
    assert (by_id["P00000"]["dob"], by_id["P00000"]["dob_raw"],
            by_id["P00000"]["dob_status"]) == (None, "31.02.1980", "unparseable")
    assert (by_id["P00001"]["dob"], by_id["P00001"]["dob_status"]) == (None, "out_of_range")
    assert by_id["P00002"]["last_name"] is None and by_id["P00002"]["first_name"]
    assert (by_id["P00003"]["national_id"], by_id["P00003"]["national_id_raw"],
            by_id["P00003"]["national_id_status"]) == (None, "12-34", "invalid")
    assert (by_id["P00004"]["zip"], by_id["P00004"]["zip_raw"], by_id["P00004"]["zip_status"],
            by_id["P00004"]["state"], by_id["P00004"]["state_status"]) == (
        None, "20000", "invalid", None, "invalid")
    assert (by_id["P00005"]["phone"], by_id["P00005"]["phone_status"]) == (None, "invalid")
    good = by_id["P00010"]
    assert (good["zip"], good["state"], good["national_id_type"], good["street"]) == (
        "2000", "NSW", "AU_MEDICARE", "20 MACQUARIE STREET")
    assert good["phone"].startswith("+612") and good["county_fips"] is None
    # Every delivered identifier that is not usable has a status and is counted.
    for field in ("national_id", "zip", "state", "phone", "dob"):
        nulled = person.filter(pl.col(field).is_null() & pl.col(f"{field}_raw").is_not_null())
        assert set(nulled[f"{field}_status"]) <= {"invalid", "unparseable", "out_of_range"}


def test_the_foreign_records_link_to_the_people_the_other_agencies_know(onboarded):
    lake_root, _, (truth,) = onboarded
    lake = Lake(lake_root)
    xref = pl.from_arrow(delta.read(lake.identity("person_xref"))).select(
        "unique_id", "person_id")
    known = pl.read_parquet(lake_root.parent / "landing" / "_truth" / "person_truth.parquet")
    true_of = dict(zip(("overseas:" + pl.Series(list(truth))).to_list(),
                       [p["true_person_id"] for p in truth.values()], strict=True))
    others = xref.join(known.select((pl.col("source") + ":" + pl.col("source_record_id"))
                                    .alias("unique_id"), "true_person_id"), on="unique_id")
    person_of = dict(xref.iter_rows())
    linked = wrong = 0
    for uid, true_id in true_of.items():
        if uid not in person_of:
            continue
        mates = others.filter(pl.col("person_id") == person_of[uid])
        if mates.height:
            linked += 1
            wrong += int((mates["true_person_id"] != true_id).any())
    assert wrong == 0
    assert linked >= 0.8 * len(true_of), (linked, len(true_of))


def test_a_first_agency_alone_with_each_person_once_is_not_a_failed_night(tmp_path,
                                                                          tiny_landing):
    """The first agency to deliver, alone, each of its people once: no two records share
    what a linkage model is trained from. The identity asset failed on Splink's "math
    domain error" and took every mart with it; now each record is its own person, the
    run says why nothing is linked, and the marts are built."""
    declarations = tmp_path / "sources"      # the other agencies declared, not delivering
    shutil.copytree(sources_dir(), declarations)
    (declarations / "overseas.yaml").write_text(FOREIGN)
    persons = pl.read_parquet(tiny_landing / "_truth" / "persons.parquet").filter(
        pl.col("adult")).head(80)
    rows = _rows(persons)[:80]
    _write(rows, tmp_path / "landing" / "overseas" / "patients.csv")
    outcome, stderr = _materialize(tmp_path, declarations, tmp_path / "landing")
    lake = Lake(tmp_path / "lake")
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    assert xref.height == delta.count(lake.silver("person_record")) > 70
    assert xref["person_id"].n_unique() == xref.height
    assert delta.count(lake.identity("person_link")) == 0
    assert "no linkage model yet, so nothing is linked: no two of the" in stderr
    assert delta.count(lake.table("gold", "research_person")) == xref.height
    assert outcome["checks_failed"] == [], outcome
    # Every view of the warehouse answers, an empty mart's too (read_parquet of no file
    # failed the warehouse step); the one failed run is the public release, refused as
    # the agency is no party to that agreement (test above).
    from ids_lakehouse import audit, warehouse
    from ids_lakehouse.marts.declaration import load_marts

    with warehouse.connect(lake) as con:
        for schema, views in load_marts().views().items():
            for view in views:
                con.execute(f"SELECT count(*) FROM {schema}.{view}").fetchone()
    assert outcome["failed"] == ["downstream assets"], outcome
    failed = [e for e in audit.read(lake).to_pylist() if e["kind"] == "release_refused"]
    assert failed and all("overseas" in e["message"] + str(e["details"]) for e in failed)
