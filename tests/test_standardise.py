from __future__ import annotations

import polars as pl
import pytest

from ids_lakehouse.conform import standardise as std
from ids_lakehouse.conform import transforms as tf
from ids_lakehouse.sources import US_ZIP


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
    assert out == (ssn, last4, raw, status)


def test_the_ssn_of_a_frame_reads_as_the_ssn_expression():
    """`with_ssn` (conform: digits and status computed once each) gives `ssn_frame`'s
    columns, value for value, on the cases above, separators, full-width digits, nulls
    and random numbers."""
    import random

    rng = random.Random(7)
    raw = ["123-45-6789", "553-95-0378", "XXXXX0378", "***** 0378", "000-12-3456",
           "666123456", "912345678", "553001234", "553120000", "5539503", "", " ", None,
           " 553 95 0378 ", "５５３-９５-０３７８", "553--95--0378", "55395037８", "abc"]
    raw += [f"{rng.randint(0, 999):03d}{rng.choice(['-', ' ', ''])}{rng.randint(0, 99):02d}"
            f"{rng.choice(['-', ''])}{rng.randint(0, 9999):04d}" for _ in range(2_000)]
    frame = pl.DataFrame({"ssn": raw}, schema={"ssn": pl.String}).with_columns(
        std.unicode_text(pl.col("ssn")).alias("_fold_ssn"))
    expected = frame.select(std.ssn_frame(pl.col("ssn")))
    got = std.with_ssn(frame).select(expected.columns)
    assert got.equals(expected)
    assert set(expected["ssn_status"]) >= {"valid", "partial", "missing", "invalid_format",
                                            "invalid_area", "invalid_group", "invalid_known"}


def test_phones_become_e164_or_null_with_status_and_keep_what_was_delivered():
    delivered = ["360-687-0928", "(123) 555 0100", "123", None, "3606870928",
                 "(206) 123-4567 x12", " "]
    out = std.phones(pl.Series(delivered))
    # 206-123-4567 is the right length but its exchange is never assigned: kept as `possible`.
    assert out["phone"].to_list() == ["+13606870928", None, None, None, "+13606870928",
                                      "+12061234567", None]
    assert out["phone_status"].to_list() == ["valid", "invalid", "invalid", "missing",
                                             "valid", "possible", "missing"]
    assert out["phone_raw"].to_list() == [*delivered[:6], None]


def test_phones_are_read_in_the_sources_country():
    out = std.phones(pl.Series(["02 9374 4000", "+1 360 687 0928", "0412 345 678"]), "AU")
    assert out["phone"].to_list() == ["+61293744000", "+13606870928", "+61412345678"]
    assert out["phone_status"].to_list() == ["valid", "valid", "valid"]


def test_email_and_county_lookup():
    out = pl.select(std.email_frame(pl.lit(pl.Series([" Ann@Example.COM ", "not-an-email",
                                                       None]))))
    assert out.rows() == [("ann@example.com", " Ann@Example.COM ", "valid"),
                          (None, "not-an-email", "invalid"), (None, None, "missing")]
    assert std.zip_county()["98101"] == "033"  # Seattle is in King County


@pytest.mark.parametrize("pattern,raw,code,status", [
    (r"[0-9]{4}", " 2000 ", "2000", "valid"),
    (r"[0-9]{4}", "20000", None, "invalid"),       # matched against the whole value
    (r"[0-9]{4}", "0000", None, "invalid"),
    (r"[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}", "sw1a   1aa", "SW1A 1AA", "valid"),
    (r"([0-9]{5})(?:-?[0-9]{4})?", "98101-1234", "98101", "valid"),
])
def test_postcodes_follow_the_sources_declared_pattern(pattern, raw, code, status):
    out = pl.select(std.postcode_frame(pl.lit(raw, dtype=pl.String), pattern)).row(0)
    assert out == (code, raw, status)


def test_states_and_national_ids_are_nulled_only_with_a_status_and_kept_raw():
    states = pl.select(std.state_frame(pl.lit(pl.Series(["nsw", " Vic", "XX", None])),
                                       ["NSW", "VIC"]))
    assert states.rows() == [("NSW", "nsw", "valid"), ("VIC", " Vic", "valid"),
                             (None, "XX", "invalid"), (None, None, "missing")]
    ids = pl.select(std.national_id_frame(pl.lit(pl.Series(
        ["523 4167", "12-3", None, "0000000", "5234167.0", "9.999999"])),
        "FEBRL_SSID", r"[0-9]{7}"))
    assert ids.rows() == [("5234167", "FEBRL_SSID", "523 4167", "valid"),
                          (None, None, "12-3", "invalid"), (None, None, None, "missing"),
                          (None, None, "0000000", "invalid"),      # a placeholder
                          (None, None, "5234167.0", "invalid"),    # a float rendering
                          (None, None, "9.999999", "invalid")]     # a placeholder


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
    out = pl.select(std.postcode_frame(pl.lit(raw, dtype=pl.String), US_ZIP)).row(0, named=True)
    assert out == {"zip": zip_, "zip_raw": raw, "zip_status": status}


