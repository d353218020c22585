"""Disclosure control on crafted data: suppression (including the subtraction attack),
k-anonymity (checked independently with pycanon), Safe Harbor, pseudonyms, the scanner."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ids_lakehouse.deid import kanon, scanner
from ids_lakehouse.deid.pseudonym import derive_key, pseudonymise
from ids_lakehouse.deid.safe_harbor import age_band, birth_year, zip3
from ids_lakehouse.deid.suppression import ALL, audit, suppress
from ids_lakehouse.marts import overlap

ADDITIVE, FIXED = ["county", "sex"], ["year"]


def cube(detail: dict[tuple[str, str], int]) -> pl.DataFrame:
    """A county x sex table with ALL totals, from detail counts."""
    rows = [("2024", c, s, n) for (c, s), n in detail.items()]
    counties = sorted({c for c, _ in detail})
    sexes = sorted({s for _, s in detail})
    for c in counties:
        rows.append(("2024", c, ALL, sum(detail[(c, s)] for s in sexes)))
    for s in sexes:
        rows.append(("2024", ALL, s, sum(detail[(c, s)] for c in counties)))
    rows.append(("2024", ALL, ALL, sum(detail.values())))
    return pl.DataFrame(rows, schema={"year": pl.String, "county": pl.String, "sex": pl.String,
                                      "persons": pl.Int64}, orient="row")


DETAIL = {("001", "F"): 40, ("001", "M"): 3, ("003", "F"): 25, ("003", "M"): 30,
          ("005", "F"): 0, ("005", "M"): 18}


def published(protected: pl.DataFrame) -> pl.DataFrame:
    return protected.with_columns(pl.when(pl.col("suppressed")).then(None)
                                  .otherwise(pl.col("persons")).alias("persons"))


def attack(table: pl.DataFrame) -> dict[tuple, int]:
    """Recover hidden cells by subtraction: a line with one hidden cell gives it away."""
    recovered = {}
    for d in ADDITIVE:
        keys = [*FIXED, *[a for a in ADDITIVE if a != d]]
        for _, line in table.group_by(keys):
            hidden = line.filter(pl.col("persons").is_null())
            if hidden.height != 1:
                continue
            total = line.filter(pl.col(d) == ALL)["persons"]
            parts = line.filter(pl.col(d) != ALL)["persons"].drop_nulls().sum()
            cell = hidden.row(0, named=True)
            value = (parts if cell[d] == ALL else total[0] - parts)
            recovered[(cell["county"], cell["sex"])] = value
    return recovered


def test_primary_suppression_alone_can_be_undone_by_subtraction():
    table = cube(DETAIL)
    primary_only = table.with_columns(
        pl.when(pl.col("persons").is_between(1, 10)).then(None).otherwise(pl.col("persons"))
        .alias("persons"))
    assert attack(primary_only)[("001", "M")] == 3        # the attack works...
    assert not audit(primary_only, ADDITIVE, FIXED, "persons", 11)["passed"]


def test_complementary_suppression_defeats_the_attack():
    protected = suppress(cube(DETAIL), ADDITIVE, FIXED, "persons", min_cell=11)
    table = published(protected)
    assert attack(table) == {}                              # ...and now it does not
    result = audit(table, ADDITIVE, FIXED, "persons", 11)
    assert result["passed"], result
    cell = protected.filter((pl.col("county") == "001") & (pl.col("sex") == "M"))
    assert cell["suppression"][0] == "primary"
    assert (protected["suppression"] == "complementary").sum() >= 1
    zero = protected.filter((pl.col("county") == "005") & (pl.col("sex") == "F"))
    assert zero["persons"][0] == 0                          # zero is publishable
    assert not (published(protected)["persons"].is_between(1, 10)).any()


def test_suppression_audit_catches_totals_that_do_not_add_up():
    table = cube(DETAIL).with_columns(
        pl.when((pl.col("county") == ALL) & (pl.col("sex") == ALL)).then(999)
        .otherwise(pl.col("persons")).alias("persons"))
    assert audit(table, ADDITIVE, FIXED, "persons", 11)["lines_not_adding_up"] > 0


def test_overlap_pair_is_suppressed_when_subtraction_reveals_a_small_group():
    ids = [f"p{i}" for i in range(40)]
    years = pl.DataFrame({
        "person_id": ids[:30] + ids[:27] + ids[:5],
        "program": ["A"] * 30 + ["B"] * 27 + ["C"] * 5,
        "year": [2024] * 62}, schema_overrides={"year": pl.Int32})
    persons = pl.DataFrame({"person_id": ids, "dob": [dt.date(2000, 1, 1)] * 40})
    out = overlap.build(years, persons, 11, 2019, 2025)
    row = {(a, b): (n, s) for a, b, n, s in
           out.select("program_a", "program_b", "persons", "suppression").iter_rows()}
    assert row[("A", "B")] == (None, "complementary")   # 30 - 27 = 3 would be revealed
    assert row[("C", None)] == (None, "primary")
    assert row[("A", None)] == (30, None)


def test_k_anonymity_reached_and_confirmed_by_pycanon():
    from pycanon import anonymity

    rows = []
    for i in range(600):
        rows.append({"birth_year": str(1950 + i % 50), "sex": "FM"[i % 2],
                     "race_ethnicity": ["WHITE", "ASIAN", "NHPI", "HISPANIC"][i % 4],
                     "zip3": ["980", "981", "993"][i % 3], "county_fips": "033"})
    df = pl.DataFrame(rows)
    qis = list(df.columns)
    assert kanon.k_of(df, qis) < 11
    ladder = [{"birth_year": 5}, {"birth_year": 10}, {"zip3": "drop"},
              {"birth_year": 20, "race_ethnicity": "broad"}]
    result = kanon.anonymise(df, qis, 11, ladder, max_suppression=0.05)
    assert result.k >= 11 and result.level >= 1
    assert result.suppressed <= 0.05 * df.height
    assert anonymity.k_anonymity(result.frame.to_pandas(), qis) == result.k


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
    cube = indicators.build(years, persons, model, policy)
    facts = indicators._facts(years, persons)
    rates_checked = 0
    for r in range(len(indicators.ADDITIVE) + 1):
        for kept in itertools.combinations(indicators.ADDITIVE, r):
            direct = facts.group_by(["year", "program", *kept]).agg(
                pl.col("person_id").n_unique().alias("direct")).join(
                facts.group_by(["year", *kept]).agg(  # served in any program: the rate's base
                    pl.col("person_id").n_unique().alias("served")), on=["year", *kept])
            cells = cube.filter(*[pl.col(d) == ALL for d in indicators.ADDITIVE
                                  if d not in kept], *[pl.col(d) != ALL for d in kept],
                                ~pl.col("suppressed"))
            joined = cells.join(direct, on=["year", "program", *kept], how="left")
            assert joined.height > 0
            assert (joined["persons"] == joined["direct"].fill_null(0)).all(), kept
            rated = joined.filter(pl.col("rate_per_1000_served").is_not_null())
            rates_checked += rated.height
            assert (rated["rate_per_1000_served"] ==
                    (rated["persons"] * 1000 / rated["served"]).round(1)).all(), kept
    assert rates_checked > 20


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
