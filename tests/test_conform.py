"""Bronze -> silver routing on crafted rows: every bronze row lands in silver or in
quarantine with its rules, counts reconcile, and nothing personal reaches a reason."""

from __future__ import annotations

import polars as pl
import pytest

from ids_lakehouse.conform import silver
from ids_lakehouse.conform.conform import ConformError, conform_source
from ids_lakehouse.sources import load_sources

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
    result = conform_source(medicaid, medicaid_rows({}, {"member_id": "WA1"}))
    assert result.quarantine.height == 0
    assert result.entities["enrollment"].height == 2
    person = result.entities["person_record"]
    assert person.height == 1  # two spells of one member: one person record
    row = person.row(0, named=True)
    assert (row["first_name"], row["first_name_raw"], row["ssn"], row["phone"],
            row["race"], row["county_fips"]) == ("ANN", "Ann", "553950378", "+13606870928",
                                                 "ASIAN", "033")


def test_bad_rows_are_quarantined_with_every_rule(medicaid):
    bronze = medicaid_rows(
        {},
        {"date_of_birth": "05/01/1990", "first_name": SECRET},         # unparseable date
        {"sex": "Q"},                                                  # unknown code
        {"date_of_birth": "2099-01-01"},                               # future birth
        {"eligibility_end": "2019-01-01"},                             # end before start
        {"last_name": "", "race_code": "9"},                           # two failures
    )
    result = conform_source(medicaid, bronze)
    q = result.quarantine.sort("_row_number")
    assert q["_row_number"].to_list() == [3, 4, 5, 6, 7]
    assert q["_rule"].to_list() == ["unparseable_date", "unknown_code", "not_after",
                                    "end_not_before_start", "unknown_code; not_nullable"]
    assert q["_column"].to_list()[:3] == ["dob", "sex", "dob"]
    assert "race" in q["_column"][4] and "last_name" in q["_column"][4]
    assert not any(SECRET in r for r in q["_reason"]) and not any(
        SECRET in r for r in q["_rule"])
    assert SECRET in q["_raw"][0]  # the delivered row is kept (restricted) for the steward
    assert result.entities["enrollment"].height + q.height == bronze.height
    assert result.failures["unparseable_date|dob"] == 1


def test_missing_mapped_column_is_a_clear_schema_change(medicaid):
    with pytest.raises(ConformError, match=r"\[medicaid\].*missing from bronze.*'sex'"):
        conform_source(medicaid, medicaid_rows({}).drop("sex"))


def test_empty_mapped_column_is_reported(medicaid):
    result = conform_source(medicaid, medicaid_rows({"phone": ""}, {"phone": ""}))
    assert result.schema_drift["empty_mapped_columns"] == ["phone"]


def test_write_and_reconcile_on_real_delta_tables(medicaid, lake):
    bronze = medicaid_rows({}, {"sex": "Q"}, {"member_id": "WA1"})
    result = conform_source(medicaid, bronze)
    silver.write(lake, result, "run-1")
    silver.write(lake, result, "run-2")  # re-running replaces, never duplicates
    rec = silver.reconcile(lake, "medicaid", bronze.height)
    assert rec == {"bronze_rows": 3, "silver_rows": 2, "quarantined_rows": 1,
                   "reconciles": True}


def test_snapshot_conform_reads_the_latest_delivery_even_after_a_reingest(tmp_path, lake,
                                                                          medicaid):
    import os

    from ids_lakehouse.ingest.bronze import ingest_file
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
        ingest_file(medicaid, landed_file(tmp_path, medicaid, path), lake, "run")
    rows = silver.bronze_to_conform(lake, medicaid)
    assert set(rows["_file"]) == {"medicaid/feb.csv"} and rows.height == 2
