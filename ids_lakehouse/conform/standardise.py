"""Standardisation of identifying fields, vectorised in polars where a rule is simple and
delegated to well-kept libraries where it is not (phonenumbers for phones, nameparser and
usaddress in transforms)."""

from __future__ import annotations

from functools import lru_cache

import polars as pl

SUFFIXES = ("JR", "SR", "II", "III", "IV")
_SUFFIX_RE = r"\s+(JR|SR|II|III|IV)$"
# SSNs that were never issued or are known to be invalid (advertising, test numbers).
KNOWN_INVALID_SSNS = ["078051120", "219099999", "123456789", "111111111", "999999999"]


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    stripped = expr.cast(pl.String).str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped)


def name(expr: pl.Expr) -> pl.Expr:
    """Upper case, accents and punctuation removed, hyphens kept, spaces collapsed."""
    out = (expr.str.normalize("NFKD").str.replace_all(r"\p{M}", "").str.to_uppercase()
           .str.replace_all(r"[’'`.]", "").str.replace_all(r"[^A-Z\- ]", " ")
           .str.replace_all(r"\s+", " ").str.strip_chars())
    return pl.when(out == "").then(None).otherwise(out)


def street(expr: pl.Expr) -> pl.Expr:
    """Upper case, accents and punctuation removed; house and unit numbers kept."""
    out = (expr.str.normalize("NFKD").str.replace_all(r"\p{M}", "").str.to_uppercase()
           .str.replace_all(r"[.,'’]", "").str.replace_all(r"[^A-Z0-9#\- ]", " ")
           .str.replace_all(r"\s+", " ").str.strip_chars())
    return pl.when(out == "").then(None).otherwise(out)


def suffix(last: pl.Expr) -> pl.Expr:
    return last.str.extract(_SUFFIX_RE, 1)


def without_suffix(last: pl.Expr) -> pl.Expr:
    return last.str.replace(_SUFFIX_RE, "")


def ssn_frame(raw: pl.Expr) -> list[pl.Expr]:
    """ssn (9 digits or null), ssn_last4 and ssn_status: invalid numbers are nulled with
    the reason, never guessed."""
    s = raw.str.strip_chars()
    digits = s.str.replace_all(r"[\s-]", "")
    partial = digits.str.contains(r"^[Xx*]{5}[0-9]{4}$")
    nine = digits.str.contains(r"^[0-9]{9}$")
    area, group, serial = digits.str.slice(0, 3), digits.str.slice(3, 2), digits.str.slice(5, 4)
    status = (pl.when(s.is_null() | (s == "")).then(pl.lit("missing"))
              .when(partial).then(pl.lit("partial"))
              .when(~nine).then(pl.lit("invalid_format"))
              .when((area == "000") | (area == "666") | area.str.starts_with("9"))
              .then(pl.lit("invalid_area"))
              .when(group == "00").then(pl.lit("invalid_group"))
              .when(serial == "0000").then(pl.lit("invalid_serial"))
              .when(digits.is_in(KNOWN_INVALID_SSNS)).then(pl.lit("invalid_known"))
              .otherwise(pl.lit("valid")))
    return [pl.when(status == "valid").then(digits).otherwise(None).alias("ssn"),
            pl.when(status.is_in(["valid", "partial"])).then(digits.str.slice(5, 4))
            .otherwise(None).alias("ssn_last4"),
            status.alias("ssn_status")]


def zip5(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.extract(r"^([0-9]{5})(?:-?[0-9]{4})?$", 1)


def _e164(number: str) -> str | None:
    import phonenumbers

    try:
        parsed = phonenumbers.parse(number, "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phones(values: pl.Series) -> pl.DataFrame:
    """E.164 phone and status for each value, parsing each distinct value once."""
    distinct = values.drop_nulls().unique()
    table = pl.DataFrame({"_in": distinct,
                          "_e164": [_e164(v) for v in distinct.to_list()]},
                         schema={"_in": pl.String, "_e164": pl.String})
    joined = pl.DataFrame({"_in": values}).join(table, on="_in", how="left",
                                                maintain_order="left")
    status = (pl.when(pl.col("_in").is_null()).then(pl.lit("missing"))
              .when(pl.col("_e164").is_null()).then(pl.lit("invalid"))
              .otherwise(pl.lit("valid")))
    return joined.select(pl.col("_e164").alias("phone"), status.alias("phone_status"))


def email(expr: pl.Expr) -> pl.Expr:
    e = expr.str.strip_chars().str.to_lowercase()
    return pl.when(e.str.contains(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")).then(e).otherwise(None)


@lru_cache(maxsize=1)
def zip_county() -> dict[str, str]:
    """ZIP -> county FIPS for the state, from the `zipcodes` package."""
    import csv
    from importlib import resources

    import zipcodes

    text = resources.files("data_model").joinpath("code_lists/county_fips.csv").read_text()
    rows = csv.DictReader(x for x in text.splitlines() if not x.startswith("#"))
    fips_by_name = {r["county_name"]: r["county_fips"] for r in rows}
    return {z["zip_code"]: fips_by_name[z["county"]]
            for z in zipcodes.filter_by(state="WA") if z["county"] in fips_by_name}
