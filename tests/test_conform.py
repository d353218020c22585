"""Bronze -> silver routing on crafted rows: every bronze row lands in silver or in
quarantine with its rules, counts reconcile, and nothing personal reaches a reason."""

from __future__ import annotations

import polars as pl
import pytest

from ids_lakehouse.conform import state
from ids_lakehouse.conform.mapping import ConformError, conform_source
from ids_lakehouse.sources import load_sources
from schemas.silver import contract

SECRET = "Zebulon"


def medicaid_rows(*changes: dict) -> pl.DataFrame:
    good = {"member_id": "WA1", "first_name": "Ann", "middle_name": "Bea", "last_name": "Lee",
            "date_of_birth": "1990-05-01", "sex": "F", "ssn": "553-95-0378",
            "race_code": "4", "hispanic": "N", "address_line1": "1 Main St",
            "city": "Seattle", "state": "WA", "zip": "98101", "county_code": "033",
            "phone": "360-687-0928", "eligibility_start": "2020-01-01",
            "eligibility_end": "2021-01-01", "aid_category": "CHILD"}
    rows = [{**good, "member_id": f"WA{i}", **c} for i, c in enumerate(changes, start=1)]
    df = pl.DataFrame(rows)
    n = df.height
    return df.with_columns(
        pl.lit("medicaid").alias("_source"), pl.lit("medicaid/x.csv").alias("_file"),
        pl.lit("b" * 64).alias("_file_sha256"),
        pl.Series("_row_number", range(2, n + 2), dtype=pl.Int64))


@pytest.fixture
def medicaid():
    return load_sources()["medicaid"]


def test_good_rows_reach_silver(medicaid):
    result = conform_source(medicaid, medicaid_rows({}, {"member_id": "WA1"}), contract)
    assert result.quarantine.height == 0
    assert result.entities["enrollment"].height == 2
    person = result.entities["person_record"]
    assert person.height == 1  # two spells of one member: one person record
    row = person.row(0, named=True)
    assert (row["first_name"], row["first_name_raw"], row["ssn"], row["phone"],
            row["race"], row["county_fips"]) == ("ANN", "Ann", "553950378", "+13606870928",
                                                 "ASIAN", "033")


def test_a_bad_field_costs_the_field_and_a_bad_row_is_quarantined_with_every_rule(medicaid):
    bronze = medicaid_rows(
        {},
        {"date_of_birth": "05/01/1990", "first_name": SECRET},         # unparseable date
        {"sex": "Q"},                                                  # unknown code
        {"date_of_birth": "2099-01-01"},                               # future birth
        {"eligibility_end": "2019-01-01"},                             # end before start
        {"last_name": "", "race_code": "9"},                           # two field problems
        {"first_name": " ", "last_name": "", "date_of_birth": "", "ssn": "",
         "eligibility_start": "2020-13-01"},                           # nothing to link on
    )
    result = conform_source(medicaid, bronze, contract)
    q = result.quarantine.sort("_row_number")
    assert q["_row_number"].to_list() == [6, 8]
    assert q["_rule"].to_list() == ["end_not_before_start",
                                    "unparseable_date; no_identifying_field; not_nullable"]
    assert q["_column"][1] == ("start_date; first_name, last_name, dob, ssn, national_id")
    person = result.entities["person_record"].sort("_row_number")
    assert person["_row_number"].to_list() == [2, 3, 4, 5, 7]
    kept = {r["_row_number"]: r for r in person.iter_rows(named=True)}
    assert (kept[3]["dob"], kept[3]["dob_raw"], kept[3]["dob_status"]) == (
        None, "05/01/1990", "unparseable")
    assert (kept[5]["dob"], kept[5]["dob_raw"], kept[5]["dob_status"]) == (
        None, "2099-01-01", "out_of_range")
    assert kept[4]["sex"] is None and kept[4]["first_name"] == "ANN"
    assert kept[7]["last_name"] is None and kept[7]["race"] is None
    assert kept[2]["dob_status"] == "valid"
    assert result.field_problems["unparseable_date|dob"] == 1
    assert result.field_problems["not_after|dob"] == 1
    assert result.field_problems["unknown_code|sex"] == 1
    assert result.field_problems["unknown_code|race"] == 1
    assert result.statuses["dob_status"] == {"out_of_range": 1, "unparseable": 1, "valid": 3}
    assert not any(SECRET in r for r in q["_reason"]) and SECRET not in repr(result.failures)
    assert SECRET not in repr(result.field_problems) + repr(result.statuses)
    assert result.entities["enrollment"].height + q.height == bronze.height
    assert result.failures == {"end_not_before_start|enrollment": 1,
                               "unparseable_date|start_date": 1,
                               "not_nullable|start_date": 1,
                               "no_identifying_field|first_name, last_name, dob, ssn, "
                               "national_id": 1}


