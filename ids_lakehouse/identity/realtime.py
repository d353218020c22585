"""Real-time matching against the master person index: the people a partner submits are
scored, one by one, against the index's records with the nightly linkage model, and each
gets one answer: the one person it confidently is, "refer for review", or "no match".

Same model, same evidence: the candidates are the records the model's own blocking rules
pair with the submitted person (held in memory as sorted key hashes), and each pair is
scored with the model's comparison levels, m and u, prior and term-frequency
adjustments, evaluated here in Python: Splink's real-time API runs a DuckDB query per
record, milliseconds a 50 ms budget for a 100-person batch does not have. The levels are
written out below once more, in Python; tests score the same pairs through Splink and
require the same levels and probabilities, and `Index` refuses a model whose comparisons,
levels or blocking rules differ from the ones written here.

A match is what the nightly run would link without a steward (probability at or above
MATCH_THRESHOLD, not held by the twins or date-of-birth guards, no other person at or
above LINK_FLOOR) whose names and date of birth the submission itself confirms exactly
(CONFIRMED below); a referral for review, a person at or above LINK_FLOOR with those names
and the day and month of birth transposed (CLOSE); anything else, no match."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz.distance import Levenshtein

from ids_lakehouse.identity import linkage, similarity

MATCH, REVIEW, NO_MATCH = "match", "refer_for_review", "no_match"

# The model's blocking rules as their key columns (a key with a null part blocks nothing).
BLOCKS: tuple[tuple[str, ...], ...] = (
    ("ssn",), ("national_id_type", "national_id"), ("dob",), ("_names",),
    ("phone",), ("last_name", "_year", "_month"), ("last_name", "_year", "_day"),
    ("last_name", "zip"), ("first_name", "zip"), ("first_name", "street"))
# Each comparison's levels, best first ("null" is Splink's null level, -1), as labelled in
# the model (linkage._comparisons): the scorer below implements exactly these.
LEVELS: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name is NULL", "Exact match on first_name", "nickname",
                   "first and last swapped", "one name in the other's place",
                   "Jaro-Winkler distance of first_name >= 0.92",
                   "Jaro-Winkler distance of first_name >= 0.8", "All other comparisons"),
    "last_name": ("last_name is NULL", "Exact match on last_name", "first and last swapped",
                  "Jaro-Winkler distance of last_name >= 0.92",
                  "Jaro-Winkler distance of last_name >= 0.8", "All other comparisons"),
    "middle_initial": ("middle_initial is NULL", "Exact match on middle_initial",
                       "All other comparisons"),
    "dob": ("dob is NULL", "Exact match on dob", "day and month transposed",
            "Damerau-Levenshtein distance of dob_text <= 1", "same year",
            "All other comparisons"),
    "identifier": ("null", "exact", "SSN's last four digits agree",
                   linkage.IDENTIFIER_TYPO_LABEL, "one edit apart",
                   "All other comparisons"),
    "location": ("null", "same street and ZIP, or one typo", "same phone", "same ZIP",
                 "All other comparisons"),
    "sex": ("sex is NULL", "Exact match on sex", "All other comparisons"),
}


class ModelMismatch(ValueError):
    """The saved model is not the one this scorer implements (its comparisons, levels or
    blocking rules changed): real-time answers would not be the nightly model's."""


# DuckDB's jaro_winkler_similarity, damerau_levenshtein and levenshtein compare UTF-8
# bytes, not characters (its length() counts characters): so do these (identity.similarity).
_jw = similarity.jaro_winkler
_dl = similarity.damerau_levenshtein     # 0, 1, or 2 for anything above 1


def _dl1(a: str, b: str) -> bool:
    return _dl(a, b) <= 1


_NOT_DIGITS = re.compile(r"[^0-9]+")


_LATIN_WORDS_AND_SPACES = re.compile(r"[A-Za-z]{4,}| ")


