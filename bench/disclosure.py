"""Disclosure attacks on the product's own output, two nights through the real pipeline.

Night 1: a generated population is landed and every asset materialized (Dagster, in
process, on one temporary instance), releases included. Night 2: the HMIS agency delivers
its extract again with `ADDED` new clients (people from another generated population, ids
re-prefixed so they are new), and everything is materialized again. Then the attacks of
`ids_lakehouse.deid.attacks` run against what recipients hold:

- LP interval attack (HiGHS) over every year x program table of the indicators release;
- the denominator attack (served counts recovered from rates, then differenced);
- differencing of program_overlap;
- two-night differencing of the indicators release, scored against the added clients;
- differencing of the two research releases to the same recipient;
- re-identification of the research release against the generator's true population
  (demographics + programs + the years of participation), and k over the whole released
  record (pycanon).

`python -m bench --only disclosure` runs it at 50,000 and 100,000 people; tests run it
small (tests/test_disclosure_attacks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

SECTION = "disclosure"
SEED = 20251201
EXTRA_SEED = 20251202
ADDED = 3
RESEARCH = "dsa-housing-education-research"
INDICATORS = "dsa-public-indicators"
KEY = "bench-disclosure-key-" + "0" * 32
SIZES = (50_000, 100_000)


@dataclass(frozen=True)
class Nights:
    folder: Path
    landing: Path
    lake: Path
    added_records: list[str]       # HMIS source_record_ids of the clients added on night 2
    outcomes: list[dict]
    night1: dict[str, int]         # gold mart -> its Delta version after night 1


def _add_hmis_clients(landing: Path, folder: Path, count: int) -> list[str]:
    """Night 2's HMIS delivery: yesterday's extract plus `count` new clients."""
    from bench.common import append_to_snapshot
    from ids_lakehouse.synth.generate import generate

    extra = folder / "extra_gen"
    generate(300, seed=EXTRA_SEED, out=extra, chunk_size=300)
    codec = "cp1252"
    src = next((extra / "hmis").glob("*.csv"))
    orig = next((landing / "hmis").glob("*.csv"))
    rows = pl.read_csv(src.read_bytes().decode(codec).encode(), infer_schema=False)
    # Whole clients (all their rows), each with a spell starting in the window (2020 on)
    # so that the marts count them.
    recent = rows.filter(pl.col("EntryDate").str.slice(6, 4).cast(pl.Int32, strict=False)
                         >= 2020)
    ids = recent.unique("PersonalID", keep="first", maintain_order=True)["PersonalID"]
    new = rows.filter(pl.col("PersonalID").is_in(ids.head(count).implode())).with_columns(
        pl.col("PersonalID").str.replace("^HM", "HX"))
    append_to_snapshot(orig, new, codec, landing / "hmis" / "hmis_client_2026-01-01.csv")
    return sorted(set(new["PersonalID"]))


def two_nights(persons: int, folder: Path, seed: int = SEED, added: int = ADDED) -> Nights:
    """Both nights through the product's own path; returns where everything is."""
    from dagster import DagsterInstance

    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.synth.generate import generate
    from pipelines.definitions import build_definitions
    from pipelines.demo import Outcome, materialize_everything

    shutil.rmtree(folder, ignore_errors=True)
    landing, lake = folder / "landing", folder / "lake"
    generate(persons, seed=seed, out=landing)
    saved = {k: os.environ.get(k) for k in ("LANDING_ROOT", "LAKE_ROOT", "IDS_PSEUDONYM_KEY")}
    os.environ.update(LANDING_ROOT=str(landing), LAKE_ROOT=str(lake), IDS_PSEUDONYM_KEY=KEY)
    outcomes = []
    try:
        with DagsterInstance.ephemeral() as instance:
            defs = build_definitions()
            first = Outcome()
            materialize_everything(defs, instance, first)
            outcomes.append(vars(first))
            night1 = {m: delta.table(Lake(lake).gold(m)).version()
                      for m in ("indicators", "program_overlap", "research_person",
                                "research_participation")}
            added_ids = _add_hmis_clients(landing, folder, added)
            second = Outcome()
            materialize_everything(defs, instance, second)
            outcomes.append(vars(second))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Nights(folder, landing, lake, added_ids, outcomes, night1)


def _release(lake: Path, agreement: str, version: int) -> dict[str, pl.DataFrame]:
    folder = next(lake.glob(f"*/releases/{agreement}")) / f"v{version:04d}"
    return {p.stem: pl.read_parquet(p) for p in folder.glob("*.parquet")}