def test_missing_mapped_column_is_a_clear_schema_change(medicaid):
    with pytest.raises(ConformError, match=r"\[medicaid\].*missing from bronze.*'sex'"):
        conform_source(medicaid, medicaid_rows({}).drop("sex"), contract)


def test_empty_mapped_column_is_reported(medicaid):
    result = conform_source(medicaid, medicaid_rows({"phone": ""}, {"phone": ""}),
                            contract)
    assert result.schema_drift["empty_mapped_columns"] == ["phone"]


def test_a_new_column_is_counted_never_named(medicaid):
    """An undeclared column's name is delivered text: a person's name in a header."""
    rows = medicaid_rows({}).with_columns(pl.lit("x").alias("Jeremy_Gonzalez_812630965"))
    result = conform_source(medicaid, rows, contract)
    assert result.schema_drift["new_columns"] == 1
    assert "Jeremy" not in repr(result.schema_drift) + repr(result.failures)


def test_write_and_reconcile_on_real_delta_tables(medicaid, lake):
    bronze = medicaid_rows({}, {"eligibility_end": "2019-01-01"}, {"member_id": "WA1"})
    result = conform_source(medicaid, bronze, contract)
    state.write(lake, result, "run-1")
    state.write(lake, result, "run-2")  # re-running replaces, never duplicates
    rec = state.reconcile(lake, medicaid, bronze.height)
    assert rec == {"bronze_rows": 3, "silver_rows": 2, "quarantined_rows": 1,
                   "reconciles": True}


def test_snapshot_conform_reads_the_latest_delivery_even_after_a_reingest(tmp_path, lake,
                                                                          medicaid):
    import os

    from ids_lakehouse.ingest.delivery import ingest_delivery
    from ids_lakehouse.ingest.landing import landed_file

    folder = tmp_path / "medicaid"
    folder.mkdir()
    old, new = folder / "jan.csv", folder / "feb.csv"
    medicaid_rows({}).drop([c for c in medicaid_rows({}).columns if c.startswith("_")]) \
        .write_csv(old)
    medicaid_rows({}, {}).drop([c for c in medicaid_rows({}).columns
                                if c.startswith("_")]).write_csv(new)
    os.utime(old, (1_700_000_000, 1_700_000_000))
    os.utime(new, (1_700_100_000, 1_700_100_000))
    for path in (old, new, old):  # the January file is re-ingested last
        assert ingest_delivery(medicaid, landed_file(tmp_path, medicaid, path), lake,
                               "run").accepted
    rows = state.bronze_to_conform(lake, medicaid)
    assert set(rows["_file"]) == {"medicaid/feb.csv"} and rows.height == 2