def _same_address(q: Record, r: Record) -> bool:
    """linkage.SAME_ADDRESS: the same street and ZIP, or one typo (the same numbers, and
    the same but for runs of four Latin letters or more)."""
    s1, s2, z1, z2 = q.street, r.street, q.zip, r.zip
    if s1 is None or s2 is None or z1 is None or z2 is None:
        return False
    if s1 == s2 and z1 == z2:
        return True
    longest = linkage.LONGEST_STREET_COMPARED
    return (len(s1) <= longest and len(s2) <= longest and abs(len(s1) - len(s2)) <= 1
            and len(z1) == len(z2)
            and (z1 == z2 or (_dl(z1, z2) == 1
                              and Levenshtein.distance(z1.encode(), z2.encode()) == 2))
            and _NOT_DIGITS.sub(" ", s1) == _NOT_DIGITS.sub(" ", s2)
            and _LATIN_WORDS_AND_SPACES.sub("", s1) == _LATIN_WORDS_AND_SPACES.sub("", s2)
            and _dl1(s1, s2))


def _swapped(q: Record, r: Record) -> bool:
    f1, l1, f2, l2 = q.first, q.last, r.first, r.last
    return (f1 is not None and l1 is not None and f2 is not None and l2 is not None
            and f1 != f2 and f1[:1] == l2[:1] and l1[:1] == f2[:1]
            and _jw(f1, l2) >= 0.9 and _jw(l1, f2) >= 0.9)


@dataclass(frozen=True, slots=True)
class Record:
    """A record's linkage values (linkage.LINK_COLUMNS), as the scorer reads them."""
    first: str | None
    variants: frozenset[str]
    middle: str | None
    last: str | None
    dob: dt.date | None
    dob_text: str | None
    sex: str | None
    ssn: str | None
    last4: str | None
    nid: str | None
    nid_type: str | None
    street: str | None
    zip: str | None
    phone: str | None


def records(frame: pl.DataFrame) -> list[Record]:
    """linkage.linkage_input's frame -> Records, in its row order."""
    cols = [frame[c].to_list() for c in
            ("first_name", "first_name_variants", "middle_initial", "last_name", "dob",
             "dob_text", "sex", "ssn", "ssn_last4", "national_id", "national_id_type",
             "street", "zip", "phone")]
    return [Record(f, frozenset(v or ()), *rest) for f, v, *rest in zip(*cols, strict=True)]


def _jw_level(a: str, b: str) -> int:
    """Jaro-Winkler >= 0.92 2, >= 0.8 1, else 0."""
    s = _jw(a, b)
    return 2 if s >= 0.92 else 1 if s >= 0.8 else 0


def _first(q: Record, r: Record) -> int:
    if q.first is None or r.first is None:
        return -1
    if q.first == r.first:
        return 6
    if r.first in q.variants or q.first in r.variants:
        return 5
    if _swapped(q, r):
        return 4
    if q.first == r.last or r.first == q.last:
        return 3
    return _jw_level(q.first, r.first)


def _last(q: Record, r: Record) -> int:
    if q.last is None or r.last is None:
        return -1
    if q.last == r.last:
        return 4
    return 3 if _swapped(q, r) else _jw_level(q.last, r.last)


def _middle(q: Record, r: Record) -> int:
    return -1 if q.middle is None or r.middle is None else 1 if q.middle == r.middle else 0


def _dob(q: Record, r: Record) -> int:
    a, b = q.dob, r.dob
    if a is None or b is None:
        return -1
    if a == b:
        return 4
    if a.day == b.month and a.month == b.day and a.year == b.year:
        return 3
    if q.dob_text is not None and r.dob_text is not None and _dl1(q.dob_text, r.dob_text):
        return 2
    return 1 if a.year == b.year else 0


def _identifier(q: Record, r: Record) -> int:
    # SQL's three-valued logic, as in the model's conditions: a comparison with a null is
    # unknown, and a level is taken only when its condition is true.
    typed = q.nid_type is not None and r.nid_type is not None
    same_type = typed and q.nid_type == r.nid_type
    other_type = typed and q.nid_type != r.nid_type
    if (q.last4 is None or r.last4 is None) and (q.nid is None or r.nid is None or other_type):
        return -1
    ssns = q.ssn is not None and r.ssn is not None
    nids = same_type and q.nid is not None and r.nid is not None
    if (ssns and q.ssn == r.ssn) or (nids and q.nid == r.nid):
        return 4
    if q.last4 is not None and q.last4 == r.last4:
        return 3
    ssn_near = ssns and _dl1(q.ssn or "", r.ssn or "")
    nid_near = nids and _dl1(q.nid or "", r.nid or "")
    if (ssn_near and _apart(q.ssn, r.ssn)) or (nid_near and _apart(q.nid, r.nid)):
        return 2
    return 1 if ssn_near or nid_near else 0


