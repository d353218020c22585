"""Linked pairs -> clusters of records (people), with constraints that linking transitively
must not break.

Connected components of the linked pairs chain records: A-B and B-C put A and C in one
person even when the model compared A and C and a guard says they are two people (a
parent and a child of one name at one address: their dates of birth disagree). Here the
pairs are added strongest first (steward `match` decisions, then by match weight) and a
pair is left out when joining its two groups would put together:

- two records the model compared and the date-of-birth guard holds apart
  (`linkage.held_for_review`: dates that agree at most on the year, no identifier within
  one edit), whatever their score; and, through a record without a first name, two
  records the twins guard holds apart (see NAMELESS_ONLY);
- two records a steward decided are not the same person (`non_match`; a steward `match`
  overrides a guard);
- two people the index already holds (different person_ids before this run), unless the
  pair's own evidence is strong: an identifier agrees exactly, or a steward decided so.
  A merge of established people caused by new data otherwise waits for a steward.

Only pairs the model compared constrain: a rule on the records themselves (e.g. "these
dates of birth differ") would also split the records of one person whose date was
mistyped in a way the model has learned to tolerate. A pair left out is reported with
its reason (it goes to the review queue). The same inputs give the same clusters."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ids_lakehouse.identity.linkage import SURNAMES_DISAGREE, TWINS_GUARD

CONFLICT = "joins records held apart"
DECIDED_APART = "a steward decided two of the records are different people"
ESTABLISHED = "would merge two people the index already holds, on evidence short of an identifier"


@dataclass
class Clusters:
    clusters: pl.DataFrame       # unique_id -> cluster (int)
    held_back: pl.DataFrame      # unique_id_l, unique_id_r, reason: linked pairs left out


# Held-apart reasons that bind only a join made through a record without that name, and
# the pair flag that says so: a record that says nothing about the first name cannot be
# what makes two records whose first names disagree one person (twins bridged by a
# nameless copy); nor can one without a surname join two records whose surnames disagree
# (a tester's MARIA GARCIA and MARIA LOPEZ, one address, joined through a "MARIA" with no
# surname nor date of birth). Elsewhere the names are the model's to weigh: data sets
# whose duplicates replace the first name outright (FEBRL) would otherwise lose them, and
# a married name is a surname that disagrees.
NAMELESS_ONLY = {TWINS_GUARD: "nameless", SURNAMES_DISAGREE: "surnameless"}


def cluster(ids: pl.Series, pairs: pl.DataFrame, forced: pl.DataFrame,
            apart: pl.DataFrame, prior_xref: pl.DataFrame) -> Clusters:
    """ids: every record's unique_id. pairs: linked pairs (unique_id_l, unique_id_r,
    match_weight, strong: an identifier agrees exactly, nameless: a side has no first
    name, surnameless: a side has no surname). forced: steward `match` pairs.
    apart: pairs that must not end in one person (unique_id_l, unique_id_r, reason): steward
    `non_match` decisions and scored pairs a guard holds. prior_xref: unique_id ->
    person_id before this run."""
    ids_ = ids.to_list()
    pos = {u: i for i, u in enumerate(ids_)}
    prior = dict(prior_xref.select("unique_id", "person_id").iter_rows())
    parent = list(range(len(ids_)))
    members: dict[int, list[int]] = {}
    people: dict[int, set[str]] = {}
    for i, u in enumerate(ids_):
        if u in prior:
            people[i] = {prior[u]}
    # Every reason a pair has: they bind different joins (a twins-guard reason through a
    # record without a first name, a surnames one through a record without a surname), so
    # none stands for another (a tester's three records joined when one was dropped).
    never_of: dict[int, dict[int, list[str]]] = {}
    for a, b, why in apart.select("unique_id_l", "unique_id_r", "reason").iter_rows():
        if a in pos and b in pos:
            never_of.setdefault(pos[a], {}).setdefault(pos[b], []).append(why)
            never_of.setdefault(pos[b], {}).setdefault(pos[a], []).append(why)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def blocked(ra: int, rb: int, strong: bool, steward: bool, without: set[str]
                ) -> str | None:
        ma, mb = members.get(ra, [ra]), members.get(rb, [rb])
        if len(ma) > len(mb):
            ma, mb = mb, ma
        others = set(mb)
        for i in ma:
            for j, reasons in never_of.get(i, {}).items():
                if j not in others:
                    continue
                for why in sorted(reasons, key=lambda w: w != DECIDED_APART):
                    if (steward and why != DECIDED_APART) or \
                            (why in NAMELESS_ONLY and NAMELESS_ONLY[why] not in without):
                        continue
                    return why if why == DECIDED_APART else f"{CONFLICT}: {why}"
        if steward:
            return None
        pa, pb = people.get(ra, set()), people.get(rb, set())
        if pa and pb and not pa & pb and not strong:
            return ESTABLISHED
        return None

    order: list[tuple[str, str, bool, bool, set[str]]] = [
        (a, b, True, True, set()) for a, b in forced.select(
            "unique_id_l", "unique_id_r").iter_rows() if a in pos and b in pos]
    ranked = pairs.sort(["match_weight", "unique_id_l", "unique_id_r"],
                        descending=[True, False, False])
    order += [(a, b, s, False, ({"nameless"} if n else set()) | ({"surnameless"} if sn else set()))
              for a, b, s, n, sn in ranked.select(
                  "unique_id_l", "unique_id_r", "strong", "nameless", "surnameless").iter_rows()]
    held: list[tuple[str, str, str]] = []
    for a, b, strong, steward, without in order:
        ra, rb = find(pos[a]), find(pos[b])
        if ra == rb:
            continue
        reason = blocked(ra, rb, strong, steward, without)
        if reason:
            held.append((a, b, reason))
            continue
        if len(members.get(ra, [ra])) < len(members.get(rb, [rb])):
            ra, rb = rb, ra
        parent[rb] = ra
        members[ra] = members.pop(ra, [ra]) + members.pop(rb, [rb])
        people[ra] = people.pop(ra, set()) | people.pop(rb, set())
    roots = [find(i) for i in range(len(ids_))]
    return Clusters(
        clusters=pl.DataFrame({"unique_id": ids_, "cluster": roots},
                              schema={"unique_id": pl.String, "cluster": pl.Int64}),
        held_back=pl.DataFrame(held, schema={"unique_id_l": pl.String,
                                             "unique_id_r": pl.String, "reason": pl.String},
                               orient="row"))
