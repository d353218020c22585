"""Six agencies that each see an overlapping subset of the population, each with its own
schema, column names, code lists, date format, file format and encoding.

A *client* is one agency record of a person (its `source_record_id`); a person may be two
clients of one agency (a within-source duplicate). A client may have several rows (spells)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ids_lakehouse.synth import corrupt
from ids_lakehouse.synth.corrupt import ErrorRates
from ids_lakehouse.synth.population import AS_OF

WINDOW_START = dt.date(2019, 1, 1)


@dataclass(frozen=True)
class AgencySpec:
    source: str
    fmt: str                      # csv | parquet | jsonl | fixed_width | xlsx
    file_name: str
    eligible: Callable[[pl.DataFrame], np.ndarray]
    rate: float                   # inclusion probability for eligible people
    homeless_rate: float          # the same, for people in homeless households
    duplicate_rate: float
    errors: ErrorRates
    rows: Callable[[dict[str, Any], np.random.Generator], list[dict[str, Any]]]
    encoding: str = "utf-8"
    widths: tuple[tuple[str, int], ...] = field(default=())  # fixed-width layout


def _age(dob: dt.date, on: dt.date = AS_OF) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def _ages(df: pl.DataFrame) -> np.ndarray:
    return np.array([_age(d) for d in df["dob"].to_list()])


def _spells(rng: np.random.Generator, max_spells: int = 3, start: dt.date = WINDOW_START,
            born: dt.date | None = None) -> list[tuple[dt.date, dt.date | None]]:
    """Enrollment spells inside the window, never before the person was born."""
    out: list[tuple[dt.date, dt.date | None]] = []
    if born is not None and born > start:
        start = born
    span = (AS_OF - start).days
    cursor = start + dt.timedelta(days=int(rng.integers(0, max(span // 2, 1))))
    for _ in range(int(rng.integers(1, max_spells + 1))):
        if cursor >= AS_OF:
            break
        length = int(rng.integers(30, 900))
        end = cursor + dt.timedelta(days=length)
        if end >= AS_OF or rng.random() < 0.1:
            out.append((cursor, None))
            break
        out.append((cursor, end))
        cursor = end + dt.timedelta(days=int(rng.integers(30, 400)))
    return out


def demographics(p: dict[str, Any], rng: np.random.Generator, e: ErrorRates) -> dict[str, Any]:
    """A person as one agency recorded them: the clean values with that agency's errors."""
    first, middle = p["first_name"], p["middle_name"]
    last = p["birth_last_name"] if (p["birth_last_name"] != p["last_name"]
                                    and rng.random() < e.maiden) else p["last_name"]
    if rng.random() < e.nickname:
        first = corrupt.nickname(rng, first)
    if rng.random() < e.typo:
        first = corrupt.typo(rng, first)
    if rng.random() < e.typo:
        last = corrupt.typo(rng, last)
    if rng.random() < e.swap_names:
        first, last = last, first
    dob = p["dob"]
    if rng.random() < e.transpose_dob:
        dob = corrupt.transpose(dob)
    if rng.random() < e.missing_dob:
        dob = None
    elif rng.random() < e.impossible_dob:
        dob = dt.date(AS_OF.year + 1 + int(rng.integers(0, 50)), dob.month, min(dob.day, 28))
    ssn = p["ssn"]
    if rng.random() < e.ssn_typo:
        ssn = corrupt.ssn_typo(rng, ssn)
    if rng.random() < e.missing_ssn:
        ssn = None
    old = p["moved"] and rng.random() < e.moved
    prefix = "prior_" if old else ""
    return {
        "first": first, "middle": middle, "last": last, "dob": dob,
        "sex": None if rng.random() < e.missing_sex else p["sex"], "ssn": ssn,
        "street": p[prefix + "street"], "city": p[prefix + "city"], "zip": p[prefix + "zip"],
        "county_fips": p[prefix + "county_fips"],
        "phone": p["mobile"] or p["landline"], "email": p["email"],
        "race": p["race"], "hispanic": p["hispanic"],
    }


def _iso(d: dt.date | None) -> str:
    return d.isoformat() if d else ""


def _mdy(d: dt.date | None) -> str:
    return d.strftime("%m/%d/%Y") if d else ""


def _ymd(d: dt.date | None) -> str:
    return d.strftime("%Y%m%d") if d else ""


def _dash_phone(p: str | None) -> str:
    return f"{p[:3]}-{p[3:6]}-{p[6:]}" if p else ""


# --- Medicaid enrollment: CSV, UTF-8, ISO dates ----------------------------------------
_MEDICAID_RACE = {"WHITE": "1", "BLACK": "2", "AIAN": "3", "ASIAN": "4", "NHPI": "5",
                  "MULTI": "6"}


