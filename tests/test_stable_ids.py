"""Stable person IDs on crafted clusters: keep, create, merge (older survives), split
(larger part keeps), and steward overrides."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ids_lakehouse.identity import clustering
from ids_lakehouse.identity.linkage import SURNAMES_DISAGREE, TWINS_GUARD
from ids_lakehouse.identity.stable_ids import INDEX_SCHEMA, assign

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


def clusters(groups: list[list[str]]) -> pl.DataFrame:
    return pl.DataFrame([(u, i) for i, g in enumerate(groups) for u in g],
                        schema={"unique_id": pl.String, "cluster": pl.Int64}, orient="row")


def prior(mapping: dict[str, list[str]], minted: dict[str, int]):
    xref = pl.DataFrame([(u, p) for p, us in mapping.items() for u in us],
                        schema={"unique_id": pl.String, "person_id": pl.String}, orient="row")
    index = pl.DataFrame([(p, T0 + dt.timedelta(days=d), "old") for p, d in minted.items()],
                         schema=INDEX_SCHEMA, orient="row")
    return xref, index


def ids(result) -> dict[str, str]:
    return dict(result.xref.iter_rows())


def events(result) -> list[tuple]:
    return sorted(result.events.select("person_id", "event", "related_person_id",
                                       "records").iter_rows(), key=str)


def test_unchanged_clusters_keep_their_ids_and_record_no_events():
    xref, index = prior({"PA": ["a1", "a2"], "PB": ["b1"]}, {"PA": 0, "PB": 1})
    result = assign(clusters([["a1", "a2"], ["b1"]]), xref, index, "run", NOW)
    assert ids(result) == {"a1": "PA", "a2": "PA", "b1": "PB"}
    assert result.events.height == 0
    assert result.index.height == 2


def test_new_records_join_existing_people_or_become_new_people():
    xref, index = prior({"PA": ["a1"]}, {"PA": 0})
    result = assign(clusters([["a1", "a2"], ["n1", "n2"]]), xref, index, "run", NOW)
    got = ids(result)
    assert got["a1"] == got["a2"] == "PA"
    assert got["n1"] == got["n2"] and got["n1"] not in ("PA",) and got["n1"].startswith("P")
    assert events(result) == [(got["n1"], "created", None, 2)]
    assert result.index.filter(pl.col("person_id") == got["n1"])["minted_run"][0] == "run"


def test_merge_keeps_the_older_id_even_when_it_is_smaller():
    xref, index = prior({"POLD": ["o1"], "PNEW": ["n1", "n2", "n3"]}, {"POLD": 0, "PNEW": 5})
    result = assign(clusters([["o1", "n1", "n2", "n3"]]), xref, index, "run", NOW)
    assert set(ids(result).values()) == {"POLD"}
    assert events(result) == [("PNEW", "merged", "POLD", None)]


def test_split_keeps_the_id_on_the_larger_part():
    xref, index = prior({"PA": ["a1", "a2", "a3", "a4"]}, {"PA": 0})
    result = assign(clusters([["a4"], ["a1", "a2", "a3"]]), xref, index, "run", NOW)
    got = ids(result)
    assert got["a1"] == got["a2"] == got["a3"] == "PA"
    assert got["a4"] != "PA"
    assert events(result) == [(got["a4"], "split", "PA", 1)]


def test_new_ids_are_opaque_and_unique():
    result = assign(clusters([[f"r{i}"] for i in range(200)]),
                    *prior({}, {}), "run", NOW)
    minted = set(ids(result).values())
    assert len(minted) == 200
    assert all(len(p) == 17 and p.startswith("P") for p in minted)


IDS = pl.Series(["a", "b", "c", "d", "e", "new"])


def _pairs(*rows) -> pl.DataFrame:
    """(l, r, weight, strong, nameless[, surnameless])"""
    return pl.DataFrame([(*r, False)[:6] for r in rows],
                        schema={"unique_id_l": pl.String, "unique_id_r": pl.String,
                                "match_weight": pl.Float64, "strong": pl.Boolean,
                                "nameless": pl.Boolean, "surnameless": pl.Boolean},
                        orient="row")


NO_PRIOR = pl.DataFrame(schema={"unique_id": pl.String, "person_id": pl.String})


def _decided(*rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"unique_id_l": pl.String, "unique_id_r": pl.String},
                        orient="row")


def _apart(*rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"unique_id_l": pl.String, "unique_id_r": pl.String,
                                      "reason": pl.String}, orient="row")


def test_steward_decisions_add_and_remove_links():
    pairs = _pairs(("a", "b", 10.0, False, False), ("c", "d", 10.0, False, False))
    got = clustering.cluster(IDS, pairs, _decided(("b", "e")),
                             _apart(("c", "d", clustering.DECIDED_APART)), NO_PRIOR)
    cluster = dict(got.clusters.iter_rows())
    assert cluster["a"] == cluster["b"] == cluster["e"]     # the steward's match joined e
    assert cluster["c"] != cluster["d"]                     # the steward's non-match split c, d
    assert got.held_back.rows() == [("c", "d", clustering.DECIDED_APART)]


def test_a_chain_never_joins_records_a_guard_holds_apart_the_weakest_link_gives():
    # The model compared a and c (a parent and a child of one name): a guard holds them
    # apart. b (no date of birth) links to both, to a more strongly.
    pairs = _pairs(("a", "b", 12.0, False, False), ("b", "c", 9.0, False, False),
                   ("a", "d", 8.0, False, False))
    apart = _apart(("a", "c", "dates of birth disagree"))
    got = clustering.cluster(IDS, pairs, _decided(), apart, NO_PRIOR)
    cluster = dict(got.clusters.iter_rows())
    assert cluster["a"] == cluster["b"] == cluster["d"] != cluster["c"]
    assert got.held_back.rows() == [("b", "c", f"{clustering.CONFLICT}: dates of birth "
                                                "disagree")]
    # A steward's match comes first and outranks the guard: b and c are one person, then
    # a cannot join them.
    forced = clustering.cluster(IDS, pairs, _decided(("b", "c")), apart, NO_PRIOR)
    cluster = dict(forced.clusters.iter_rows())
    assert cluster["b"] == cluster["c"] != cluster["a"] == cluster["d"]


def test_new_data_merges_established_people_only_on_an_identifier():
    prior_xref = pl.DataFrame({"unique_id": ["a", "b"], "person_id": ["P1", "P2"]})
    weak = _pairs(("a", "new", 10.0, False, False), ("b", "new", 9.0, False, False))
    got = clustering.cluster(IDS, weak, _decided(), _apart(), prior_xref)
    cluster = dict(got.clusters.iter_rows())
    assert cluster["a"] == cluster["new"] != cluster["b"]
    assert got.held_back.rows() == [("b", "new", clustering.ESTABLISHED)]
    strong = _pairs(("a", "new", 10.0, False, False), ("b", "new", 9.0, True, False))
    got = clustering.cluster(IDS, strong, _decided(), _apart(), prior_xref)
    assert got.clusters.filter(pl.col("unique_id").is_in(["a", "b", "new"]))[
        "cluster"].n_unique() == 1 and got.held_back.height == 0


def test_a_record_without_a_first_name_never_bridges_twins():
    # a and c: twins (held by the twins guard); b: a copy of one of them with the first
    # name blank, linked to both. A join through b is the only way they meet.
    pairs = _pairs(("a", "b", 12.0, False, True), ("b", "c", 11.0, False, True),
                   ("c", "d", 10.0, False, False))
    apart = _apart(("a", "c", TWINS_GUARD))
    got = clustering.cluster(IDS, pairs, _decided(), apart, NO_PRIOR)
    cluster = dict(got.clusters.iter_rows())
    assert cluster["a"] == cluster["b"] != cluster["c"] == cluster["d"]
    # Where the join does not go through a nameless record the model's score decides.
    named = _pairs(("a", "b", 12.0, False, False), ("b", "c", 11.0, False, False))
    got = clustering.cluster(IDS, named, _decided(), apart, NO_PRIOR)
    assert got.clusters.filter(pl.col("unique_id").is_in(["a", "b", "c"]))[
        "cluster"].n_unique() == 1


def test_a_record_without_a_surname_never_bridges_two_surnames():
    """A tester's MARIA GARCIA (a) and MARIA LOPEZ (c) at one address, compared and not
    linked (surnames disagree), were joined through a "MARIA" (b) with no surname nor date
    of birth. A direct link between two surnames (a married name) still stands."""
    apart = _apart(("a", "c", SURNAMES_DISAGREE))
    bridged = _pairs(("a", "b", 12.0, False, False, True), ("b", "c", 11.0, False, False, True))
    cluster = dict(clustering.cluster(IDS, bridged, _decided(), apart, NO_PRIOR)
                   .clusters.iter_rows())
    assert cluster["a"] == cluster["b"] != cluster["c"]
    direct = _pairs(("a", "c", 12.0, False, False))
    cluster = dict(clustering.cluster(IDS, direct, _decided(), apart, NO_PRIOR)
                   .clusters.iter_rows())
    assert cluster["a"] == cluster["c"]


def test_every_reason_a_pair_is_held_apart_for_binds():
    """A non_match that a twins-guard reason overwrote bound only through a record without
    a first name; a twins-guard reason kept instead of the surnames' one let a record
    without a surname join them (a tester's A, B and C)."""
    from ids_lakehouse.identity import linkage, mpi

    pairs = pl.DataFrame({"unique_id_l": ["a", "a"], "unique_id_r": ["c", "d"],
                          "match_probability": [0.99, 0.6],
                          "gamma_first_name": [linkage.FIRST_NAME_DISAGREES, 6],
                          "gamma_last_name": [4, linkage.LAST_NAME_DISAGREES],
                          "gamma_dob": [4, 4], "gamma_identifier": [-1, -1]})
    decisions = pl.DataFrame({"unique_id_l": ["a"], "unique_id_r": ["c"],
                              "decision": ["non_match"]})
    assert sorted(mpi.held_apart(pairs, decisions).rows()) == [
        ("a", "c", clustering.DECIDED_APART), ("a", "c", TWINS_GUARD),
        ("a", "d", SURNAMES_DISAGREE)]
    apart = mpi.held_apart(pairs, decisions)
    # c is a, or d is a, through a first-named record (b) with no surname: the steward's
    # non_match and the surnames' reason both bind such a join.
    through_b = _pairs(("a", "b", 12.0, False, False, True), ("b", "c", 11.0, False, False, True),
                       ("b", "d", 10.0, False, False, True))
    cluster = dict(clustering.cluster(IDS, through_b, _decided(), apart, NO_PRIOR)
                   .clusters.iter_rows())
    assert cluster["a"] == cluster["b"] and cluster["c"] != cluster["a"] != cluster["d"]
    # twins (a, c) whose surnames disagree too, joined through a named record without a
    # surname: the surnames' reason binds though the twins guard's does not
    both = _apart(("a", "c", TWINS_GUARD), ("a", "c", SURNAMES_DISAGREE))
    bridged = _pairs(("a", "b", 12.0, False, False, True), ("b", "c", 11.0, False, False, True))
    cluster = dict(clustering.cluster(IDS, bridged, _decided(), both, NO_PRIOR)
                   .clusters.iter_rows())
    assert cluster["a"] == cluster["b"] != cluster["c"]


def test_a_pair_two_guards_hold_is_held_apart_for_both():
    """A reviewer's JOHN born 1950 and PETER born 1980: the twins guard (first names) and
    the date-of-birth guard both hold them; only the first was kept, and it binds only
    through a record without a first name, so a JOHN without a date of birth holding
    PETER's SSN joined them."""
    from ids_lakehouse.identity import linkage, mpi

    pairs = pl.DataFrame({"unique_id_l": ["a"], "unique_id_r": ["c"],
                          "match_probability": [0.6],
                          "gamma_first_name": [linkage.FIRST_NAME_DISAGREES],
                          "gamma_last_name": [4], "gamma_dob": [0], "gamma_identifier": [-1]})
    apart = mpi.held_apart(pairs, pl.DataFrame(schema={
        "unique_id_l": pl.String, "unique_id_r": pl.String, "decision": pl.String}))
    assert sorted(apart["reason"].to_list()) == sorted([TWINS_GUARD, linkage.DOB_CONFLICT])
    chain = _pairs(("a", "b", 12.0, False, False), ("b", "c", 11.0, True, False))
    cluster = dict(clustering.cluster(IDS, chain, _decided(), apart, NO_PRIOR)
                   .clusters.iter_rows())
    assert cluster["a"] == cluster["b"] != cluster["c"]
