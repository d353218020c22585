"""The attacks a real intruder uses, on the product's own output: two nights through the
real pipeline (land → ingest → conform → identity → marts → releases, Dagster in process),
the second adding three HMIS clients. Each attack also runs against the same data without
the protection, to show it finds what it should (a test that cannot fail proves nothing).
bench/disclosure.py runs the same at 50,000 and 100,000 people."""

from __future__ import annotations

import pytest

from bench import disclosure

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


def test_two_nights_isolate_nobody(nights, attacked):
    # Three client records; the generator makes duplicates, so they may be fewer people.
    assert 1 <= attacked["added_persons"] <= disclosure.ADDED
    for name in ("differencing", "differencing_releases"):
        result = attacked[name]
        assert result["claims"] == 0 and result["isolated_keys"] == 0, (name, result)
        assert result.get("persons_isolated", 0) == 0
    # Control: the same two nights as the audit found them give the new clients away.
    assert attacked["control_differencing"]["persons_isolated"] >= 1, attacked[
        "control_differencing"]


def test_consecutive_research_releases_single_nobody_out(attacked):
    assert attacked["research_differencing"]["delta_below_k"] == 0
    assert attacked["gold_research_differencing"]["delta_below_k"] == 0


def test_research_file_resists_reidentification_with_programs_and_timing(nights, attacked):
    rid = attacked["reidentification"]
    assert rid["records"] > 1000
    # The attacker's knowledge matches almost every record's true person (the rest were
    # linked imperfectly or their golden values differ from the truth).
    assert rid["truth_consistent"] > 0.9 * rid["records"], rid
    assert rid["correct_unique"] == 0, rid
    kw = attacked["k_whole_record"]
    assert kw["k"] >= 11 and kw["k_pycanon"] == kw["k"] and kw["records_below_k"] == 0


def test_reidentification_succeeds_on_the_old_file(attacked):
    """Control: k on demographics alone with participation by year (the file the audit
    broke) is re-identified by the same attack on the same population."""
    result = attacked["control_reidentification"]
    assert result["correct_unique"] > 0.05 * result["records"], result
