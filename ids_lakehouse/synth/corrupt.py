"""The errors real administrative records carry, applied one record at a time."""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass

import numpy as np

from ids_lakehouse.synth.reference import nickname_map


@dataclass(frozen=True)
class ErrorRates:
    typo: float = 0.03            # per name field
    nickname: float = 0.05
    swap_names: float = 0.01      # first and last name swapped
    transpose_dob: float = 0.015  # day and month swapped
    missing_dob: float = 0.01
    missing_ssn: float = 0.05
    ssn_typo: float = 0.01
    moved: float = 0.5            # share of movers this agency still has at the old address
    maiden: float = 0.3           # share of married women recorded under their birth surname
    missing_sex: float = 0.01
    impossible_dob: float = 0.0   # a date of birth in the future: a contract break


def typo(rng: np.random.Generator, s: str) -> str:
    if len(s) < 3:
        return s
    i = int(rng.integers(1, len(s) - 1))
    op = int(rng.integers(0, 4))
    letter = string.ascii_lowercase[int(rng.integers(0, 26))]
    if op == 0:
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op == 1:
        return s[:i] + s[i + 1:]
    if op == 2:
        return s[:i] + letter + s[i + 1:]
    return s[:i] + letter + s[i:]


def nickname(rng: np.random.Generator, first: str) -> str:
    options = nickname_map().get(first.lower())
    if not options:
        return first
    return options[int(rng.integers(0, len(options)))].capitalize()


def transpose(d: dt.date) -> dt.date:
    if d.day <= 12 and d.day != d.month:
        return dt.date(d.year, d.day, d.month)
    return d


def ssn_typo(rng: np.random.Generator, ssn: str) -> str:
    i = int(rng.integers(0, 8))
    return ssn[:i] + ssn[i + 1] + ssn[i] + ssn[i + 2:]