def _medicaid_rows(c: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    d = c["demo"]
    ssn = d["ssn"]
    age = _age(c["person"]["dob"])
    aid = "CHILD" if age < 19 else ("ABD" if age >= 65 else str(rng.choice(["MAGI-ADULT",
                                                                            "PREG", "ABD"])))
    return [{
        "member_id": c["record_id"], "first_name": d["first"], "middle_name": d["middle"],
        "last_name": d["last"], "date_of_birth": _iso(d["dob"]),
        "sex": d["sex"] or "U", "ssn": f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}" if ssn else "",
        "race_code": _MEDICAID_RACE[d["race"]], "hispanic": "Y" if d["hispanic"] else "N",
        "address_line1": d["street"], "city": d["city"], "state": "WA", "zip": d["zip"],
        "county_code": d["county_fips"], "phone": _dash_phone(d["phone"]),
        "eligibility_start": _iso(s), "eligibility_end": _iso(e), "aid_category": aid,
    } for s, e in _spells(rng, born=c["person"]["dob"])]


# --- HMIS homelessness services: CSV, cp1252, MM/DD/YYYY, HMIS-style names ------------
_HMIS_RACE = {"AIAN": "1", "ASIAN": "2", "BLACK": "3", "NHPI": "4", "WHITE": "5"}


