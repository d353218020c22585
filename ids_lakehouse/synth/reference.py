"""Reference data for the synthetic population, taken from well-kept packages:
name frequencies from Faker's en_US tables (US Census / SSA derived), nicknames from the
`nicknames` dataset, ZIP codes with city and county from `zipcodes`, and county FIPS codes
from the data model's code list."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

STATE = "WA"

# Names with characters outside ASCII, so encodings (cp1252 vs UTF-8) are exercised.
ACCENTED_FIRST = {"F": ["José", "María", "Zoë", "Chloé", "Renée", "Inés"],
                  "M": ["José", "Andrés", "François", "Jürgen", "Ramón", "Zoltán"]}
ACCENTED_LAST = ["Muñoz", "Peña", "Gómez", "Núñez", "Ibáñez", "Müller", "Søren", "Côté"]

# OMB 1997 race categories (codes of the data model) and a rough state distribution.
RACES = np.array(["WHITE", "ASIAN", "BLACK", "AIAN", "NHPI", "MULTI"])
RACE_P = np.array([0.70, 0.10, 0.045, 0.015, 0.01, 0.13])
HISPANIC_P = 0.14


@dataclass(frozen=True)
class Weighted:
    values: np.ndarray
    p: np.ndarray

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(self.values, size=n, p=self.p)


def _weighted(pairs: Iterable[tuple[str, float]]) -> Weighted:
    values, weights = zip(*pairs)
    w = np.asarray(weights, dtype=float)
    return Weighted(np.asarray(values, dtype=object), w / w.sum())


@lru_cache(maxsize=1)
def first_names() -> dict[str, Weighted]:
    from faker.providers.person.en_US import Provider

    return {"F": _weighted(Provider.first_names_female.items()),
            "M": _weighted(Provider.first_names_male.items())}


@lru_cache(maxsize=1)
def last_names() -> Weighted:
    from faker.providers.person.en_US import Provider

    return _weighted(Provider.last_names.items())


@lru_cache(maxsize=1)
def street_suffixes() -> np.ndarray:
    from faker.providers.address.en_US import Provider

    return np.asarray(Provider.street_suffixes, dtype=object)


@lru_cache(maxsize=1)
def nickname_map() -> dict[str, list[str]]:
    """Canonical first name (lower case) -> its common nicknames."""
    from nicknames import NickNamer

    namer = NickNamer()
    out: dict[str, list[str]] = {}
    for table in first_names().values():
        for name in table.values:
            nicks = sorted(n for n in namer.nicknames_of(name.lower()) if len(n) > 1)
            if nicks:
                out[name.lower()] = nicks
    return out


@lru_cache(maxsize=1)
def county_fips() -> dict[str, str]:
    """County name ('King County') -> 3-digit FIPS code."""
    text = resources.files("data_model").joinpath("code_lists/county_fips.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["county_name"]: r["county_fips"] for r in rows}


@dataclass(frozen=True)
class Zips:
    zip: np.ndarray
    city: np.ndarray
    county_fips: np.ndarray
    area_code: np.ndarray


@lru_cache(maxsize=1)
def zips() -> Zips:
    import zipcodes

    fips = county_fips()
    # zipcodes ships py.typed, but its public filter_by wrapper has no annotations
    rows = [z for z in zipcodes.filter_by(state=STATE)  # type: ignore[no-untyped-call]
            if z["zip_code_type"] == "STANDARD" and z["county"] in fips and z["area_codes"]]
    rows.sort(key=lambda z: z["zip_code"])
    return Zips(
        zip=np.asarray([z["zip_code"] for z in rows], dtype=object),
        city=np.asarray([z["city"] for z in rows], dtype=object),
        county_fips=np.asarray([fips[z["county"]] for z in rows], dtype=object),
        area_code=np.asarray([z["area_codes"][0] for z in rows], dtype=object),
    )
