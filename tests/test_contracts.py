"""Each rule family of the silver contracts, on crafted good and bad rows."""

from __future__ import annotations

import datetime as dt

import pandera.errors
import polars as pl
import pytest

from ids_lakehouse.model import load_model, load_model_file
from schemas.silver import contract

GOOD_PERSON = {
    "source": "medicaid", "source_record_id": "WA1", "first_name": "ANN", "middle_name": None,
    "last_name": "LEE", "name_suffix": None, "first_name_raw": "Ann", "last_name_raw": "Lee",
    "name_status": "valid", "address_status": "valid", "zip_raw": "98101",
    "zip_status": "valid",
    "dob": dt.date(1990, 5, 1), "sex": "F", "race": "ASIAN", "hispanic": "N",
    "ssn": "123450001", "ssn_last4": "0001", "ssn_status": "valid", "street": "1 MAIN ST",
    "city": "SEATTLE", "state": "WA", "zip": "98101", "county_fips": "033",
    "phone": "+12065550123", "phone_status": "valid", "email": "ann@example.com",
    "dob_raw": "1990-05-01", "dob_status": "valid", "ssn_raw": "123-45-0001",
    "national_id": None, "national_id_type": None, "national_id_raw": None,
    "national_id_status": "missing", "state_raw": "WA", "state_status": "valid",
    "phone_raw": "206-555-0123", "email_raw": "ann@example.com", "email_status": "valid",
    "_file_sha256": "a" * 64, "_row_number": 2,
}


def person(**changes) -> pl.DataFrame:
    rows = [GOOD_PERSON, {**GOOD_PERSON, "source_record_id": "WA2", "_row_number": 3, **changes}]
    types = {k: (pl.Date if k == "dob" else pl.Int64 if k == "_row_number" else pl.String)
             for k in GOOD_PERSON}
    return pl.DataFrame(rows, schema=types)


def failures(entity: str, df: pl.DataFrame, row_level: bool = False) -> set[tuple[str, str]]:
    try:
        contract(entity, row_level=row_level).validate(df, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        # only the crafted row fails (a duplicate key flags both rows of the pair)
        assert 1 in set(cases["index"].drop_nulls())
        assert set(cases.filter(pl.col("index") == 0)["check"]) <= {
            "multiple_fields_uniqueness"}
        return {(c or "", k) for c, k in cases.select("column", "check").iter_rows()}
    return set()


def test_good_rows_pass():
    assert failures("person_record", person()) == set()


@pytest.mark.parametrize("change,expected", [
    ({"source_record_id": None}, ("source_record_id", "not_nullable")),      # nullability
    ({"first_name": None, "last_name": None, "dob": None, "ssn": None},      # record rule
     ("silver.person_record", "no_identifying_field")),
    ({"sex": "Q"}, ("sex", "code_list:sex")),                                 # code list
    ({"county_fips": "999"}, ("county_fips", "code_list:county_fips")),       # code list (file)
    ({"zip": "98#1"}, ("zip", "pattern")),                                    # pattern
    ({"zip_status": "bogus"}, ("zip_status", "code_list:zip_status")),
    ({"name_status": None}, ("name_status", "not_nullable")),
    ({"ssn": "12345678X"}, ("ssn", "pattern")),
    ({"phone": "2065550123"}, ("phone", "pattern")),
    ({"dob": dt.date(2099, 1, 1)}, ("dob", "not_after")),                    # not in the future
    ({"dob": dt.date(1880, 1, 1)}, ("dob", "not_before")),                   # model minimum
    ({"national_id_type": "passport"}, ("national_id_type", "pattern")),
])
def test_each_rule_family_rejects_its_bad_row(change, expected):
    assert expected in failures("person_record", person(**change))


def test_person_key_must_be_unique():
    df = person(source_record_id="WA1")
    found = failures("person_record", df)
    assert any("unique" in check or "duplicate" in check for _, check in found), found
    assert failures("person_record", df, row_level=True) == set()  # rows before dedup


def enrollment(**changes) -> pl.DataFrame:
    good = {"source": "medicaid", "source_record_id": "WA1", "program": "MEDICAID",
            "start_date": dt.date(2020, 1, 1), "end_date": dt.date(2021, 1, 1),
            "detail": "CHILD", "homeless_flag": None, "_file_sha256": "a" * 64,
            "_row_number": 2}
    types = {k: (pl.Date if k.endswith("_date") else pl.Int64 if k == "_row_number"
                 else pl.String) for k in good}
    return pl.DataFrame([good, {**good, "_row_number": 3, **changes}], schema=types)


def test_enrollment_cross_field_rule():
    assert failures("enrollment", enrollment()) == set()
    found = failures("enrollment", enrollment(end_date=dt.date(2019, 1, 1)))
    assert ("silver.enrollment", "end_not_before_start") in found
    assert ("program", "code_list:program") in failures("enrollment",
                                                        enrollment(program="SNAP"))


def test_contract_columns_carry_classification():
    schema = contract("person_record")
    assert schema.columns["ssn"].metadata["classification"] == "direct_identifier"
    assert schema.columns["dob"].metadata["classification"] == "quasi_identifier"


def test_model_rejects_an_unknown_code_list(tmp_path):
    bad = tmp_path / "model.yaml"
    text = (load_model_file.__module__ and
            __import__("importlib.resources").resources.files("data_model")
            .joinpath("model.yaml").read_text())
    bad.write_text(text.replace("code_list: sex,", "code_list: gender,", 1))
    with pytest.raises(ValueError, match="person_record.fields.sex.*unknown code_list"):
        load_model_file(bad)


def test_every_source_maps_only_model_fields():
    from ids_lakehouse.sources import load_sources

    model = load_model()
    for defn in load_sources().values():
        for entity, fields in defn.mapping.items():
            assert entity in model.entities, (defn.source, entity)
            assert set(fields) <= set(model.entities[entity].fields), (defn.source, entity)


def test_contract_failures_are_counted_never_shown():
    from ids_lakehouse.validation import failure_counts

    counts = failure_counts(contract("person_record"), person(sex="Q", zip="98#1",
                                                              first_name_raw="Zebulon"))
    assert counts == {"code_list:sex|sex": 1, "pattern|zip": 1}
    assert failure_counts(contract("person_record"), person()) == {}