def _versions(lake: Path, agreement: str) -> list[int]:
    return sorted(int(p.name[1:]) for p in lake.glob(f"*/releases/{agreement}/v*")
                  if (p / "manifest.json").exists())


def _true_person(lake: Path, landing: Path) -> pl.DataFrame:
    """person_id -> true_person_id (the true person most of the person's records are)."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake

    xref = pl.from_arrow(delta.read(Lake(lake).identity("person_xref")))
    truth = pl.read_parquet(landing / "_truth" / "person_truth.parquet")
    return (xref.join(truth, on=["source", "source_record_id"])
            .group_by("person_id", "true_person_id").len()
            .sort(["person_id", "len", "true_person_id"], descending=[False, True, False])
            .unique("person_id", keep="first").select("person_id", "true_person_id"))


def background(nights: Nights) -> pl.DataFrame:
    """The attacker's exact knowledge: every true person's demographics (the generator's
    population) and the years they were in each program (their delivered spells)."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.deid.safe_harbor import zip3
    from ids_lakehouse.marts import people
    from ids_lakehouse.model import load_model

    lake = Lake(nights.lake)
    pop = pl.read_parquet(nights.landing / "_truth" / "persons.parquet")
    truth = pl.read_parquet(nights.landing / "_truth" / "person_truth.parquet")
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    # The true person of each enrolment record stands in for the person_id, so the years
    # are computed exactly as the marts compute them.
    true_xref = truth.rename({"true_person_id": "person_id"})
    years = people.program_years(enrollment, true_xref, 2019, load_model().as_of)
    programs = years.group_by("person_id").agg(
        pl.struct("program", "year").alias("program_years")).rename(
        {"person_id": "true_person_id"})
    race = pl.when(pl.col("hispanic").fill_null(False)).then(pl.lit("HISPANIC")) \
        .otherwise(pl.col("race").fill_null("UNKNOWN"))
    return pop.select(
        "true_person_id", pl.col("dob").dt.year().cast(pl.Int32).alias("birth_year"),
        pl.col("sex"), race.alias("race_ethnicity"),
        zip3(pl.col("zip")).alias("zip3"), pl.col("county_fips"),
    ).join(programs, on="true_person_id", how="left")


