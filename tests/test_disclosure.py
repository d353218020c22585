"""Disclosure control on crafted data: cell-key perturbation, hold-back of small changes,
k-anonymity over the whole record (checked independently with pycanon), Safe Harbor,
pseudonyms, the scanner. The attacks on the product's own marts: test_attacks.py."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ids_lakehouse.deid import cellkey, kanon, scanner
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.deid.pseudonym import derive_key, pseudonymise
from ids_lakehouse.deid.safe_harbor import age_band, birth_year, zip3
from ids_lakehouse.marts.indicators import ALL

POLICY = load_policy()
SECRET = b"s" * 32


def people(n: int, prefix: str = "P") -> pl.Series:
    return pl.Series("person_id", [f"{prefix}{i:05d}" for i in range(n)])


def published_count(ids: pl.Series, secret: bytes = SECRET, min_cell: int = 11):
    keys = cellkey.record_keys(ids, secret)
    frame = pl.DataFrame({"persons": [ids.len()],
                          "key_sum": [int(keys.cast(pl.Int64).sum())]})
    value, reason = cellkey.publish(pl.col("persons"), cellkey.cell_key(pl.col("key_sum")),
                                    POLICY.cell_key_perturbation, min_cell)
    return frame.select(value.alias("v"), reason.alias("r")).row(0)


def test_cell_key_perturbation_is_consistent_bounded_and_keyed():
    ids = people(40)
    assert published_count(ids) == published_count(ids)             # same persons, same value
    assert published_count(ids.reverse()) == published_count(ids)   # order does not matter
    values = {published_count(people(40, prefix=p))[0] for p in "ABCDEFGHJK"}
    assert len(values) > 1 and all(35 <= v <= 45 for v in values)  # noise, within +-5
    # The noise depends on the secret: another key gives other values for the same people.
    assert {published_count(people(40, p), b"t" * 32)[0] for p in "ABCDEFGHJK"} != values


def test_perturbation_follows_the_declared_p_table():
    n = 20_000
    keys = pl.Series(np.random.default_rng(1).integers(0, cellkey.MODULUS, n, dtype=np.int64))
    noise = pl.select(cellkey.perturbation(pl.lit(keys), POLICY.cell_key_perturbation)
                      ).to_series()
    shares = noise.value_counts(normalize=True).sort(noise.name)
    for value, share in shares.iter_rows():
        assert abs(share - POLICY.cell_key_perturbation[value]) < 0.01, value
    assert abs(noise.mean()) < 0.03


def test_small_and_zero_cells_are_not_published_and_say_nothing_about_which():
    for n in (0, 1, 5, 10):
        assert published_count(people(n))[0] is None
    reasons = {published_count(people(n))[1] for n in (1, 10)}
    assert reasons == {"below_min_cell"}
    # A true count of 11..13 may be published (>= 11) or, if its noise takes it under 11,
    # hidden too; no published value is ever under 11.
    for p in "ABCDEFGHJKLMNOPQRSTUVWXYZ":
        value, reason = published_count(people(11, p))
        assert (value is None and reason == "below_min_cell_after_perturbation") or value >= 11


def test_indicator_totals_are_perturbed_independently_and_never_expose_small_cells():
    from ids_lakehouse.marts import indicators
    from ids_lakehouse.model import load_model

    model = load_model()
    county = model.codes("county_fips")[0]
    facts = pl.DataFrame({
        "person_id": [f"P{i:04d}" for i in range(60)], "year": [2024] * 60,
        "program": ["HMIS"] * 60, "county_fips": [county] * 60,
        "age_band": ["25-44"] * 57 + ["45-64"] * 3, "sex": ["F"] * 60,
        "race_ethnicity": ["WHITE"] * 60, "under_6": [False] * 60},
        schema_overrides={"year": pl.Int32})
    keys = facts.select("person_id", cellkey.record_keys(facts["person_id"], SECRET))
    table, register = indicators.build(facts, keys, model, POLICY)
    assert not (table["persons"] < 11).any()
    cell = table.filter(pl.col("county_fips") == county, pl.col("sex") == "F",
                        pl.col("race_ethnicity") == "WHITE")
    three = cell.filter(pl.col("age_band") == "45-64")["persons"][0]
    total, big = (cell.filter(pl.col("age_band") == b)["persons"][0] for b in ("ALL", "25-44"))
    assert three is None and 55 <= total <= 65 and 52 <= big <= 62
    # The suppressed reason and the true count live in the restricted register only.
    assert set(table.columns) == {*indicators.FIXED, *indicators.ADDITIVE, "persons",
                                  "rate_per_1000_served"}
    hidden = register.filter(pl.col("true_persons") == 3)
    assert hidden.height > 0 and set(hidden["reason"]) == {"below_min_cell"}


def test_holdback_lets_a_change_through_only_when_k_units_share_it():
    from ids_lakehouse.deid import holdback

    def rows(ids, county):
        return pl.DataFrame({"person_id": ids, "county": [county] * len(ids)})

    night1 = rows([f"P{i}" for i in range(30)], "A")
    first = holdback.advance(None, night1, ["person_id"], ["county"], 11)
    assert first.basis.height == 30 and first.held_back == 0
    # Three arrivals: held back, the basis (and so every table) does not move.
    night2 = pl.concat([night1, rows(["N1", "N2", "N3"], "B")])
    second = holdback.advance(first.basis, night2, ["person_id"], ["county"], 11)
    assert second.basis.sort("person_id").equals(first.basis.sort("person_id"))
    assert (second.applied, second.held_back) == (0, 3)
    # Eleven of the same kind move together; a lone mover A -> C still waits.
    night3 = pl.concat([rows([f"P{i}" for i in range(1, 30)], "A"), rows(["P0"], "C"),
                        rows([f"N{i}" for i in range(1, 12)], "B")])
    third = holdback.advance(second.basis, night3, ["person_id"], ["county"], 11)
    assert (third.applied, third.held_back) == (11, 1)
    got = dict(third.basis.iter_rows())
    assert got["P0"] == "A" and got["N11"] == "B" and len(got) == 41
    # Eleven leaving together go; the basis never holds a unit twice.
    night4 = rows([f"P{i}" for i in range(11, 30)], "A")
    fourth = holdback.advance(third.basis, night4, ["person_id"], ["county"], 11)
    assert fourth.basis["person_id"].n_unique() == fourth.basis.height
    assert not set(fourth.basis["person_id"]) & {f"P{i}" for i in range(1, 11)}


def test_holdback_thresholds_are_secret_per_change_and_bounded():
    from ids_lakehouse.deid import holdback

    def night(n_new: int, county: str) -> pl.DataFrame:
        ids = [f"P{i}" for i in range(30)] + [f"N{county}{i}" for i in range(n_new)]
        return pl.DataFrame({"person_id": ids, "county": ["A"] * 30 + [county] * n_new})

    first = holdback.advance(None, night(0, "B"), ["person_id"], ["county"], 11).basis
    moved = {}
    for county in "BCDEFGHJKLMNPQRSTUVW":
        for n in range(11, 22):
            step = holdback.advance(first, night(n, county), ["person_id"], ["county"], 11,
                                    secret=b"k" * 32, spread=10)
            if step.applied:
                moved[county] = n
                break
    # Every kind of change moves by k + 10 at the latest, at its own secret threshold...
    assert set(moved) == set("BCDEFGHJKLMNPQRSTUVW")
    assert len(set(moved.values())) > 3 and all(11 <= n <= 21 for n in moved.values())
    # ...which does not change for the same kind of change.
    again = holdback.advance(first, night(moved["B"], "B"), ["person_id"], ["county"], 11,
                             secret=b"k" * 32, spread=10)
    assert again.applied == moved["B"]


def participation_facts(rng, ids, years=range(2019, 2026)):
    return pl.DataFrame([(p, prog, y) for p in ids for prog in ("HMIS", "MEDICAID", "K12")
                         if rng.random() < 0.4 for y in years if rng.random() < 0.5],
                        schema={"person_id": pl.String, "program": pl.String,
                                "year": pl.Int32}, orient="row")


def test_k_anonymity_holds_over_the_whole_record_and_pycanon_agrees():
    import random

    from pycanon import anonymity

    rng = random.Random(3)
    ids = [f"P{i:04d}" for i in range(3000)]
    demo = pl.DataFrame({"person_id": ids,
                         "birth_year": [str(rng.randint(1950, 2010)) for _ in ids],
                         "sex": [rng.choice("FM") for _ in ids],
                         "race_ethnicity": [rng.choice(["WHITE", "ASIAN", "NHPI", "HISPANIC"])
                                            for _ in ids],
                         "zip3": [rng.choice(["980", "981", "993"]) for _ in ids],
                         "county_fips": ["033"] * len(ids)})
    facts = participation_facts(rng, ids)
    qis = ["birth_year", "sex", "race_ethnicity", "zip3", "county_fips"]
    assert kanon.k_of(demo, qis) < 11
    result = kanon.anonymise(demo, facts, qis, 11, POLICY.generalisation, 0.05, 2019, 2025)
    assert result.k >= 11 and result.suppression_rate <= 0.05
    assert result.applied and len(result.applied) == result.level
    # The released files, as a recipient gets them: each person row plus the set of their
    # (program, period) rows. pycanon measures the same k on that whole record.
    sig = kanon.signatures(result.periods)
    record = result.persons.join(sig, on="person_id", how="left").fill_null("")
    k = anonymity.k_anonymity(record.drop("person_id").to_pandas(),
                              [*qis, kanon.PARTICIPATION])
    assert k == result.k == kanon.whole_record_k(
        result.persons.rename({"person_id": "pseudonym"}),
        result.periods.rename({"person_id": "pseudonym"}), qis)


def test_demographics_alone_are_not_the_quasi_identifiers():
    """k = 11 on demographics is not enough: the programs and years a person was in make
    records unique, and the anonymiser counts them."""
    import random

    rng = random.Random(5)
    ids = [f"P{i:04d}" for i in range(500)]
    demo = pl.DataFrame({"person_id": ids, "sex": [rng.choice("FM") for _ in ids]})
    facts = participation_facts(rng, ids)
    assert kanon.k_of(demo, ["sex"]) >= 11                    # demographics look safe...
    record = demo.join(kanon.signatures(kanon.periods(facts, 1, 2019, 2025)),
                       on="person_id", how="left").fill_null("")
    assert kanon.k_of(record, ["sex", kanon.PARTICIPATION]) == 1   # ...the whole record is not
    none = kanon.anonymise(demo, facts, ["sex"], 11, [], 1.0, 2019, 2025)
    assert none.suppression_rate > 0.5 and none.k >= 11
    ladder = [{"participation": 3}, {"participation": "all"}]
    safe = kanon.anonymise(demo, facts, ["sex"], 11, ladder, 0.05, 2019, 2025)
    assert safe.k >= 11 and safe.participation_years == "all"
    assert set(safe.periods["period"]) == {"2019-2025"}


def test_generalisation_works_on_bands_and_says_what_it_did():
    df = pl.DataFrame({"person_id": ["a", "b", "c", "d"],
                       "birth_year": ["1987", "1985-1989", "<=1935", "UNKNOWN"],
                       "race_ethnicity": ["NHPI", "WHITE", "*", "AIAN"]})
    ten = kanon._generalise(df, "birth_year", 10)
    assert ten["birth_year"].to_list() == ["1980-1989", "1980-1989", "<=1935", "UNKNOWN"]
    twenty = kanon._generalise(ten, "birth_year", 20)
    assert twenty["birth_year"].to_list()[:2] == ["1980-1999", "1980-1999"]
    broad = kanon._generalise(df, "race_ethnicity", "broad")
    assert broad["race_ethnicity"].to_list() == ["OTHER", "WHITE", "*", "OTHER"]
    facts = pl.DataFrame({"person_id": ["a"], "program": ["HMIS"], "year": [2020]},
                         schema_overrides={"year": pl.Int32})
    out = kanon.anonymise(df, facts, ["birth_year"], 2, [{"birth_year": 5},
                                                         {"birth_year": 10}], 0.0, 2019, 2025)
    assert out.applied == ["birth_year: 5", "birth_year: 10"]


def test_local_suppression_over_the_policy_is_reported():
    df = pl.DataFrame({"person_id": [f"p{i}" for i in range(30)],
                       "sex": ["F"] * 20 + ["M"] * 10})
    facts = pl.DataFrame(schema={"person_id": pl.String, "program": pl.String,
                                 "year": pl.Int32})
    out = kanon.anonymise(df, facts, ["sex"], 11, [], 0.05, 2019, 2025)
    assert out.suppressed == 10 and out.suppression_rate > 0.05 and out.k == 20


def test_safe_harbor_transforms():
    z = pl.select(zip3(pl.lit(pl.Series(["98101", "03601", "89301", None])))).to_series()
    assert z.to_list() == ["981", "000", "000", None]
    ages = pl.select(age_band(pl.lit(pl.Series([0, 17, 89, 90, 104, None, -1])))).to_series()
    assert ages.to_list() == ["0-4", "5-17", "65-89", "90+", "90+", "UNKNOWN", "UNKNOWN"]
    years = pl.select(birth_year(pl.lit(pl.Series(
        [dt.date(1990, 5, 1), dt.date(1930, 1, 1), None])), 2025)).to_series()
    assert years.to_list() == ["1990", "<=1935", "UNKNOWN"]


def test_pseudonyms_are_keyed_per_release():
    ids = pl.Series("person_id", ["P00000000000000AA", "P00000000000000AB"])
    master = b"m" * 32
    a1 = pseudonymise(ids, derive_key(master, "release/a"))
    a2 = pseudonymise(ids, derive_key(master, "release/a"))
    b = pseudonymise(ids, derive_key(master, "release/b"))
    assert a1.to_list() == a2.to_list()                   # stable within a release
    assert not set(a1) & set(b)                           # cannot be joined across releases
    assert a1[0] != a1[1] and all(len(p) == 32 for p in a1)
    other = pseudonymise(ids, derive_key(b"n" * 32, "release/a"))
    assert not set(other) & set(a1)                       # the secret matters


@pytest.mark.parametrize("key_length", [1, 32, 64, 65, 200])
def test_pseudonyms_are_hmac_sha256_of_the_person_id(key_length):
    import hashlib
    import hmac
    import random

    rng = random.Random(key_length)
    key = bytes(rng.randrange(256) for _ in range(key_length))
    ids = [f"P{rng.randrange(10 ** 12):012d}" for _ in range(300)] + ["", "Zoë 李", "P1"]
    for values in (ids, ids + ids[:50]):          # every id distinct; some repeated
        got = pseudonymise(pl.Series("person_id", values), key)
        assert got.name == "person_id"
        assert got.to_list() == [hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:32]
                                 for v in values]


def test_missing_key_is_a_clear_error(monkeypatch):
    from ids_lakehouse import config

    monkeypatch.delenv("IDS_PSEUDONYM_KEY", raising=False)
    with pytest.raises(config.MissingSecretError, match="IDS_PSEUDONYM_KEY"):
        config.pseudonym_key()


def test_scanner_finds_identifiers_and_ignores_safe_values():
    bad = pl.DataFrame({
        "a": ["553-95-0378", "ok"], "b": ["call (206) 555-0100", "x"],
        "c": ["ann@example.com", "y"], "d": ["born 1990-05-01", "z"],
        "e": ["P0123456789ABCDEF", "w"], "f": ["ANN LEE", "v"],
        "g": [dt.date(1990, 1, 1), None]})
    rules = {(f.column, f.rule) for f in scanner.scan(bad, {"ANN LEE"})}
    assert rules == {("a", "ssn"), ("b", "phone"), ("c", "email"), ("d", "full_date"),
                     ("e", "person_id"), ("f", "full_name"), ("g", "full_date_column")}
    safe = pl.DataFrame({
        "pseudonym": pseudonymise(pl.Series(["P1", "P2", "P3"]), b"k" * 32),
        "birth_year": ["1990", "<=1935", "1980-1989"], "zip3": ["981", "000", "*"],
        "race": ["WHITE", "ASIAN", "HISPANIC"], "n": [1, 2, 3]})
    assert scanner.scan(safe, {"ANN LEE"}) == []


def test_indicator_counts_are_distinct_people_in_every_cell():
    """The cube sums its finest cells into totals; check every cell against a direct
    distinct count, with people in several programs and years and a birthday that moves
    them between age bands."""
    import itertools
    import random

    from ids_lakehouse.deid.policy import load_policy
    from ids_lakehouse.marts import indicators
    from ids_lakehouse.model import load_model

    model, policy = load_model(), load_policy()
    rng = random.Random(7)
    counties = model.codes("county_fips")[:3]
    persons = pl.DataFrame({
        "person_id": [f"P{i:03d}" for i in range(300)],
        "county_fips": [rng.choice([*counties, None]) for _ in range(300)],
        "dob": [dt.date(rng.randint(1940, 2020), rng.randint(1, 12), rng.randint(1, 28))
                for _ in range(300)],
        "sex": [rng.choice(["F", "M", None]) for _ in range(300)],
        "race_ethnicity": [rng.choice(["WHITE", "BLACK", "HISPANIC"]) for _ in range(300)]})
    years = pl.DataFrame(
        [(p, prog, y) for p in persons["person_id"] for prog in ("MEDICAID", "SNAP")
         for y in (2022, 2023) if rng.random() < 0.6],
        schema={"person_id": pl.String, "program": pl.String, "year": pl.Int32},
        orient="row")
    facts = indicators.facts(years, persons)
    ids = facts["person_id"].unique()
    keys = pl.DataFrame({"person_id": ids, "record_key": cellkey.record_keys(ids, SECRET)})
    cube = indicators._cube(facts.join(keys, on="person_id"), indicators.domain(model, policy))
    rates_checked = 0
    for r in range(len(indicators.ADDITIVE) + 1):
        for kept in itertools.combinations(indicators.ADDITIVE, r):
            direct = facts.group_by(["year", "program", *kept]).agg(
                pl.col("person_id").n_unique().alias("direct")).join(
                facts.group_by(["year", *kept]).agg(  # served in any program: the rate's base
                    pl.col("person_id").n_unique().alias("served")), on=["year", *kept])
            cells = cube.filter(*[pl.col(d) == ALL for d in indicators.ADDITIVE
                                  if d not in kept], *[pl.col(d) != ALL for d in kept])
            joined = cells.join(direct, on=["year", "program", *kept], how="left")
            assert joined.height > 0
            assert (joined["persons"] == joined["direct"].fill_null(0)).all(), kept
            rates_checked += joined.height
    assert rates_checked > 20
    # What is published: within the p-table's bound of the truth, never under 11, and the
    # rate is computed from the two published counts only.
    table, _ = indicators.build(facts, keys, model, policy)
    both = table.join(cube, on=[*indicators.FIXED, *indicators.ADDITIVE], suffix="_true")
    shown = both.filter(pl.col("persons").is_not_null())
    assert shown.height > 0 and (shown["persons"] >= 11).all()
    assert ((shown["persons"] - shown["persons_true"]).abs() <= policy.max_perturbation).all()
    served = indicators._cube(facts.join(keys, on="person_id").with_columns(
        pl.lit(indicators.SERVED).alias("program")), indicators.domain(model, policy)).drop(
        "program", "key_sum").rename({"persons": "served_true"})
    rated = shown.filter(pl.col("rate_per_1000_served") > 0).join(
        served, on=["year", *indicators.ADDITIVE])
    implied = rated["persons"] * 1000 / rated["rate_per_1000_served"]
    assert rated.height > 0 and (implied >= 10.5).all()
    assert ((implied - rated["served_true"]).abs() <= policy.max_perturbation + 0.5).all()


def test_golden_person_takes_the_most_common_value_and_the_smallest_on_a_tie():
    from ids_lakehouse.marts import people

    records = pl.DataFrame({
        "source": ["a", "b", "c", "a", "b"],
        "source_record_id": ["1", "2", "3", "4", "5"],
        **{c: [None] * 5 for c in people.ATTRIBUTES},
        "race": ["WHITE", "ASIAN", "ASIAN", None, None],
        "hispanic": [None, None, None, "Y", "N"],
        "first_name": ["ANN", "ANNE", "ANN", "BO", "BOB"],
    }, schema_overrides={"dob": pl.Date})
    xref = pl.DataFrame({"source": ["a", "b", "c", "a", "b"],
                         "source_record_id": ["1", "2", "3", "4", "5"],
                         "person_id": ["P2", "P2", "P2", "P1", "P1"]})
    golden = people.golden_persons(records, xref)
    assert golden["person_id"].to_list() == ["P1", "P2"]
    p1, p2 = golden.rows(named=True)
    assert (p2["first_name"], p2["race"], p2["sources"]) == ("ANN", "ASIAN", "a,b,c")
    assert (p1["first_name"], p1["hispanic"], p1["race_ethnicity"]) == ("BO", "N", "UNKNOWN")
    assert p1["dob"] is None and p1["sources"] == "a,b"