def traveller_rows(*changes: dict) -> pl.DataFrame:
    good = {"traveller_ref": "T1", "full_name": "LEE, Ann", "date_of_birth": "01/05/1990",
            "nationality": "GB", "phone": "", "email": "", "port_of_entry": "SEA",
            "arrival_date": "2025-03-01T10:00:00", "flight_no": "BA49",
            "destination_address": "1234 Smith Avenue, Seattle WA 98101"}
    rows = [{**good, "traveller_ref": f"T{i}", **c} for i, c in enumerate(changes, start=1)]
    return pl.DataFrame(rows).with_columns(
        pl.lit("travellers").alias("_source"), pl.lit("travellers/x.xlsx").alias("_file"),
        pl.lit("c" * 64).alias("_file_sha256"),
        pl.Series("_row_number", range(2, len(rows) + 2), dtype=pl.Int64))


def assert_no_delivered_value_in_reasons(quarantine: pl.DataFrame) -> None:
    import json

    for row in quarantine.iter_rows(named=True):
        said = " ".join([row["_reason"], row["_rule"], row["_column"]])
        values = [v for v in json.loads(row["_raw"]).values()
                  if isinstance(v, str) and len(v) >= 3]
        assert values and not [v for v in values if v in said], row["_row_number"]


def test_dob_after_the_enrollment_start_is_quarantined(medicaid, lake):
    bronze = medicaid_rows(
        {},                                                          # born 1990, spell 2020
        {"date_of_birth": "2020-01-01"},                             # born the day it starts
        {"date_of_birth": "2020-06-30", "first_name": SECRET},       # born after it started
        {"date_of_birth": "2021-03-04", "eligibility_start": "2019-01-01",
         "eligibility_end": ""},
        {"member_id": "WA1", "eligibility_start": "1989-01-01",      # one of WA1's spells
         "eligibility_end": "1989-06-01"},
    )
    result = conform_source(medicaid, bronze, contract)
    q = result.quarantine.sort("_row_number")
    assert q["_row_number"].to_list() == [4, 5, 6]
    assert set(q["_rule"]) == {"dob_after_enrollment_start"} and set(q["_column"]) == {"dob"}
    assert result.failures == {"dob_after_enrollment_start|dob": 3}
    assert_no_delivered_value_in_reasons(q)
    assert not any("2020-06-30" in r or "1989" in r for r in q["_reason"])
    assert result.entities["enrollment"].height == 2
    assert result.entities["enrollment"].height + q.height == bronze.height
    # WA1 keeps the person record of its good row; WA3 and WA4 are only in quarantine
    assert sorted(result.entities["person_record"]["source_record_id"]) == ["WA1", "WA2"]
    state.write(lake, result, "run-1")
    assert state.reconcile(lake, medicaid, bronze.height) == {
        "bronze_rows": 5, "silver_rows": 2, "quarantined_rows": 3, "reconciles": True}


def test_dob_after_the_event_date_is_quarantined():
    sources = load_sources()
    bronze = traveller_rows({}, {"date_of_birth": "01/03/2025"},        # born the arrival day
                            {"date_of_birth": "02/03/2025", "full_name": f"{SECRET}, Ann"})
    result = conform_source(sources["travellers"], bronze, contract)
    q = result.quarantine
    assert q["_row_number"].to_list() == [4]
    assert (q["_rule"][0], q["_column"][0]) == ("dob_after_event_date", "dob")
    assert_no_delivered_value_in_reasons(q)
    assert result.entities["service_event"].height + q.height == bronze.height == 3
    assert "dob_after_enrollment_start|dob" not in result.failures


def test_a_birth_record_whose_event_is_the_birth_passes():
    births = load_sources()["births"]
    bronze = pl.DataFrame({
        "cert_number": ["2025000001"], "child_first": ["Ann"], "child_middle": [""],
        "child_last": ["Lee"], "sex": ["F"], "birth_date": ["20250301"],
        "birth_county": ["033"], "mother_first": ["Bea"], "mother_maiden": ["Ray"],
        "mother_dob": ["19900501"], "birth_weight_g": ["3400"]}).with_columns(
        pl.lit("births").alias("_source"), pl.lit("births/x.txt").alias("_file"),
        pl.lit("d" * 64).alias("_file_sha256"), pl.lit(2, dtype=pl.Int64).alias("_row_number"))
    result = conform_source(births, bronze, contract)
    assert result.quarantine.height == 0 and result.entities["service_event"].height == 1


