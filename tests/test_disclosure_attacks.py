"""The attacks a real intruder uses, on the product's own output: two nights through the
real pipeline (land → ingest → conform → identity → marts → releases, Dagster in process),
the second adding three HMIS clients. Each attack also runs against the same data without
the protection, to show it finds what it should (a test that cannot fail proves nothing).
bench/disclosure.py runs the same at 50,000 and 100,000 people."""

from __future__ import annotations

import polars as pl
import pytest

from bench import disclosure
from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.deid import attacks, kanon
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.marts import indicators, people
from ids_lakehouse.model import load_model

PERSONS = 6000


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> disclosure.Nights:
    result = disclosure.two_nights(PERSONS, tmp_path_factory.mktemp("disclosure"))
    for outcome in result.outcomes:
        assert not outcome["runs_failed"] and not outcome["checks_failed"], outcome
    return result


@pytest.fixture(scope="module")
def attacked(nights) -> dict:
    # Every cell is certified or attacked; the LPs (~0.25 s each) run on a sample of the
    # uncertified ones here and on all of them in `make bench`.
    return disclosure.attack(nights, lp_budget_s=120, max_lp_cells=80)


def test_lp_interval_attack_pins_no_cell(attacked):
    lp = attacked["lp"]
    assert lp["cells"] > 100_000 and lp["unresolved"] == 0
    assert lp["certified_without_lp"] + lp["uncertified"] == lp["cells"]
    assert lp["targets"] == min(80, lp["uncertified"])
    assert lp["truth_outside_interval"] == 0 == lp["truth_outside_certificate"]
    assert lp["exact"] == 0 and lp["narrow_small"] == 0, lp


def test_rates_give_back_no_small_count(attacked):
    den = attacked["denominator"]
    assert den["served_recovered"] > 0 and den["claims"] > 0      # the attack ran...
    assert den["certain"] == 0                                    # ...and pinned nothing
    assert attacked["overlap"]["exact"] == 0 == attacked["overlap"]["narrow_small"]


def _old_style(nights, without_added: bool) -> pl.DataFrame:
    """The indicators as the audit found them: exact counts, 1-10 hidden, zeros published,
    no hold-back; from every current fact (with the added clients: night 2; without:
    night 1)."""
    policy, model = load_policy(), load_model()
    lake = Lake(nights.lake)
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    persons = people.golden_persons(records, xref)
    if without_added:
        added = disclosure.added_combinations(nights)["person_id"].unique()
        persons = persons.filter(~pl.col("person_id").is_in(added.implode()))
    years = people.program_years(enrollment, xref, 2019, model.as_of)
    facts = indicators.facts(years, persons).with_columns(pl.lit(0).alias("record_key"))
    cube = indicators._cube(facts, indicators._domain(model, policy))
    small = pl.col("persons").is_between(1, policy.min_cell_size - 1)
    return cube.with_columns(pl.when(small).then(None).otherwise(pl.col("persons"))
                             .alias("persons")).drop("key_sum")


def test_two_nights_isolate_nobody(nights, attacked):
    # Three client records; the generator makes duplicates, so they may be fewer people.
    assert 1 <= attacked["added_persons"] <= disclosure.ADDED
    for name in ("differencing", "differencing_releases"):
        result = attacked[name]
        assert result["claims"] == 0 and result["isolated_keys"] == 0, (name, result)
        assert result.get("persons_isolated", 0) == 0
    # Control: the same two nights as the audit found them give the new clients away.
    control = attacks.differencing_attack(
        _old_style(nights, without_added=True),
        _old_style(nights, without_added=False), indicators.FIXED,
        indicators.ADDITIVE, truth=disclosure.added_combinations(nights).drop("person_id"))
    assert control["persons_isolated"] >= 1, control


def test_consecutive_research_releases_single_nobody_out(attacked):
    assert attacked["research_differencing"]["delta_below_k"] == 0


def test_research_file_resists_reidentification_with_programs_and_timing(nights, attacked):
    rid = attacked["reidentification"]
    assert rid["records"] > 1000
    # The attacker's knowledge matches almost every record's true person (the rest were
    # linked imperfectly or their golden values differ from the truth).
    assert rid["truth_consistent"] > 0.9 * rid["records"], rid
    assert rid["correct_unique"] == 0, rid
    kw = attacked["k_whole_record"]
    assert kw["k"] >= 11 and kw["k_pycanon"] == kw["k"] and kw["records_below_k"] == 0


def test_reidentification_succeeds_on_the_old_file(nights):
    """Control: k on demographics alone with participation by year (the file the audit
    broke) is re-identified by the same attack on the same population."""
    policy, model = load_policy(), load_model()
    lake = Lake(nights.lake)
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    persons = people.golden_persons(records, xref)
    years = people.program_years(enrollment, xref, 2019, model.as_of)
    from ids_lakehouse.deid.safe_harbor import birth_year, zip3

    demo = persons.select("person_id", birth_year(pl.col("dob"), model.as_of.year)
                          .alias("birth_year"), pl.col("sex").fill_null("U"),
                          "race_ethnicity", zip3(pl.col("zip")).fill_null("UNKNOWN")
                          .alias("zip3"), pl.col("county_fips").fill_null("UNKNOWN"))
    none = years.clear()
    old = kanon.anonymise(demo, none, policy.research_quasi_identifiers, 11,
                          [{"birth_year": 5}, {"zip3": "drop"}, {"birth_year": 10}],
                          0.05, 2019, model.as_of.year)
    spells = kanon.periods(years, 1, 2019, model.as_of.year).join(
        old.persons.select("person_id"), on="person_id", how="semi")
    truth = disclosure._true_person(nights.lake, nights.landing).rename(
        {"person_id": "pseudonym"})
    result = attacks.reidentification_attack(
        old.persons.rename({"person_id": "pseudonym"}),
        spells.rename({"person_id": "pseudonym"}), disclosure.background(nights), truth)
    assert result["correct_unique"] > 0.05 * result["records"], result