_DIGITS = re.compile(r"[0-9]{1,18}")


def _apart(a: str | None, b: str | None) -> bool:
    """Both all digits (at most 18) and not numeric neighbours (linkage's `apart`)."""
    return (a is not None and b is not None and _DIGITS.fullmatch(a) is not None
            and _DIGITS.fullmatch(b) is not None
            and abs(int(a) - int(b)) >= linkage.NUMERIC_NEIGHBOURS)


def _location(q: Record, r: Record) -> int:
    if (q.zip is None or r.zip is None) and (q.phone is None or r.phone is None):
        return -1
    if _same_address(q, r):
        return 3
    if q.phone is not None and q.phone == r.phone:
        return 2
    return 1 if q.zip is not None and q.zip == r.zip else 0


def _sex(q: Record, r: Record) -> int:
    return -1 if q.sex is None or r.sex is None else 1 if q.sex == r.sex else 0


GAMMA: dict[str, Callable[[Record, Record], int]] = {
    "first_name": _first, "last_name": _last, "middle_initial": _middle, "dob": _dob,
    "identifier": _identifier, "location": _location, "sex": _sex}
TF_VALUE = {"first_name": "first", "last_name": "last"}


@dataclass(frozen=True)
class Weights:
    """The model's numbers: prior log-odds, each level's match weight, and for the exact
    levels with term-frequency adjustment: log2 of their u and the value frequencies."""
    prior: float
    levels: dict[str, dict[int, float]]
    tf_exact: dict[str, tuple[int, float, float, float]]  # gamma, weight, log2 u, min u
    tf: dict[str, dict[str, float]]
    _plan: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, model: linkage.Model, tf: dict[str, pl.DataFrame]) -> Weights:
        from splink.internals.settings_creator import SettingsCreator

        settings = SettingsCreator.from_path_or_dict(model).get_settings("duckdb")
        core = settings.core_model_settings
        found = {c.output_column_name: tuple(lv.label_for_charts for lv in c.comparison_levels)
                 for c in core.comparisons}
        if found != LEVELS:
            raise ModelMismatch("the saved linkage model's comparisons are not the ones the "
                                "real-time scorer implements (identity/realtime.py LEVELS)")
        rules = [r["blocking_rule"] for r in model["blocking_rules_to_generate_predictions"]]
        if rules != _expected_rules():
            raise ModelMismatch("the saved linkage model's blocking rules are not the ones "
                                "the real-time index implements (identity/realtime.py BLOCKS)")
        levels, tf_exact = {}, {}
        for c in core.comparisons:
            name = c.output_column_name
            levels[name] = {lv.comparison_vector_value: float(lv._log2_bayes_factor)
                            for lv in c.comparison_levels}
            for lv in c.comparison_levels:
                if lv._has_tf_adjustments and lv._tf_adjustment_weight:
                    u = lv._u_probability_corresponding_to_exact_match(c.comparison_levels)
                    tf_exact[name] = (lv.comparison_vector_value, float(lv._tf_adjustment_weight),
                                      math.log2(u), float(lv._tf_minimum_u_value))
        if set(tf_exact) - set(TF_VALUE):
            raise ModelMismatch("term-frequency adjustments on columns the real-time scorer "
                                "does not adjust")
        p = core.probability_two_random_records_match
        frequencies = {c: dict(zip(t[c].to_list(), t[f"tf_{c}"].to_list(), strict=True))
                       for c, t in tf.items()}
        return cls(math.log2(p / (1 - p)), levels, tf_exact, frequencies)

    def __post_init__(self) -> None:
        # Per comparison, in order: its level function, level weights, and for a
        # term-frequency adjusted one its exact level, the value's attribute and each
        # value's adjustment (Splink's: weight * (log2 u_exact - log2 max(tf, min u))).
        plan = []
        for name, gamma_of in GAMMA.items():
            exact = self.tf_exact.get(name)
            adjust = None if exact is None else {
                value: exact[1] * (exact[2] - math.log2(max(frequency, exact[3])))
                for value, frequency in self.tf[name].items() if frequency is not None}
            plan.append((gamma_of, self.levels[name], exact[0] if exact else None,
                         TF_VALUE.get(name), adjust))
        object.__setattr__(self, "_plan", plan)

    def score(self, q: Record, r: Record) -> tuple[float, tuple[int, ...]]:
        """(match weight, each comparison's level) of one pair."""
        weight, gammas = self.prior, []
        for gamma_of, levels, tf_level, attribute, adjust in self._plan:
            gamma = gamma_of(q, r)
            gammas.append(gamma)
            weight += levels[gamma]
            if gamma == tf_level and adjust is not None:
                weight += adjust.get(getattr(q, attribute), 0.0)
        return weight, tuple(gammas)