def test_an_invalid_zip_is_nulled_with_a_status_and_kept_raw(medicaid):
    bronze = medicaid_rows(
        {"zip": "9810", "county_code": ""},          # 4 digits
        {"zip": "98101-1234", "county_code": ""},    # ZIP+4: county from the ZIP
        {"zip": "", "county_code": ""},
        {"zip": "98101-12", "county_code": ""},      # not ZIP+4: no county from its prefix
        {"zip": "00000", "county_code": "033"},      # delivered county kept
        {},
    )
    result = conform_source(medicaid, bronze, contract)
    assert result.quarantine.height == 0              # flagged on the field, record kept
    p = result.entities["person_record"].sort("_row_number")
    assert p["zip"].to_list() == [None, "98101", None, None, None, "98101"]
    assert p["zip_status"].to_list() == ["invalid", "valid", "missing", "invalid", "invalid",
                                         "valid"]
    assert p["zip_raw"].to_list() == ["9810", "98101-1234", None, "98101-12", "00000",
                                      "98101"]
    assert p["county_fips"].to_list() == [None, "033", None, None, "033", "033"]
    assert (p["name_status"].to_list() == p["address_status"].to_list() == ["valid"] * 6)


def test_a_shifted_column_shows_as_invalid_rates_not_as_quiet_nulls(medicaid):
    """A broken extract (the date of birth column now holds phone numbers) no longer
    quarantines rows: the share of delivered values nulled per field is what conform's
    blocking field_validity check compares with max_invalid_rate."""
    bronze = medicaid_rows(*[{"date_of_birth": f"360-687-09{i:02d}"} for i in range(10)])
    result = conform_source(medicaid, bronze, contract)
    assert result.quarantine.height == 0
    rates = result.invalid_rates()
    assert rates["dob"] == 1.0 > medicaid.max_invalid_rate
    assert rates["ssn"] == 0.0 and rates["phone"] == 0.0
    assert result.statuses["dob_status"] == {"unparseable": 10}


def test_record_ids_with_nothing_in_them_are_no_ids(medicaid):
    bronze = medicaid_rows({"member_id": "\u200b"}, {"member_id": "-"}, {"member_id": "NULL"},
                           {"member_id": " n/a "}, {"member_id": "WA7"})
    result = conform_source(medicaid, bronze, contract)
    assert sorted(result.quarantine["_row_number"].to_list()) == [2, 3, 4, 5]
    assert set(result.quarantine["_rule"]) == {"not_nullable"}
    assert result.entities["person_record"]["source_record_id"].to_list() == ["WA7"]


def test_a_bad_delivery_is_judged_on_its_own_rows_not_diluted_by_earlier_ones(medicaid):
    """An incremental source conforms all its deliveries: 20 good rows before 20 whose
    dates of birth are phone numbers are 50% invalid overall, 100% in the bad file."""
    good = medicaid_rows(*[{"member_id": f"G{i}"} for i in range(20)])
    bad = medicaid_rows(*[{"member_id": f"B{i}", "date_of_birth": "360-687-0928"}
                          for i in range(20)]).with_columns(pl.lit("c" * 64).alias(
                              "_file_sha256"))
    result = conform_source(medicaid, pl.concat([good, bad]), contract)
    assert result.invalid_rates()["dob"] == 1.0 > medicaid.max_invalid_rate


def test_a_mapped_column_a_delivery_lacked_stops_the_source(medicaid):
    """Bronze holds the column (earlier files had it) but this delivery did not: its
    values would be nulls from the union of schemas, not the agency's blanks."""
    with pytest.raises(ConformError, match=r"\[medicaid\].*missing from bronze.*'phone'"):
        conform_source(medicaid, medicaid_rows({}), contract, missing_in_delivery=["phone"])