def added_combinations(nights: Nights) -> pl.DataFrame:
    """The finest indicator cells (year, program and the four dimensions) of the people
    added on night 2, as the marts would count them: the attacker's target."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.marts import indicators, people
    from ids_lakehouse.model import load_model

    lake = Lake(nights.lake)
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    ids = xref.filter((pl.col("source") == "hmis")
                      & pl.col("source_record_id").is_in(nights.added_records))["person_id"]
    persons = people.golden_persons(records, xref).filter(pl.col("person_id").is_in(ids))
    years = people.program_years(enrollment, xref, 2019, load_model().as_of)
    facts = indicators.facts(years.filter(pl.col("person_id").is_in(ids)), persons)
    return facts.select("person_id", *indicators.FIXED, *indicators.ADDITIVE)


def _linked(nights: Nights) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(golden persons, program years) as the marts compute them, from night 2's lake."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.marts import people
    from ids_lakehouse.model import load_model

    lake = Lake(nights.lake)
    xref = pl.from_arrow(delta.read(lake.identity("person_xref")))
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    enrollment = pl.from_arrow(delta.read(lake.silver("enrollment")))
    return (people.golden_persons(records, xref),
            people.program_years(enrollment, xref, 2019, load_model().as_of))


def old_style_indicators(nights: Nights, without_added: bool) -> pl.DataFrame:
    """Control: the indicators as the audit found them (exact counts, 1-10 hidden, zeros
    published, no hold-back), from every current fact; `without_added` leaves out the
    people added on night 2 (so: night 1)."""
    from ids_lakehouse.deid.policy import load_policy
    from ids_lakehouse.marts import indicators
    from ids_lakehouse.model import load_model

    policy, model = load_policy(), load_model()
    persons, years = _linked(nights)
    if without_added:
        added = added_combinations(nights)["person_id"].unique()
        persons = persons.filter(~pl.col("person_id").is_in(added.implode()))
    facts = indicators.facts(years, persons).with_columns(pl.lit(0).alias("record_key"))
    cube = indicators._cube(facts, indicators.domain(model, policy))
    small = pl.col("persons").is_between(1, policy.min_cell_size - 1)
    return cube.with_columns(pl.when(small).then(None).otherwise(pl.col("persons"))
                             .alias("persons")).drop("key_sum")


def old_style_reidentification(nights: Nights) -> dict:
    """Control: the research file as the audit found it (k on demographics only, spells
    by year) attacked the same way."""
    from ids_lakehouse.deid import attacks, kanon
    from ids_lakehouse.deid.policy import load_policy
    from ids_lakehouse.deid.safe_harbor import birth_year, zip3
    from ids_lakehouse.model import load_model

    policy, model = load_policy(), load_model()
    persons, years = _linked(nights)
    demo = persons.select("person_id", birth_year(pl.col("dob"), model.as_of.year)
                          .alias("birth_year"), pl.col("sex").fill_null("U"),
                          "race_ethnicity", zip3(pl.col("zip")).fill_null("UNKNOWN")
                          .alias("zip3"), pl.col("county_fips").fill_null("UNKNOWN"))
    old = kanon.anonymise(demo, years.clear(), policy.research_quasi_identifiers,
                          policy.k_anonymity,
                          [{"birth_year": 5}, {"birth_year": 10}, {"zip3": "drop"},
                           {"birth_year": 20, "race_ethnicity": "broad"},
                           {"county_fips": "drop"}], policy.max_local_suppression,
                          2019, model.as_of.year)
    spells = kanon.periods(years, 1, 2019, model.as_of.year).join(
        old.persons.select("person_id"), on="person_id", how="semi")
    truth = _true_person(nights.lake, nights.landing).rename({"person_id": "pseudonym"})
    return attacks.reidentification_attack(
        old.persons.rename({"person_id": "pseudonym"}),
        spells.rename({"person_id": "pseudonym"}), background(nights), truth)


def lp_audit(lake: Path, table: pl.DataFrame, budget_s: float,
             max_lp_cells: int | None = None) -> dict:
    """The LP interval attack on every cell of an indicators table, made complete: cells the
    true counts certify safe (deid/certify.py: feasible tables far apart) need no LP;
    HiGHS solves the attacker's min and max for every other cell (or, with
    `max_lp_cells`, for a random sample of them: the tests' time-bounded version)."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.deid import attacks, certify
    from ids_lakehouse.deid.policy import load_policy
    from ids_lakehouse.marts import indicators

    policy = load_policy()
    D, m = policy.max_perturbation, policy.min_cell_size
    keys = [*indicators.FIXED, *indicators.ADDITIVE]
    register = pl.from_arrow(delta.read(Lake(lake).disclosure("indicators_cells")))
    truth = register.filter(pl.col("program") != indicators.SERVED).select(
        *keys, pl.col("true_persons").alias("persons"))
    certified = certify.certify(table, truth, indicators.FIXED, indicators.ADDITIVE,
                                "persons", D, (0, m - 1 + D), m)
    left = certify.uncertified(certified, m)
    uncertified = left.height
    if max_lp_cells is not None and left.height > max_lp_cells:
        left = left.sample(max_lp_cells, seed=1)
    result = attacks.lp_interval_attack(
        table, indicators.FIXED, indicators.ADDITIVE, "persons", D, (0, m - 1 + D),
        cells=left.select(keys), time_budget_s=budget_s, min_cell=m, published_min=m,
        truth=table.select(keys).join(truth, on=keys, how="left").fill_null(0))
    result["cells"] = table.height
    result["certified_without_lp"] = table.height - uncertified
    result["uncertified"] = uncertified
    result["truth_outside_certificate"] = certified.filter(
        (pl.col("true") < pl.col("cert_lo")) | (pl.col("true") > pl.col("cert_hi"))).height
    return result