def test_text_statuses_and_the_most_severe_of_several():
    raw = pl.Series(["Ann", "\u0405mith", "Иванов", "", None], dtype=pl.String)
    out = pl.select(std.text_status(pl.lit(raw), std.name(pl.lit(raw)))).to_series()
    assert out.to_list() == ["valid", "transliterated", "unmapped", "missing", "missing"]
    frame = pl.DataFrame({"a": ["valid", "valid", "missing", "missing", "unmapped"],
                          "b": ["transliterated", "missing", "missing", "valid", "valid"]})
    worst = frame.select(std.worst_status(pl.col("a"), pl.col("b"))).to_series()
    assert worst.to_list() == ["transliterated", "valid", "missing", "valid", "unmapped"]


def test_digits_of_other_widths_and_scripts_are_digits():
    assert pl.select(std.ssn_frame(pl.lit("５５３-９５-０３７８", dtype=pl.String))).row(0)[0] \
        == "553950378"
    zips = pl.select(std.postcode_frame(pl.lit("２０００", dtype=pl.String), "[0-9]{4}")).row(0)
    assert zips[0] == "2000" and zips[1] == "２０００"
    out = std.phones(pl.Series(["٠٢ ٩٣٧٤ ٤٠٠٠"]), "AU")            # Arabic-Indic digits
    assert out["phone"].to_list() == ["+61293744000"]


def test_runs_of_digits_are_placeholders_but_short_or_padded_ids_are_not():
    ids = pl.select(std.national_id_frame(pl.lit(pl.Series(
        ["1234567890", "98765-43210", "0012345678", "345"])), "X_ID", r"[0-9]{3,11}"))
    assert ids["national_id"].to_list() == [None, None, "0012345678", "345"]


def test_the_north_american_fast_path_decides_as_libphonenumber_does():
    """30,000 numbers written the common ways (US, Canadian, Caribbean, toll-free and
    premium area codes, exchanges and area codes starting 0 or 1, placeholders): the
    Polars fast path, where it decides, gives libphonenumber's E.164 and status."""
    import random

    rng = random.Random(5)
    shapes = ["{a}{e}{l}", "({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "+1 {a} {e} {l}",
              "1-{a}-{e}-{l}", "+1({a}){e}{l}", " {a} {e} {l} ", "1 ({a}) {e}-{l}",
              "+1{a}{e}{l}", "({a}){e}-{l}", "{a} {e}{l}", "+1 ({a}) {e}.{l}"]
    areas = ["268", "242", "809", "876", "787", "340", "671", "684", "416", "604", "800",
             "888", "900", "555", "311", "911", "456", "500", "700", "206", "360"]
    values = []
    for _ in range(30_000):
        kind = rng.random()
        if kind < 0.5:
            n = f"{rng.randint(200, 999)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        elif kind < 0.8:
            n = f"{rng.randint(0, 999):03d}{rng.randint(0, 999):03d}{rng.randint(0, 9999):04d}"
        else:
            n = f"{rng.choice(areas)}{rng.randint(0, 999):03d}{rng.randint(0, 9999):04d}"
        values.append(rng.choice(shapes).format(a=n[:3], e=n[3:6], l=n[6:]))
    values += ["2222222222", "(555) 555-5555", "999-999-9999", "000-000-0001"]
    decided = std._nanp(pl.Series(values).unique())
    assert decided.height > 0.9 * len(set(values))
    expected = {v: std._e164(std.fold_text(v), "US") for v in decided["_in"]}
    got = {v: (e, s) for v, e, s in decided.iter_rows()}
    assert got == expected
    assert {s for _, s in got.values()} == {"valid", "possible", "invalid"}
    # And through phones(), every value (fast or not) as libphonenumber alone decides.
    out = std.phones(pl.Series(values[:3000]))
    assert list(zip(out["phone"], out["phone_status"], strict=True)) == [
        std._e164(std.fold_text(v), "US") for v in values[:3000]]