def _hmis_rows(c: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    d = c["demo"]
    ssn = d["ssn"]
    if ssn and rng.random() < 0.1:
        ssn, quality = "XXXXX" + ssn[5:], "2"
    else:
        quality = "1" if ssn else "99"
    race = (_HMIS_RACE[d["race"]] if d["race"] != "MULTI"
            else ";".join(sorted(rng.choice(list(_HMIS_RACE.values()), 2, replace=False))))
    if d["hispanic"]:
        race += ";6"
    gender = {"F": "0", "M": "1"}.get(d["sex"], "99")
    return [{
        "PersonalID": c["record_id"], "FirstName": d["first"], "MiddleName": d["middle"],
        "LastName": d["last"], "NameSuffix": "", "SSN": ssn or "", "SSNDataQuality": quality,
        "DOB": _mdy(d["dob"]), "Gender": gender, "RaceEthnicity": race,
        "ProjectType": str(rng.choice(["0", "1", "2", "4", "13"])),
        "EntryDate": _mdy(s), "ExitDate": _mdy(e), "LastPermanentZIP": d["zip"],
        "Phone": d["phone"] or "",
    } for s, e in _spells(rng, max_spells=2, start=dt.date(2021, 1, 1),
                          born=c["person"]["dob"])]


# --- School enrollment with McKinney-Vento flag: JSON lines ----------------------------
_SCHOOL_RACE = {"WHITE": "WH", "BLACK": "BL", "AIAN": "AM", "ASIAN": "AS", "NHPI": "PI",
                "MULTI": "TR"}


def _school_rows(c: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    d, p = c["demo"], c["person"]
    rows = []
    mv = p["homeless"] and rng.random() < 0.6 or rng.random() < 0.003
    district = f"{rng.integers(17000, 39300):05d}"
    for year in range(2019, 2026):
        age = _age(p["dob"], dt.date(year, 9, 1))
        if not 5 <= age <= 18:
            continue
        grade = "K" if age == 5 else (f"{age - 5:02d}" if age <= 17 else "12")
        rows.append({
            "student_id": c["record_id"], "legal_first_name": d["first"],
            "legal_last_name": d["last"], "middle_initial": d["middle"][:1],
            "birth_date": _ymd(d["dob"]), "gender": d["sex"] or "X",
            "race_ethnicity": "HI" if d["hispanic"] else _SCHOOL_RACE[d["race"]],
            "school_year": f"{year}-{year + 1}", "district_code": district, "grade": grade,
            "enroll_date": _iso(dt.date(year, 9, 1)), "exit_date": _iso(dt.date(year + 1, 6, 15)),
            "mckinney_vento": bool(mv), "home_zip": d["zip"],
        })
    return rows


# --- Child-care subsidy: Parquet, typed columns ---------------------------------------
_CC_RACE = {"WHITE": "White", "BLACK": "Black or African American",
            "AIAN": "American Indian or Alaska Native", "ASIAN": "Asian",
            "NHPI": "Native Hawaiian or Other Pacific Islander", "MULTI": "Two or more races"}


def _childcare_rows(c: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    d, mother = c["demo"], c["mother"]
    return [{
        "child_id": int(c["record_id"]), "child_first": d["first"], "child_last": d["last"],
        "child_dob": d["dob"], "child_sex": {"F": "Female", "M": "Male"}.get(d["sex"]),
        "race": _CC_RACE[d["race"]],
        "ethnicity": "Hispanic or Latino" if d["hispanic"] else "Not Hispanic or Latino",
        "parent_first": mother["first_name"] if mother else None,
        "parent_last": mother["last_name"] if mother else None,
        "parent_phone": d["phone"], "home_zip": d["zip"], "county_fips": "53" + d["county_fips"],
        "subsidy_start": s, "subsidy_end": e,
        "provider_type": str(rng.choice(["CENTER", "FAMILY_HOME", "FFN"])),
    } for s, e in _spells(rng, max_spells=2, born=c["person"]["dob"])]


# --- Vital records births: fixed width -------------------------------------------------
BIRTH_WIDTHS = (("cert_number", 11), ("child_first", 15), ("child_middle", 15),
                ("child_last", 20), ("sex", 1), ("birth_date", 8), ("birth_county", 3),
                ("mother_first", 15), ("mother_maiden", 20), ("mother_dob", 8),
                ("birth_weight_g", 4))
def _birth_rows(c: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    d, p, mother = c["demo"], c["person"], c["mother"]
    return [{
        "cert_number": c["record_id"], "child_first": d["first"], "child_middle": d["middle"],
        "child_last": d["last"], "sex": d["sex"] or "U", "birth_date": _ymd(p["dob"]),
        "birth_county": d["county_fips"],
        "mother_first": mother["first_name"] if mother else "",
        "mother_maiden": mother["birth_last_name"] if mother else "",
        "mother_dob": _ymd(mother["dob"]) if mother else "",
        "birth_weight_g": str(int(rng.normal(3400, 500))),
    }]


# --- Traveller contact details from an immigration agency: Excel ----------------------
def _traveller_rows(c: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    d = c["demo"]
    arrival = AS_OF - dt.timedelta(days=int(rng.integers(1, 120)))
    name = f"{d['last'].upper()}, {d['first']}" + (f" {d['middle']}" if d["middle"] else "")
    return [{
        "traveller_ref": c["record_id"], "full_name": name,
        "date_of_birth": d["dob"].strftime("%d/%m/%Y") if d["dob"] else "",
        "nationality": "USA", "phone": f"+1{d['phone']}" if d["phone"] else "",
        "email": d["email"] or "", "arrival_date": arrival,
        "port_of_entry": str(rng.choice(["SEA", "GEG", "BLI", "PSC"])),
        "flight_no": f"{rng.choice(['AS', 'DL', 'UA', 'AA'])}{rng.integers(100, 9999)}",
        "destination_address": f"{d['street']}, {d['city']} WA {d['zip']}",
    }]


def _everyone(df: pl.DataFrame) -> np.ndarray:
    return np.ones(df.height, dtype=bool)


AGENCIES: tuple[AgencySpec, ...] = (
    AgencySpec("medicaid", "csv", "medicaid_enrollment_2025-12-31.csv", _everyone,
               rate=0.22, homeless_rate=0.85, duplicate_rate=0.02,
               errors=ErrorRates(missing_ssn=0.03, impossible_dob=0.003), rows=_medicaid_rows),
    AgencySpec("hmis", "csv", "hmis_client_2025-12-31.csv", _everyone,
               rate=0.004, homeless_rate=0.75, duplicate_rate=0.05,
               errors=ErrorRates(typo=0.05, nickname=0.15, missing_ssn=0.2, missing_dob=0.04,
                                 transpose_dob=0.03, swap_names=0.02, moved=0.8,
                                 impossible_dob=0.01),
               rows=_hmis_rows, encoding="cp1252"),
    AgencySpec("schools", "jsonl", "school_enrollment_2025-12-31.jsonl",
               lambda df: (_ages(df) >= 6) & (_ages(df) <= 24),
               rate=0.9, homeless_rate=0.9, duplicate_rate=0.01,
               errors=ErrorRates(nickname=0.02, missing_ssn=1.0, maiden=0.0),
               rows=_school_rows),
    AgencySpec("childcare", "parquet", "childcare_subsidy_2025-12-31.parquet",
               lambda df: _ages(df) <= 12,
               rate=0.15, homeless_rate=0.4, duplicate_rate=0.02,
               errors=ErrorRates(missing_ssn=1.0, maiden=0.0), rows=_childcare_rows),
    AgencySpec("births", "fixed_width", "birth_records_2025-12-31.txt",
               lambda df: df["born_in_state"].to_numpy() & (_ages(df) <= 35),
               rate=0.97, homeless_rate=0.97, duplicate_rate=0.002,
               errors=ErrorRates(typo=0.005, nickname=0.0, swap_names=0.0, transpose_dob=0.0,
                                 missing_dob=0.0, missing_ssn=1.0, ssn_typo=0.0, moved=1.0,
                                 maiden=0.0, missing_sex=0.0),
               rows=_birth_rows, encoding="latin-1", widths=BIRTH_WIDTHS),
    AgencySpec("travellers", "xlsx", "traveller_contacts_2025-12-31.xlsx",
               lambda df: df["adult"].to_numpy(),
               rate=0.02, homeless_rate=0.0, duplicate_rate=0.01,
               errors=ErrorRates(missing_ssn=1.0, maiden=0.1), rows=_traveller_rows),
)