def attack(nights: Nights, lp_budget_s: float = 1800.0, max_lp_cells: int | None = None
           ) -> dict:
    """Every attack on what the recipients of nights 1 and 2 hold; numbers only."""
    from ids_lakehouse import delta
    from ids_lakehouse.config import Lake
    from ids_lakehouse.deid import attacks
    from ids_lakehouse.deid.policy import load_policy
    from ids_lakehouse.deid.pseudonym import derive_key, pseudonymise
    from ids_lakehouse.marts import indicators

    policy = load_policy()
    D, m = policy.max_perturbation, policy.min_cell_size
    null_bounds = (0, m - 1 + D)
    out: dict = {"outcomes": nights.outcomes}
    ind_versions = _versions(nights.lake, INDICATORS)
    res_versions = _versions(nights.lake, RESEARCH)
    out["release_versions"] = {INDICATORS: ind_versions, RESEARCH: res_versions}
    last = _release(nights.lake, INDICATORS, ind_versions[-1])
    table = last["indicators"]
    started = time.perf_counter()
    out["lp"] = lp_audit(nights.lake, table, lp_budget_s, max_lp_cells)
    out["lp"]["seconds"] = round(time.perf_counter() - started, 1)
    out["denominator"] = attacks.denominator_attack(
        table, indicators.FIXED, indicators.ADDITIVE, D=D, min_cell=m,
        null_bounds=null_bounds, published_min=m)
    out["overlap"] = attacks.overlap_attack(last["program_overlap"], D, null_bounds,
                                            min_cell=m, published_min=m)
    # Two nights as an analyst sees them (the gold mart at its night-1 and night-2 Delta
    # versions) and as the dashboard's recipient does (its first and last release).
    gold = Lake(nights.lake).gold("indicators")
    before = pl.from_arrow(delta.read(gold, version=nights.night1["indicators"]))
    after = pl.from_arrow(delta.read(gold))
    added = added_combinations(nights)
    out["added_persons"] = added["person_id"].n_unique()
    out["added_facts"] = added.height
    out["differencing"] = attacks.differencing_attack(
        before, after, indicators.FIXED, indicators.ADDITIVE,
        truth=added.drop("person_id"))
    first = _release(nights.lake, INDICATORS, ind_versions[0])
    out["differencing_releases"] = attacks.differencing_attack(
        first["indicators"], table, indicators.FIXED, indicators.ADDITIVE,
        truth=added.drop("person_id"))
    r_first = _release(nights.lake, RESEARCH, res_versions[0])
    r_last = _release(nights.lake, RESEARCH, res_versions[-1])
    out["research_differencing"] = attacks.research_differencing(
        r_first["research_person"], r_first["research_participation"],
        r_last["research_person"], r_last["research_participation"], m)
    # The gold research file as analysts read it, night 1 and night 2 (same pseudonyms).
    def gold_file(version: int | None) -> list[pl.DataFrame]:
        return [pl.from_arrow(delta.read(Lake(nights.lake).gold(t), version=version))
                for t in ("research_person", "research_participation")]
    out["gold_research_differencing"] = attacks.research_differencing(
        *gold_file(nights.night1["research_person"]), *gold_file(None), m)
    # Re-identification, scored with the release's own pseudonyms of the true people.
    persons, spells = r_last["research_person"], r_last["research_participation"]
    # A release re-keys the gold pseudonym (itself keyed on the person_id).
    truth = _true_person(nights.lake, nights.landing)
    gold = pseudonymise(truth["person_id"], derive_key(KEY.encode(), "gold/research_person"))
    truth = truth.with_columns(pseudonymise(
        gold, derive_key(KEY.encode(), f"release/{RESEARCH}")).alias("pseudonym"))
    for column in ("zip3", "county_fips"):       # not released: unknown to the matcher
        if column not in persons.columns:
            persons = persons.with_columns(pl.lit("*").alias(column))
    out["reidentification"] = attacks.reidentification_attack(
        persons, spells, background(nights), truth.select("pseudonym", "true_person_id"))
    qis = [c for c in persons.columns if c != "pseudonym"]
    out["k_whole_record"] = attacks.k_whole_record(persons, spells, qis, k=m)
    # What the protection holds back, and the same attacks on the audit's tables.
    from ids_lakehouse.deid import holdback
    persons_now, years_now = _linked(nights)
    basis = pl.from_arrow(delta.read(Lake(nights.lake).disclosure("indicator_basis")))
    out["held_back"] = holdback.advance(
        basis, indicators.facts(years_now, persons_now), indicators.UNIT,
        indicators.ATTRIBUTES, m).held_back
    out["control_differencing"] = attacks.differencing_attack(
        old_style_indicators(nights, without_added=True),
        old_style_indicators(nights, without_added=False), indicators.FIXED,
        indicators.ADDITIVE, truth=added.drop("person_id"))
    out["control_reidentification"] = old_style_reidentification(nights)
    return out