def _expected_rules() -> list[str]:
    return [rule.get_blocking_rule("duckdb").blocking_rule_sql
            for rule in linkage.blocking_rules()]


def probability(weight: float) -> float:
    return 1.0 / (1.0 + 2.0 ** -weight) if weight > -1000 else 0.0


def _keys(frame: pl.DataFrame) -> list[np.ndarray]:
    """Per blocking rule, each row's key hash, or 0 where a part is null (0 is no key:
    a real key hashing to 0 only loses that rule's candidates for it)."""
    hashed = frame.select(_key_expressions())
    return [hashed[f"_k{i}"].to_numpy().astype(np.uint64) for i in range(len(BLOCKS))]


def _names_either_way() -> pl.Expr:
    """linkage.NAMES_EITHER_WAY: both names, the smaller first, or null if either is."""
    first, last = pl.col("first_name"), pl.col("last_name")
    return (pl.when(first <= last).then(first + "|" + last)
            .otherwise(last + "|" + first))


@lru_cache(maxsize=1)
def _key_expressions() -> list[pl.Expr]:
    parts = {"ssn": pl.col("ssn"), "national_id_type": pl.col("national_id_type"),
             "national_id": pl.col("national_id"), "dob": pl.col("dob").cast(pl.String),
             "first_name": pl.col("first_name"), "last_name": pl.col("last_name"),
             "phone": pl.col("phone"), "zip": pl.col("zip"), "street": pl.col("street"),
             "_names": _names_either_way(),
             "_year": pl.col("dob").dt.year().cast(pl.String),
             "_month": pl.col("dob").dt.month().cast(pl.String),
             "_day": pl.col("dob").dt.day().cast(pl.String)}
    out = []
    for i, block in enumerate(BLOCKS):
        key = pl.concat_str([pl.lit(str(len(block)))] + [parts[c] for c in block],
                            separator="\x1f")
        out.append(pl.when(key.is_not_null()).then(key.hash(seed=7)).otherwise(0)
                   .alias(f"_k{i}"))
    return out


@dataclass
class Candidate:
    person_id: str
    probability: float
    weight: float
    gammas: tuple[int, ...]


@dataclass
class Outcome:
    outcome: str                 # MATCH, REVIEW or NO_MATCH
    person_id: str | None        # MATCH only


