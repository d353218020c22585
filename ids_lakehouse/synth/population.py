"""A synthetic population built household by household, so that the hard cases of record
linkage are present: people sharing an address, surname and landline; twins; married-name
changes; people who moved."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ids_lakehouse.synth import reference as ref

AS_OF = dt.date(2025, 12, 31)
HOUSEHOLD_SIZES = np.arange(1, 7)
HOUSEHOLD_P = np.array([0.28, 0.34, 0.15, 0.13, 0.06, 0.04])

# SSNs: area 001-899 except 666, group 01-99, serial 0001-9999. A person's global index is
# mapped through an affine permutation of that space, so SSNs are valid and never collide.
_AREAS = np.array([a for a in range(1, 900) if a != 666])
_SSN_SPACE = len(_AREAS) * 99 * 9999
_SSN_MULT = 2_654_435_761  # coprime with _SSN_SPACE (checked at import)
assert np.gcd(_SSN_MULT, _SSN_SPACE) == 1


def ssn_for(index: np.ndarray) -> np.ndarray:
    k = (index.astype(np.int64) * _SSN_MULT + 12_345) % _SSN_SPACE
    area = _AREAS[k // (99 * 9999)]
    group = (k // 9999) % 99 + 1
    serial = k % 9999 + 1
    return np.asarray([f"{a:03d}{g:02d}{s:04d}" for a, g, s in zip(area, group, serial)],
                      dtype=object)


def _names(rng: np.random.Generator, sex: np.ndarray) -> np.ndarray:
    out = np.empty(len(sex), dtype=object)
    for s in ("F", "M"):
        idx = np.flatnonzero(sex == s)
        out[idx] = ref.first_names()[s].sample(rng, len(idx))
        accented = idx[rng.random(len(idx)) < 0.02]
        out[accented] = rng.choice(ref.ACCENTED_FIRST[s], size=len(accented))
    return out


def _surnames(rng: np.random.Generator, n: int) -> np.ndarray:
    out = ref.last_names().sample(rng, n)
    accented = rng.random(n) < 0.02
    out[accented] = rng.choice(ref.ACCENTED_LAST, size=int(accented.sum()))
    return out


def _streets(rng: np.random.Generator, n: int) -> np.ndarray:
    number = rng.integers(1, 20_000, n)
    base = ref.last_names().sample(rng, n)
    suffix = rng.choice(ref.street_suffixes(), n)
    unit = rng.random(n) < 0.2
    unit_no = rng.integers(1, 400, n)
    return np.asarray(
        [f"{a} {b} {c}" + (f" Apt {u}" if has else "")
         for a, b, c, has, u in zip(number, base, suffix, unit, unit_no)], dtype=object)


def _phones(rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    exchange = rng.integers(200, 1000, len(area))
    line = rng.integers(0, 10_000, len(area))
    return np.asarray([f"{a}{e:03d}{ln:04d}" for a, e, ln in zip(area, exchange, line)],
                      dtype=object)


def _address(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    z = ref.zips()
    pick = rng.integers(0, len(z.zip), n)
    return {"street": _streets(rng, n), "city": z.city[pick], "zip": z.zip[pick],
            "county_fips": z.county_fips[pick], "area_code": z.area_code[pick]}


def generate_persons(rng: np.random.Generator, n: int, first_index: int) -> pl.DataFrame:
    """About `n` people (whole households, so the last household may overshoot),
    numbered from `first_index`."""
    sizes = rng.choice(HOUSEHOLD_SIZES, size=n, p=HOUSEHOLD_P)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    h = len(sizes)
    hh = np.repeat(np.arange(h), sizes)
    m = len(hh)
    pos = np.arange(m) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    has_partner = (sizes >= 2) & (rng.random(h) < 0.75)
    adult = (pos == 0) | ((pos == 1) & has_partner[hh])

    sex = np.where(rng.random(m) < 0.5, "F", "M").astype(object)
    partner = adult & (pos == 1)
    head_sex = sex[np.cumsum(sizes) - sizes]
    opposite = np.where(head_sex[hh] == "F", "M", "F")
    sex[partner] = np.where(rng.random(int(partner.sum())) < 0.95, opposite[partner],
                            head_sex[hh][partner])

    # Ages: heads 18-95 (skewed young), partners near the head, children under both.
    head_age = np.clip(18 + rng.gamma(2.2, 14.0, h), 18, 99).astype(int)
    age = np.where(pos == 0, head_age[hh], 0)
    age[partner] = np.clip(head_age[hh][partner] + rng.normal(0, 4, int(partner.sum())),
                           18, 99).astype(int)
    child = ~adult
    max_child_age = np.clip(head_age[hh] - 16, 0, 17)
    age[child] = (rng.random(int(child.sum())) * (max_child_age[child] + 1)).astype(int)
    day_of_year = rng.integers(1, 366, m)  # born before the extract date
    dob_days = np.array([(AS_OF - dt.timedelta(days=int(a) * 365 + int(d))).toordinal()
                         for a, d in zip(age, day_of_year)])

    # Twins: in some households the second child shares the first child's date of birth.
    first_child = child & (pos == (1 + has_partner[hh]))
    second_child = child & (pos == (2 + has_partner[hh]))
    twin_hh = np.flatnonzero((sizes >= 2 + has_partner + 1) & (rng.random(h) < 0.04))
    twins = np.isin(hh, twin_hh) & second_child
    twin_of = np.flatnonzero(np.isin(hh, twin_hh) & first_child)
    dob_days[twins] = dob_days[twin_of]

    first = _names(rng, sex)
    middle = np.where(rng.random(m) < 0.7, _names(rng, sex), "")
    # Twins get distinct first names.
    for i, j in zip(np.flatnonzero(twins), twin_of):
        while first[i] == first[j]:
            first[i] = _names(rng, sex[i:i + 1])[0]

    surname = _surnames(rng, h)
    own_surname = _surnames(rng, m)
    last = surname[hh].copy()
    birth_last = last.copy()
    # Adult women with a partner often carry the household surname from marriage.
    married = adult & (sex == "F") & has_partner[hh] & (rng.random(m) < 0.7)
    birth_last[married] = own_surname[married]
    unrelated_partner = partner & ~married & (sex == "F") & (rng.random(m) < 0.5)
    last[unrelated_partner] = own_surname[unrelated_partner]
    birth_last[unrelated_partner] = own_surname[unrelated_partner]

    addr = _address(rng, h)
    moved = rng.random(h) < 0.15
    prior = _address(rng, h)
    # numpy's stubs reject None as a value of where(); numpy takes it as an object scalar
    landline = np.where(rng.random(h) < 0.6,  # type: ignore[call-overload]
                        _phones(rng, addr["area_code"]), None)
    mobile = np.where(adult & (rng.random(m) < 0.85),  # type: ignore[call-overload]
                      _phones(rng, addr["area_code"][hh]), None)
    email_n = rng.integers(1, 100, m)
    email = np.asarray(
        [f"{f.lower()}.{s.lower()}{k}@example.{d}".replace(" ", "") if a and r < 0.8 else None
         for f, s, k, a, r, d in zip(first, last, email_n, adult, rng.random(m),
                                     rng.choice(["com", "org", "net"], m))], dtype=object)

    # Mother: the household's adult woman, for children.
    female_adult = adult & (sex == "F")
    mother_pos = np.full(h, -1)
    idx = np.flatnonzero(female_adult)
    mother_pos[hh[idx]] = idx
    mother = np.where(child, mother_pos[hh], -1)

    index = first_index + np.arange(m)
    head_index = first_index + np.cumsum(sizes) - sizes
    person_id = np.asarray([f"T{i:09d}" for i in index], dtype=object)
    columns = {
        "true_person_id": person_id,
        "household_id": np.asarray([f"H{i:09d}" for i in head_index[hh]], dtype=object),
        "first_name": first, "middle_name": middle, "last_name": last,
        "birth_last_name": birth_last, "sex": sex,
        "dob": pl.Series(dob_days - dt.date(1970, 1, 1).toordinal()).cast(pl.Date),
        "race": rng.choice(ref.RACES, size=m, p=ref.RACE_P),
        "hispanic": rng.random(m) < ref.HISPANIC_P,
        "ssn": ssn_for(index),
        "street": addr["street"][hh], "city": addr["city"][hh], "zip": addr["zip"][hh],
        "county_fips": addr["county_fips"][hh],
        "moved": moved[hh],
        "prior_street": prior["street"][hh], "prior_city": prior["city"][hh],
        "prior_zip": prior["zip"][hh], "prior_county_fips": prior["county_fips"][hh],
        "landline": landline[hh], "mobile": mobile, "email": email,
        "adult": adult, "homeless": (rng.random(h) < 0.03)[hh],
        "born_in_state": rng.random(m) < 0.6,
        "mother_index": np.where(mother >= 0, mother, -1),
        "twin": twins | np.isin(np.arange(m), twin_of),
    }
    # Object arrays become explicit text columns (inference would guess from the first value).
    return pl.DataFrame([
        pl.Series(name, v.tolist(), dtype=pl.String)
        if isinstance(v, np.ndarray) and v.dtype.kind in "OU" else pl.Series(name, v)
        for name, v in columns.items()])
