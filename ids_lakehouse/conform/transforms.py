"""Named transforms a source mapping can ask for (`transform: <name>`). Each takes the
delivered values and returns the canonical values and a mask of values it could not read
(those rows are quarantined with the transform's name as the rule)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import polars as pl

from ids_lakehouse.conform.standardise import blank_to_null, clean_text

Result = tuple[pl.Series, pl.Series]
_HMIS_RACE = {"1": "AIAN", "2": "ASIAN", "3": "BLACK", "4": "NHPI", "5": "WHITE"}


def _per_distinct(values: pl.Series, fn: Callable[[str], str | None]) -> Result:
    """Apply a Python parser once per distinct value; a parser raising ValueError marks the
    value unreadable."""
    clean = pl.select(blank_to_null(pl.lit(values))).to_series()
    out, bad = {}, set()
    for v in clean.drop_nulls().unique().to_list():
        try:
            out[v] = fn(v)
        except ValueError:
            bad.add(v)
    result = clean.replace_strict(out, default=None, return_dtype=pl.String)
    return result, clean.is_in(list(bad)).fill_null(False)


def hmis_race(values: pl.Series) -> Result:
    def parse(v: str) -> str | None:
        codes = {c.strip() for c in v.split(";")} - {"6", ""}
        if not codes <= _HMIS_RACE.keys():
            raise ValueError("unknown HMIS race code")
        races = {_HMIS_RACE[c] for c in codes}
        return None if not races else ("MULTI" if len(races) > 1 else races.pop())

    return _per_distinct(values, parse)


def hmis_hispanic(values: pl.Series) -> Result:
    return _per_distinct(values, lambda v: "Y" if "6" in v.split(";") else "N")


def school_hispanic(values: pl.Series) -> Result:
    return _per_distinct(values, lambda v: "Y" if v == "HI" else "N")


def county_from_state_county(values: pl.Series, state_fips: str = "53") -> Result:
    def parse(v: str) -> str | None:
        if len(v) != 5 or not v.isdigit():
            raise ValueError("not a 5-digit state+county FIPS code")
        return v[2:] if v.startswith(state_fips) else None

    return _per_distinct(values, parse)


# One delivered value feeds several fields ("LAST, First Middle" -> first, middle and last;
# a one-line address -> street, city and ZIP): each distinct value is parsed once and the
# parts are shared between those fields' transforms.
PARSE_CACHE = 200_000


@lru_cache(maxsize=PARSE_CACHE)
def _human_name(v: str) -> dict[str, str]:
    from nameparser import HumanName

    name = HumanName(v)
    return {"first": name.first, "middle": name.middle, "last": name.last}


@lru_cache(maxsize=PARSE_CACHE)
def _address(v: str) -> dict[str, str] | None:
    """usaddress's labelled parts, or None when the address is ambiguous."""
    import usaddress  # type: ignore[import-untyped]  # usaddress ships no type information

    try:
        return dict(usaddress.tag(v)[0])
    except usaddress.RepeatedLabelError:
        return None


def _name_part(part: str) -> Callable[[pl.Series], Result]:
    def parse(v: str) -> str | None:
        v = clean_text(v)  # a zero-width character must not split or join name parts
        if "," not in v:
            raise ValueError("not 'LAST, First Middle'")
        return _human_name(v)[part] or None

    return lambda values: _per_distinct(values, parse)


def _address_part(labels: tuple[str, ...]) -> Callable[[pl.Series], Result]:
    def parse(v: str) -> str | None:
        tagged = _address(clean_text(v))
        if tagged is None:
            raise ValueError("ambiguous address")
        return " ".join(tagged[k] for k in labels if k in tagged) or None

    return lambda values: _per_distinct(values, parse)


STREET_LABELS = ("AddressNumber", "StreetNamePreDirectional", "StreetName",
                 "StreetNamePostType", "StreetNamePostDirectional", "OccupancyType",
                 "OccupancyIdentifier")

TRANSFORMS: dict[str, Callable[[pl.Series], Result]] = {
    "hmis_race": hmis_race,
    "hmis_hispanic": hmis_hispanic,
    "school_hispanic": school_hispanic,
    "county_from_state_county": county_from_state_county,
    "first_from_last_comma_first": _name_part("first"),
    "middle_from_last_comma_first": _name_part("middle"),
    "last_from_last_comma_first": _name_part("last"),
    "street_from_one_line": _address_part(STREET_LABELS),
    "city_from_one_line": _address_part(("PlaceName",)),
    "zip_from_one_line": _address_part(("ZipCode",)),
}