class Index:
    """The index's records, their person ids and the blocking keys, in memory."""

    def __init__(self, person_record: pl.DataFrame, xref: pl.DataFrame,
                 model: linkage.Model, tf: dict[str, pl.DataFrame], model_version: int) -> None:
        """person_record: silver person records (linkage.SILVER_COLUMNS); xref: unique_id
        and person_id of the index's build."""
        self.weights = Weights.of(model, tf)
        self.model_version = model_version
        frame = (linkage.linkage_input(person_record)
                 .join(xref.select("unique_id", "person_id"), on="unique_id", how="inner"))
        self.records = records(frame)
        self.person_ids: list[str] = frame["person_id"].to_list()
        self.sources: list[str] = frame["source_dataset"].to_list()
        self.blocks = []
        for hashes in _keys(frame):
            rows = np.nonzero(hashes)[0]
            order = np.argsort(hashes[rows], kind="stable")
            self.blocks.append((hashes[rows][order], rows[order].astype(np.int64)))

    def __len__(self) -> int:
        return len(self.records)

    def blocked(self, keys: list[np.ndarray], i: int) -> set[int]:
        """The index rows the model's blocking rules pair with row `i` of `keys`."""
        rows: set[int] = set()
        for (sorted_keys, positions), hashes in zip(self.blocks, keys, strict=True):
            key = hashes[i]
            if key:
                lo = int(np.searchsorted(sorted_keys, key, side="left"))
                hi = int(np.searchsorted(sorted_keys, key, side="right"))
                rows.update(positions[lo:hi].tolist())
        return rows

    def candidates(self, submitted: pl.DataFrame, sources: set[str] | None = None
                   ) -> list[list[Candidate]]:
        """Per submitted person (linkage_input's columns), the index's persons the model
        pairs it with, best record per person, best first; with `sources`, only those
        sources' records are compared (an agreement's answers come from its own sources:
        another agency's records must not decide them, nor show through them)."""
        keys, people = _keys(submitted), records(submitted)
        out = []
        for i, q in enumerate(people):
            best: dict[str, Candidate] = {}
            for row in self.blocked(keys, i):
                if sources is not None and self.sources[row] not in sources:
                    continue
                weight, gammas = self.weights.score(q, self.records[row])
                pid = self.person_ids[row]
                if pid not in best or weight > best[pid].weight:
                    best[pid] = Candidate(pid, probability(weight), weight, gammas)
            out.append(sorted(best.values(), key=lambda c: -c.weight))
        return out

    def decide(self, candidates: list[list[Candidate]], population: set[str] | None = None
               ) -> list[Outcome]:
        """One answer per submitted person (see the module's docstring for the rule).
        With `population`, only its persons are answerable: anyone else is "no match",
        as is nobody (the two are not told apart)."""
        tops = [c[0] for c in candidates if c]
        held = [linkage.held_reason(t.gammas[_POSITION["first_name"]],
                                    t.gammas[_POSITION["identifier"]],
                                    t.gammas[_POSITION["dob"]],
                                    t.gammas[_POSITION["last_name"]]) for t in tops]
        out, k = [], 0
        for found in candidates:
            if not found:
                out.append(Outcome(NO_MATCH, None))
                continue
            top, reason = found[0], held[k]
            k += 1
            plausible = [c for c in found if c.probability >= linkage.LINK_FLOOR]
            inside = [c for c in plausible if population is None or c.person_id in population]
            if (top.probability >= linkage.MATCH_THRESHOLD and reason is None
                    and len(plausible) == 1 and top in inside
                    and _agree(top.gammas, CONFIRMED)):
                out.append(Outcome(MATCH, top.person_id))
            elif any(_agree(c.gammas, CLOSE) for c in inside):
                out.append(Outcome(REVIEW, None))
            else:
                out.append(Outcome(NO_MATCH, None))
        return out


# What a lookup must itself carry, beyond the model's confidence. A lookup hands out
# identified contact details to someone who typed a name: the model links "JO SMI" born
# 1980 to John Smith born 1980 on the strength of his other fields, and typo tolerance
# (Jaro-Winkler >= 0.92, names swapped with a typo) accepts stems: "SMIT" for SMITH,
# "BARB" for BARBARA. An attacker probing stems, initials or a decade at a time was
# answered. So a match needs the first name exact or a nickname of it, the last name
# exact and the exact date of birth; a referral for review, the same names and the date
# of birth with day and month transposed. Anything else is "no match" (a typo in a name
# costs the requester a match: they are told nothing, and can ask again).
# The levels are found by their labels: numbers written by hand went stale when a
# first-name level was added ("first and last swapped", a typo-tolerant level, became 4,
# and WILLAIM WILLIAMS confirmed WILLIAM WILLIAMS).


def _gamma(comparison: str, label: str) -> int:
    """The comparison vector value of the level labelled `label` (best first; the null
    level, first in LEVELS, is -1)."""
    return len(LEVELS[comparison]) - 1 - LEVELS[comparison].index(label)


CONFIRMED = {"first_name": _gamma("first_name", "nickname"),
             "last_name": _gamma("last_name", "Exact match on last_name"),
             "dob": _gamma("dob", "Exact match on dob")}
CLOSE = CONFIRMED | {"dob": _gamma("dob", "day and month transposed")}
_POSITION = {name: i for i, name in enumerate(linkage.GAMMAS)}


def _agree(gammas: tuple[int, ...], least: dict[str, int]) -> bool:
    return all(gammas[_POSITION[name]] >= level for name, level in least.items())
