from __future__ import annotations

import polars as pl
import pytest

from ids_lakehouse.conform import standardise as std
from ids_lakehouse.conform import transforms as tf


def run(expr, values):
    return pl.select(expr(pl.lit(pl.Series(values, dtype=pl.String)))).to_series().to_list()


def test_names_lose_accents_case_and_punctuation():
    out = run(std.name, ["José", "o'neil", "  Mary-Jane  ", "Zoë.", "", None, "Núñez Jr"])
    assert out == ["JOSE", "ONEIL", "MARY-JANE", "ZOE", None, None, "NUNEZ JR"]


def test_suffix_is_split_off():
    last = pl.Series(["NUNEZ JR", "SMITH III", "LEE"])
    assert pl.select(std.suffix(pl.lit(last))).to_series().to_list() == ["JR", "III", None]
    assert pl.select(std.without_suffix(pl.lit(last))).to_series().to_list() == [
        "NUNEZ", "SMITH", "LEE"]


@pytest.mark.parametrize("raw,ssn,last4,status", [
    ("123-45-6789", None, None, "invalid_known"),
    ("553-95-0378", "553950378", "0378", "valid"),
    ("553950378", "553950378", "0378", "valid"),
    ("XXXXX0378", None, "0378", "partial"),
    ("000-12-3456", None, None, "invalid_area"),
    ("666123456", None, None, "invalid_area"),
    ("912345678", None, None, "invalid_area"),
    ("553001234", None, None, "invalid_group"),
    ("553120000", None, None, "invalid_serial"),
    ("5539503", None, None, "invalid_format"),
    ("", None, None, "missing"),
])
def test_ssn_invalid_numbers_are_nulled_with_a_reason(raw, ssn, last4, status):
    out = pl.select(std.ssn_frame(pl.lit(raw, dtype=pl.String))).row(0)
    assert out == (ssn, last4, status)


def test_phones_become_e164_or_null_with_status():
    out = std.phones(pl.Series(["360-687-0928", "(123) 555 0100", "123", None, "3606870928"]))
    assert out["phone"].to_list() == ["+13606870928", None, None, None, "+13606870928"]
    assert out["phone_status"].to_list() == ["valid", "invalid", "invalid", "missing", "valid"]


def test_zip_email_and_county_lookup():
    assert run(std.zip5, ["98101", "98101-1234", "981011234", "9810", "abcde"]) == [
        "98101", "98101", "98101", None, None]
    assert run(std.email, [" Ann@Example.COM ", "not-an-email"]) == ["ann@example.com", None]
    assert std.zip_county()["98101"] == "033"  # Seattle is in King County


def test_transforms_report_what_they_cannot_read():
    values, bad = tf.hmis_race(pl.Series(["5", "1;5", "5;6", "6", "9", ""]))
    assert values.to_list() == ["WHITE", "MULTI", "WHITE", None, None, None]
    assert bad.to_list() == [False, False, False, False, True, False]
    first, bad = tf.TRANSFORMS["first_from_last_comma_first"](
        pl.Series(["CÔTÉ, John Paul", "no comma here"]))
    assert first.to_list()[0] == "John" and bad.to_list() == [False, True]
    city, _ = tf.TRANSFORMS["city_from_one_line"](
        pl.Series(["1234 Smith Avenue Apt 12, Seattle WA 98101"]))
    assert city.to_list() == ["Seattle"]


@pytest.mark.parametrize("raw,zip_,status", [
    ("98101", "98101", "valid"),
    (" 98101-1234 ", "98101", "valid"),
    ("981011234", "98101", "valid"),
    ("9810", None, "invalid"),        # a 4-digit ZIP (e.g. a lost leading zero): never padded
    ("abcde", None, "invalid"),
    ("98101-12", None, "invalid"),
    ("00000", None, "invalid"),
    ("", None, "missing"),
    (None, None, "missing"),
])
def test_zip_invalid_values_are_nulled_with_a_status_and_kept_raw(raw, zip_, status):
    out = pl.select(std.zip_frame(pl.lit(raw, dtype=pl.String))).row(0, named=True)
    assert out == {"zip": zip_, "zip_raw": raw, "zip_status": status}


def test_text_statuses_and_the_most_severe_of_several():
    raw = pl.Series(["Ann", "\u0405mith", "Иванов", "", None], dtype=pl.String)
    out = pl.select(std.text_status(pl.lit(raw), std.name(pl.lit(raw)))).to_series()
    assert out.to_list() == ["valid", "transliterated", "unmapped", "missing", "missing"]
    frame = pl.DataFrame({"a": ["valid", "valid", "missing", "missing", "unmapped"],
                          "b": ["transliterated", "missing", "missing", "valid", "valid"]})
    worst = frame.select(std.worst_status(pl.col("a"), pl.col("b"))).to_series()
    assert worst.to_list() == ["transliterated", "valid", "missing", "valid", "unmapped"]
