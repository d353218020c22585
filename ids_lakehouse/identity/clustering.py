"""Linked pairs -> clusters of records (people), with constraints that linking transitively
must not break.

Connected components of the linked pairs chain records: A-B and B-C put A and C in one
person even when A and C cannot be one person (born on different dates, different SSNs).
Here the pairs are added strongest first (steward `match` decisions, then by match
weight) and a pair is left out when joining its two groups would put together:

- two records that conflict: both dates of birth known and agreeing at most on the year,
  or both SSNs (or both national ids of one type) known and more than one edit apart;
- two records a steward decided are not the same person (`non_match`);
- two people the index already holds (different person_ids before this run), unless the
  pair's own evidence is strong: an identifier agrees exactly, or a steward decided so.
  A merge of established people caused by new data otherwise waits for a steward.

A pair left out is reported with the reason (it goes to the review queue). The result
depends only on the pairs, the records and the prior index: the same inputs give the same
clusters."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

CONFLICT = "records conflict (date of birth or identifier)"
DECIDED_APART = "a steward decided two of the records are different people"
ESTABLISHED = "would merge two people the index already holds, on evidence short of an identifier"


@dataclass
class Clusters:
    clusters: pl.DataFrame       # unique_id -> cluster (int)
    held_back: pl.DataFrame      # unique_id_l, unique_id_r, reason: linked pairs left out


def _close(a: str, b: str) -> bool:
    """At most one edit apart (substitution, insertion, deletion or adjacent swap)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _dob_conflict(a: str | None, b: str | None) -> bool:
    """Both known (YYYYMMDD) and agreeing at most on the year: not equal, not day and month
    transposed, not one edit apart."""
    if a is None or b is None or a == b:
        return False
    if a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return False
    return not _close(a, b)


def conflict(x: tuple, y: tuple) -> bool:
    """x, y: (dob_text, ssn, national_id_type, national_id) of two records."""
    if _dob_conflict(x[0], y[0]):
        return True
    if x[1] is not None and y[1] is not None and not _close(x[1], y[1]):
        return True
    return (x[2] is not None and x[2] == y[2] and x[3] is not None and y[3] is not None
            and not _close(x[3], y[3]))


def cluster(records: pl.DataFrame, pairs: pl.DataFrame, forced: pl.DataFrame,
            apart: pl.DataFrame, prior_xref: pl.DataFrame) -> Clusters:
    """records: unique_id, dob_text, ssn, national_id_type, national_id.
    pairs: linked pairs (unique_id_l, unique_id_r, match_weight, strong: an identifier
    agrees exactly). forced / apart: steward match / non_match pairs (unique_id_l,
    unique_id_r). prior_xref: unique_id -> person_id before this run."""
    ids = records["unique_id"].to_list()
    pos = {u: i for i, u in enumerate(ids)}
    facts = list(records.select("dob_text", "ssn", "national_id_type", "national_id")
                 .iter_rows())
    prior = dict(prior_xref.select("unique_id", "person_id").iter_rows())
    parent = list(range(len(ids)))
    members: dict[int, list[int]] = {}
    people: dict[int, set[str]] = {}
    for i, u in enumerate(ids):
        if u in prior:
            people[i] = {prior[u]}
    never = {(min(pos[a], pos[b]), max(pos[a], pos[b]))
             for a, b in apart.select("unique_id_l", "unique_id_r").iter_rows()
             if a in pos and b in pos}
    never_of: dict[int, set[int]] = {}
    for a, b in never:
        never_of.setdefault(a, set()).add(b)
        never_of.setdefault(b, set()).add(a)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def blocked(ra: int, rb: int, strong: bool, steward: bool) -> str | None:
        ma, mb = members.get(ra, [ra]), members.get(rb, [rb])
        if len(ma) > len(mb):
            ma, mb = mb, ma
        others = set(mb)
        for i in ma:
            if never_of.get(i, set()) & others:
                return DECIDED_APART
        if steward:
            return None
        pa, pb = people.get(ra, set()), people.get(rb, set())
        if pa and pb and not pa & pb and not strong:
            return ESTABLISHED
        for i in ma:
            for j in mb:
                if conflict(facts[i], facts[j]):
                    return CONFLICT
        return None

    order = [(a, b, True, True) for a, b in forced.select("unique_id_l", "unique_id_r")
             .iter_rows() if a in pos and b in pos]
    ranked = pairs.sort(["match_weight", "unique_id_l", "unique_id_r"],
                        descending=[True, False, False])
    order += [(a, b, s, False) for a, b, s in ranked.select(
        "unique_id_l", "unique_id_r", "strong").iter_rows()]
    held: list[tuple[str, str, str]] = []
    for a, b, strong, steward in order:
        ra, rb = find(pos[a]), find(pos[b])
        if ra == rb:
            continue
        reason = blocked(ra, rb, strong, steward)
        if reason:
            held.append((a, b, reason))
            continue
        if len(members.get(ra, [ra])) < len(members.get(rb, [rb])):
            ra, rb = rb, ra
        parent[rb] = ra
        members[ra] = members.pop(ra, [ra]) + members.pop(rb, [rb])
        people[ra] = people.pop(ra, set()) | people.pop(rb, set())
    roots = [find(i) for i in range(len(ids))]
    return Clusters(
        clusters=pl.DataFrame({"unique_id": ids, "cluster": roots},
                              schema={"unique_id": pl.String, "cluster": pl.Int64}),
        held_back=pl.DataFrame(held, schema={"unique_id_l": pl.String,
                                             "unique_id_r": pl.String, "reason": pl.String},
                               orient="row"))
