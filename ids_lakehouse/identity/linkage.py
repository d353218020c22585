"""Probabilistic record linkage (Fellegi-Sunter, trained by EM) with Splink on DuckDB.

The comparisons are chosen for administrative data about households: people who share an
address, surname and landline look alike on everything but first name and date of birth,
so location evidence (street+ZIP, phone, e-mail, ZIP) is ONE comparison with ordered
levels. Scoring address, ZIP, city and phone as independent comparisons counts the same
household evidence several times and merges family members."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import polars as pl

LINK_COLUMNS = ["unique_id", "source_dataset", "first_name", "first_name_variants",
                "middle_initial", "last_name", "dob", "dob_text", "sex", "ssn", "ssn_last4",
                "street", "zip", "phone", "email"]
MATCH_THRESHOLD = 0.9      # fixed in advance: pairs at or above it are the same person
LINK_FLOOR = 0.5           # pairs at or above it are kept in person_link
# Deterministic rules for the prior (probability two random records match).
DETERMINISTIC_RULES = (("ssn",), ("first_name", "last_name", "dob"))


@lru_cache(maxsize=1)
def _namer():
    from nicknames import NickNamer

    return NickNamer()


def name_variants(first: str | None) -> list[str]:
    """The name with its nicknames and the names it is a nickname of, upper case."""
    if not first:
        return []
    low = first.lower()
    namer = _namer()
    return sorted({first, *(n.upper() for n in namer.nicknames_of(low)),
                   *(n.upper() for n in namer.canonicals_of(low))})


def linkage_input(person_record: pl.DataFrame) -> pl.DataFrame:
    """Silver person records -> the columns the linkage model reads."""
    firsts = person_record["first_name"].drop_nulls().unique()
    variants = pl.DataFrame({"first_name": firsts,
                             "first_name_variants": [name_variants(f) for f in firsts]},
                            schema={"first_name": pl.String,
                                    "first_name_variants": pl.List(pl.String)})
    return (person_record
            .with_columns(
                (pl.col("source") + ":" + pl.col("source_record_id")).alias("unique_id"),
                pl.col("source").alias("source_dataset"),
                pl.col("middle_name").str.slice(0, 1).alias("middle_initial"),
                pl.col("dob").dt.strftime("%Y%m%d").alias("dob_text"))
            .join(variants, on="first_name", how="left")
            .select(LINK_COLUMNS))


def _comparisons() -> list:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    swapped = "first_name_l = last_name_r AND last_name_l = first_name_r"
    first = cl.CustomComparison(output_column_name="first_name", comparison_levels=[
        cll.NullLevel("first_name"),
        cll.ExactMatchLevel("first_name").configure(tf_adjustment_column="first_name"),
        cll.CustomLevel("list_contains(first_name_variants_l, first_name_r) OR "
                        "list_contains(first_name_variants_r, first_name_l)", "nickname"),
        cll.CustomLevel(swapped, "first and last swapped"),
        cll.JaroWinklerLevel("first_name", 0.92),
        cll.JaroWinklerLevel("first_name", 0.80),
        cll.ElseLevel()])
    last = cl.CustomComparison(output_column_name="last_name", comparison_levels=[
        cll.NullLevel("last_name"),
        cll.ExactMatchLevel("last_name").configure(tf_adjustment_column="last_name"),
        cll.CustomLevel(swapped, "first and last swapped"),
        cll.JaroWinklerLevel("last_name", 0.92),
        cll.JaroWinklerLevel("last_name", 0.80),
        cll.ElseLevel()])
    middle = cl.CustomComparison(output_column_name="middle_initial", comparison_levels=[
        cll.NullLevel("middle_initial"), cll.ExactMatchLevel("middle_initial"),
        cll.ElseLevel()])
    dob = cl.CustomComparison(output_column_name="dob", comparison_levels=[
        cll.NullLevel("dob"),
        cll.ExactMatchLevel("dob"),
        cll.CustomLevel("day(dob_l) = month(dob_r) AND month(dob_l) = day(dob_r) "
                        "AND year(dob_l) = year(dob_r)", "day and month transposed"),
        cll.DamerauLevenshteinLevel("dob_text", 1),
        cll.CustomLevel("year(dob_l) = year(dob_r)", "same year"),
        cll.ElseLevel()])
    ssn = cl.CustomComparison(output_column_name="ssn", comparison_levels=[
        cll.CustomLevel("(ssn_last4_l IS NULL OR ssn_last4_r IS NULL)", "null")
        .configure(is_null_level=True),
        cll.ExactMatchLevel("ssn"),
        cll.CustomLevel("ssn_last4_l = ssn_last4_r", "last four digits agree"),
        cll.DamerauLevenshteinLevel("ssn", 1),
        cll.ElseLevel()])
    location = cl.CustomComparison(output_column_name="location", comparison_levels=[
        cll.CustomLevel("(zip_l IS NULL OR zip_r IS NULL) AND (phone_l IS NULL OR phone_r IS "
                        "NULL) AND (email_l IS NULL OR email_r IS NULL)", "null")
        .configure(is_null_level=True),
        cll.CustomLevel("street_l = street_r AND zip_l = zip_r", "same street and ZIP"),
        cll.CustomLevel("phone_l = phone_r", "same phone"),
        cll.CustomLevel("email_l = email_r", "same e-mail"),
        cll.CustomLevel("zip_l = zip_r", "same ZIP"),
        cll.ElseLevel()])
    sex = cl.CustomComparison(output_column_name="sex", comparison_levels=[
        cll.NullLevel("sex"), cll.ExactMatchLevel("sex"), cll.ElseLevel()])
    return [first, last, middle, dob, ssn, location, sex]


def blocking_rules() -> list:
    from splink import block_on

    return [block_on("ssn"), block_on("dob"), block_on("first_name", "last_name"),
            block_on("phone"), block_on("last_name", "year(dob)")]


def settings():
    from splink import SettingsCreator

    # Splink emits comparison levels (gamma_*) only alongside the compared values; the
    # values stay inside DuckDB: predict() keeps ids, levels and weights only.
    return SettingsCreator(link_type="link_and_dedupe", comparisons=_comparisons(),
                           blocking_rules_to_generate_predictions=blocking_rules(),
                           retain_matching_columns=True,
                           retain_intermediate_calculation_columns=False)


def _linker(records: pl.DataFrame, model: dict | None):
    import duckdb
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI(duckdb.connect())
    table = db.register(records.to_arrow())
    return Linker(table, model if model is not None else settings(),
                  log_level=logging.WARNING)


def train(records: pl.DataFrame, seed: int = 42) -> dict:
    """Estimate the model from the records: prior from deterministic rules, u by random
    sampling, m by EM on two blockings (each leaves the comparisons it blocks on free)."""
    from splink import block_on

    logging.getLogger("splink").setLevel(logging.WARNING)
    linker = _linker(records, None)
    linker.training.estimate_probability_two_random_records_match(
        [block_on(*r) for r in DETERMINISTIC_RULES], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=2_000_000, seed=seed)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("dob"), estimate_without_term_frequencies=True)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "last_name"), estimate_without_term_frequencies=True)
    return linker.misc.save_model_to_json()


def predict(records: pl.DataFrame, model: dict, floor: float = LINK_FLOOR) -> pl.DataFrame:
    """Scored pairs at or above `floor`: ids, probability, weight and each comparison's
    level (gamma); never the compared values."""
    logging.getLogger("splink").setLevel(logging.WARNING)
    linker = _linker(records, model)
    pairs = linker.inference.predict(threshold_match_probability=floor)
    keep = ["unique_id_l", "unique_id_r", "source_dataset_l", "source_dataset_r",
            "match_weight", "match_probability", *[f"gamma_{c}" for c in GAMMAS]]
    return pl.from_arrow(pairs.as_duckdbpyrelation().select(", ".join(keep)).arrow())


# Comparison levels (gamma) count down from the best level to 0 ("all other"); -1 is null.
GAMMAS = ("first_name", "last_name", "middle_initial", "dob", "ssn", "location", "sex")
FIRST_NAME_DISAGREES = 0
SSN_EXACT = 3


def auto_link(pairs: pl.DataFrame) -> pl.Series:
    """Pairs that are linked without a steward. Twins and siblings share birth date,
    surname and address, so a pair whose first names disagree outright is never linked on
    that evidence alone: unless the SSNs agree it goes to the review queue instead."""
    twin_like = ((pairs["gamma_first_name"] == FIRST_NAME_DISAGREES)
                 & (pairs["gamma_ssn"] != SSN_EXACT))
    return (pairs["match_probability"] >= MATCH_THRESHOLD) & ~twin_like


def save_model(model: dict, directory: Path) -> Path:
    """Write a new numbered version; earlier versions are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    version = latest_version(directory) + 1
    path = directory / f"linkage_model_v{version:04d}.json"
    path.write_text(json.dumps(model, indent=1, sort_keys=True))
    return path


def latest_version(directory: Path) -> int:
    versions = [int(p.stem.rsplit("_v", 1)[1]) for p in directory.glob("linkage_model_v*.json")]
    return max(versions, default=0)


def load_model(directory: Path) -> tuple[dict, int] | None:
    version = latest_version(directory)
    if not version:
        return None
    path = directory / f"linkage_model_v{version:04d}.json"
    return json.loads(path.read_text()), version