def targets_met(result: dict) -> dict[str, bool]:
    """The issue's targets, each as one boolean."""
    lp, den = result["lp"], result["denominator"]
    return {
        "lp: no cell exact or narrow inside 1-10": lp["exact"] == 0
        and lp["narrow_small"] == 0 and lp["unresolved"] == 0,
        "denominator: no certain small count": den["certain"] == 0,
        "overlap: no exact or narrow small difference": result["overlap"]["exact"] == 0
        and result["overlap"]["narrow_small"] == 0,
        "differencing: nobody isolated": all(
            result[d]["isolated_keys"] == 0 and result[d]["claims"] == 0
            for d in ("differencing", "differencing_releases")),
        "research releases and gold: no change under k": result["research_differencing"][
            "delta_below_k"] == 0 and result["gold_research_differencing"]["delta_below_k"] == 0,
        "re-identification: no unique correct match":
            result["reidentification"]["correct_unique"] == 0,
        "k over the whole record >= 11 (pycanon)":
            result["k_whole_record"]["k_pycanon"] >= 11,
    }


def run(quick: bool = False, command: str = "") -> str:
    from bench.common import OUT, log

    sizes = (20_000,) if quick else SIZES
    lines = ["Two nights through the product's own path (land → ingest → conform → "
             "identity → marts → releases), then the attacks of "
             "`ids_lakehouse.deid.attacks` on what the recipients hold. Night 2 adds "
             f"{ADDED} HMIS clients. D = perturbation bound, null cells bounded by "
             "[0, min_cell − 1 + D] for the attacker.", ""]
    for n in sizes:
        log(f"disclosure: {n:,} people")
        started = time.perf_counter()
        nights = two_nights(n, OUT / "disclosure" / str(n))
        built = time.perf_counter() - started
        result = attack(nights)
        met = targets_met(result)
        (OUT / "disclosure" / f"result_{n}.json").write_text(json.dumps(result, indent=2,
                                                                        default=str))
        lp, den, dif = result["lp"], result["denominator"], result["differencing"]
        rid, rd, kw = (result["reidentification"], result["research_differencing"],
                       result["k_whole_record"])
        cd, cr = result["control_differencing"], result["control_reidentification"]
        gd = result["gold_research_differencing"]
        lines += [
            f"### {n:,} people (two nights built in {built:.0f} s)", "",
            "| attack | measured | target |", "|---|---|---|",
            f"| LP interval, indicators release ({lp['cells']:,} cells: "
            f"{lp['certified_without_lp']:,} certified by feasible tables, "
            f"{lp['targets']:,} attacked with HiGHS, {lp['seconds']} s) | exact non-zero "
            f"{lp['exact_nonzero']}, width ≤ 2 inside 1–10 {lp['narrow_small']}, inside 1–10 "
            f"{lp['inside_small']}, unresolved {lp['unresolved']} | 0 |",
            f"| denominator ({den['served_recovered']:,} served counts from rates, "
            f"{den['claims']:,} differenced) | certain small {den['certain']} | 0 |",
            f"| program_overlap differences | exact {result['overlap']['exact']}, narrow "
            f"small {result['overlap']['narrow_small']} | 0 |",
            f"| two nights, indicators ({dif['cells_changed']:,} cells changed; "
            f"{result['held_back']} changed facts held back) | isolated keys "
            f"{dif['isolated_keys']}, claims {dif['claims']}; facts (person × year × "
            f"program) of the {result['added_persons']} added people isolated "
            f"{dif['persons_isolated']} of {result['added_facts']} | 0 |",
            f"| two research releases | delta records {rd['delta_records']}, under k "
            f"{rd['delta_below_k']} | 0 |",
            f"| gold research file, night 1 vs night 2 | delta records "
            f"{gd['delta_records']}, under k {gd['delta_below_k']} | 0 |",
            f"| re-identification ({rid['records']:,} records vs the true population) | "
            f"unique {rid['unique_matches']}, correct {rid['correct_unique']} | 0 |",
            f"| k over the whole record | {kw['k']} (pycanon {kw['k_pycanon']}) | ≥ 11 |",
            "", "The same attacks on the same data as the audit found it (controls):", "",
            "| attack | measured |", "|---|---|",
            f"| two nights, exact counts with zeros published, no hold-back | facts of "
            f"the added people isolated {cd['persons_isolated']} of {result['added_facts']} |",
            f"| re-identification of a file k-anonymous on demographics only, spells by "
            f"year ({cr['records']:,} records) | correct unique {cr['correct_unique']:,} "
            f"({cr['correct_unique'] / max(cr['records'], 1):.1%}) |",
            "", "Targets met: " + ", ".join(f"{k}: {'yes' if v else 'NO'}"
                                            for k, v in met.items()), ""]
    return "\n".join(lines)
