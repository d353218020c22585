"""Probabilistic record linkage (Fellegi-Sunter, trained by EM) with Splink, on DuckDB or
Spark (identity.engines).

The comparisons are chosen for administrative data about households: people who share an
address, surname and landline look alike on everything but first name and date of birth,
so location evidence (street+ZIP, phone, ZIP) is ONE comparison with ordered
levels. Scoring address, ZIP, city and phone as independent comparisons counts the same
household evidence several times and merges family members."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ids_lakehouse import storage
from ids_lakehouse.config import linkage_chunks
from ids_lakehouse.identity import engines
from ids_lakehouse.storage import LakePath

if TYPE_CHECKING:
    from nicknames import NickNamer
    from splink import Linker, SettingsCreator
    from splink.internals.blocking_rule_creator import BlockingRuleCreator
    from splink.internals.comparison_creator import ComparisonCreator
    from splink.internals.comparison_level import ComparisonLevel
    from splink.internals.database_api import DatabaseAPI
    from splink.internals.settings import Settings
    from splink.internals.splink_dataframe import SplinkDataFrame

# A trained model: Splink's settings with its estimates, as saved to JSON.
Model = dict[str, Any]

LINK_COLUMNS = ["unique_id", "source_dataset", "first_name", "first_name_variants",
                "middle_initial", "last_name", "dob", "dob_text", "sex", "ssn", "ssn_last4",
                "national_id", "national_id_type", "street", "zip", "phone"]
MATCH_THRESHOLD = 0.9      # fixed in advance: pairs at or above it are the same person
LINK_FLOOR = 0.5           # pairs at or above it are kept in person_link
# Deterministic rules for the prior (probability two random records match).
DETERMINISTIC_RULES = (("ssn_for_prior",), ("national_id_type", "national_id_for_prior"),
                       ("first_name", "last_name", "dob"))
# An identifier held by more records than this counts for nothing in the prior (see
# for_prior): a person is rarely on file twenty times under one number.
MAX_RECORDS_PER_ID = 20
# The share of true pairs the deterministic rules are assumed to find (the prior is the
# share of pairs they link divided by it).
DETERMINISTIC_RECALL = 0.7


@lru_cache(maxsize=1)
def _namer() -> NickNamer:
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


SILVER_COLUMNS = ["source", "source_record_id", "first_name", "middle_name", "last_name",
                  "dob", "sex", "ssn", "ssn_last4", "national_id", "national_id_type", "street",
                  "zip", "phone"]


def linkage_input(person_record: pl.DataFrame) -> pl.DataFrame:
    """Silver person records (at least SILVER_COLUMNS) -> the columns the model reads.
    One select (a real-time lookup's few rows paid ~0.3 ms per step of a chain of
    steps): each distinct first name's variants are looked up by its position."""
    firsts = person_record["first_name"].cast(pl.String).drop_nulls().unique()
    variants = pl.Series([name_variants(f) for f in firsts], dtype=pl.List(pl.String))
    position = pl.col("first_name").cast(pl.String).replace_strict(
        firsts, pl.Series(range(len(firsts)), dtype=pl.UInt32), default=None)
    dob = pl.col("dob").cast(pl.Date)
    derived = {
        "unique_id": pl.col("source").cast(pl.String) + ":"
        + pl.col("source_record_id").cast(pl.String),
        "source_dataset": pl.col("source").cast(pl.String),
        "middle_initial": pl.col("middle_name").cast(pl.String).str.slice(0, 1),
        "dob": dob, "dob_text": dob.dt.strftime("%Y%m%d"),
        "first_name_variants": pl.lit(variants).gather(position)}
    return person_record.select([derived[c].alias(c) if c in derived
                                 else pl.col(c).cast(pl.String) for c in LINK_COLUMNS])


def within_one_edit(left: str, right: str) -> str:
    """`damerau_levenshtein(left, right) <= 1`, with a necessary condition DuckDB checks
    first and cheaply, so that the edit distance is computed for few pairs (most pairs
    compared share no identifier, date or name: it had been computed for nearly all of
    them, twice per identifier). One edit of ASCII text changes one character, or two
    adjacent ones, or inserts or deletes one, so the common prefix and the common suffix
    together cover all but two characters of the shorter text (m characters): one of them
    covers h = (m - 1) // 2 or more, and the lengths differ by one at most. Texts outside
    ASCII (DuckDB's edit distance counts bytes, length() characters) skip the shortcut."""
    h = f"greatest((least(length({left}), length({right})) - 1) // 2, 0)"
    return (f"((strlen({left}) <> length({left}) OR strlen({right}) <> length({right}) OR "
            f"(abs(length({left}) - length({right})) <= 1 AND "
            f"(left({left}, {h}) = left({right}, {h}) OR "
            f"right({left}, {h}) = right({right}, {h})))) "
            f"AND damerau_levenshtein({left}, {right}) <= 1)")


def _comparisons() -> list[ComparisonCreator]:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    # First and last name written the other way round, each perhaps with a typo (the
    # initials compared first: DuckDB then computes Jaro-Winkler on the few pairs left).
    # (Different first names: JOHN JOHNSON / JOHN JOHNSTON is a surname typo, not a swap.)
    swapped = ("first_name_l <> first_name_r AND "
               "left(first_name_l, 1) = left(last_name_r, 1) AND "
               "left(last_name_l, 1) = left(first_name_r, 1) AND "
               "jaro_winkler_similarity(first_name_l, last_name_r) >= 0.9 AND "
               "jaro_winkler_similarity(last_name_l, first_name_r) >= 0.9")
    # One name written in the other's place, the other name lost or changed ("gillian
    # lodge" / "lodge adele"): FEBRL4 held 4 true pairs with the same identifier and
    # address in the review band for it. Only in the first name's comparison: the same
    # evidence is not counted twice.
    crossed = "first_name_l = last_name_r OR first_name_r = last_name_l"
    first = cl.CustomComparison(output_column_name="first_name", comparison_levels=[
        cll.NullLevel("first_name"),
        cll.ExactMatchLevel("first_name").configure(tf_adjustment_column="first_name"),
        cll.CustomLevel("list_contains(first_name_variants_l, first_name_r) OR "
                        "list_contains(first_name_variants_r, first_name_l)", "nickname"),
        cll.CustomLevel(swapped, "first and last swapped"),
        cll.CustomLevel(crossed, "one name in the other's place"),
        cll.JaroWinklerLevel("first_name", 0.92),
        cll.JaroWinklerLevel("first_name", 0.80),
        cll.ElseLevel()])
    last = cl.CustomComparison(output_column_name="last_name", comparison_levels=[
        cll.NullLevel("last_name"),
        cll.ExactMatchLevel("last_name").configure(tf_adjustment_column="last_name"),
        # A swap is one piece of evidence, weighed in the first name's comparison: fixed
        # at m = u here (weight 0). Weighed in both it was worth 27 bits, more than both
        # names agreeing (15): FEBRL4's JACK RYAN and RYAN JACK, born decades apart,
        # living elsewhere, without an identifier, were linked at 0.97.
        cll.CustomLevel(swapped, "first and last swapped").configure(
            m_probability=0.5, u_probability=0.5, fix_m_probability=True,
            fix_u_probability=True),
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
        cll.CustomLevel(within_one_edit("dob_text_l", "dob_text_r"),
                        "Damerau-Levenshtein distance of dob_text <= 1"),
        cll.CustomLevel("year(dob_l) = year(dob_r)", "same year"),
        cll.ElseLevel()])
    # One comparison of person identifiers: the SSN (or its last four digits) and the
    # source-declared national_id, compared only between records of the same id type.
    same_type = "national_id_type_l = national_id_type_r"
    ssn_edit = within_one_edit("ssn_l", "ssn_r")
    id_edit = within_one_edit("national_id_l", "national_id_r")

    def apart(column: str) -> str:
        # Identifiers issued in sequence (twins' SSNs) are numerically close: a typo is
        # told from a sequence by how far it moves the number (NUMERIC_NEIGHBOURS). Digits
        # only (up to 18, a BIGINT): any other identifier is not judged.
        return (f"regexp_full_match({column}_l, '[0-9]{{1,18}}') AND "
                f"regexp_full_match({column}_r, '[0-9]{{1,18}}') AND "
                f"abs(CAST({column}_l AS BIGINT) - CAST({column}_r AS BIGINT)) >= "
                f"{NUMERIC_NEIGHBOURS}")

    identifier = cl.CustomComparison(output_column_name="identifier", comparison_levels=[
        cll.CustomLevel(f"(ssn_last4_l IS NULL OR ssn_last4_r IS NULL) AND "
                        f"(national_id_l IS NULL OR national_id_r IS NULL OR "
                        f"NOT ({same_type}))", "null").configure(is_null_level=True),
        cll.CustomLevel(f"ssn_l = ssn_r OR ({same_type} AND national_id_l = national_id_r)",
                        "exact"),
        cll.CustomLevel("ssn_last4_l = ssn_last4_r", "SSN's last four digits agree"),
        cll.CustomLevel(f"({ssn_edit} AND {apart('ssn')}) OR "
                        f"({same_type} AND {id_edit} AND {apart('national_id')})",
                        IDENTIFIER_TYPO_LABEL),
        cll.CustomLevel(f"{ssn_edit} OR ({same_type} AND {id_edit})", "one edit apart"),
        cll.ElseLevel()])
    # No e-mail level: only one agency delivers e-mail, so EM cannot estimate it (at 100k
    # people its m-probability underflowed below Splink's floor and training failed).
    location = cl.CustomComparison(output_column_name="location", comparison_levels=[
        cll.CustomLevel("(zip_l IS NULL OR zip_r IS NULL) AND (phone_l IS NULL OR phone_r IS "
                        "NULL)", "null").configure(is_null_level=True),
        cll.CustomLevel(SAME_ADDRESS, "same street and ZIP, or one typo"),
        cll.CustomLevel("phone_l = phone_r", "same phone"),
        cll.CustomLevel("zip_l = zip_r", "same ZIP"),
        cll.ElseLevel()])
    sex = cl.CustomComparison(output_column_name="sex", comparison_levels=[
        cll.NullLevel("sex"), cll.ExactMatchLevel("sex"), cll.ElseLevel()])
    return [first, last, middle, dob, identifier, location, sex]


# The same address, written the same or with one typo: a street one edit apart with the
# same numbers (house and flat numbers; 12 3RD ST is not 1 23RD ST) and the same
# everything but runs of four Latin letters or more (flat letters, directions, street
# types, 305A, 16-A, APT-A stay as written; other scripts' words too: Python's and RE2's
# Unicode tables differ), and a ZIP equal or with two adjacent digits
# transposed. A neighbour is not a typo: 12 and 13 MAIN ST, APT 305 and 306, APT A and B,
# APT 305A and 305B, N and S MAIN ST, ELM ST and ELM CT, OAK RD and OAK DR, or postcodes
# 2600 and 2601 (testers linked two JOHN SMITHs at 2600 and 2601, then at APT A and APT
# B). One level with the exact address, so EM always has the address's matches to
# estimate it from: as a level of its own, never seen among the generator's training
# pairs, it was a -124-bit veto there. The edit distance's memory grows with the square
# of the length: streets longer than LONGEST_STREET_COMPARED are compared exactly (a
# tester's 16,000-character streets took 2.3 GB outside DuckDB's memory cap). (Lengths
# and ZIPs are compared before the edit distance, so DuckDB computes it for few pairs.)
LONGEST_STREET_COMPARED = 200
SAME_ADDRESS = (
    "(street_l = street_r AND zip_l = zip_r) OR ("
    f"length(street_l) <= {LONGEST_STREET_COMPARED} AND "
    f"length(street_r) <= {LONGEST_STREET_COMPARED} AND "
    "abs(length(street_l) - length(street_r)) <= 1 AND length(zip_l) = length(zip_r) AND "
    "(zip_l = zip_r OR (damerau_levenshtein(zip_l, zip_r) = 1 AND "
    "levenshtein(zip_l, zip_r) = 2)) AND "
    "regexp_replace(street_l, '[^0-9]+', ' ', 'g') = "
    "regexp_replace(street_r, '[^0-9]+', ' ', 'g') "
    "AND regexp_replace(street_l, '[A-Za-z]{4,}| ', '', 'g') = "
    "regexp_replace(street_r, '[A-Za-z]{4,}| ', '', 'g') "
    "AND damerau_levenshtein(street_l, street_r) <= 1)")


# Both names, in either order: null when either is missing (DuckDB's least() and greatest()
# skip nulls, so they alone would block a lone surname with every record of that name).
NAMES_EITHER_WAY = ("if(first_name <= last_name, first_name || '|' || last_name, "
                    "last_name || '|' || first_name)")


def blocking_rules() -> list[BlockingRuleCreator]:
    from splink import block_on

    # Surname with birth year and month, or year and day, catches a single wrong part of
    # the date when the first name differs too (nickname, typo). Surname with birth year
    # alone did that and a little more (a wrong day and month) at twice the candidate
    # pairs of all other rules together: at 1M people it generated 34M of 71M pairs.
    # Both names either way round find a swap; one name with the ZIP or the street, or the
    # surname with the ZIP, find a person whose date of birth and identifier are both
    # wrong or missing (FEBRL4: 19 true pairs no other rule put side by side).
    return [block_on("ssn"), block_on("national_id_type", "national_id"), block_on("dob"),
            block_on(NAMES_EITHER_WAY),
            block_on("phone"), block_on("last_name", "year(dob)", "month(dob)"),
            block_on("last_name", "year(dob)", "day(dob)"),
            block_on("last_name", "zip"), block_on("first_name", "zip"),
            block_on("first_name", "street")]


def settings() -> SettingsCreator:
    from splink import SettingsCreator

    # Splink emits comparison levels (gamma_*) only alongside the compared values; the
    # values stay inside DuckDB: predict() keeps ids, levels and weights only.
    return SettingsCreator(link_type="link_and_dedupe", comparisons=list(_comparisons()),
                           blocking_rules_to_generate_predictions=list(blocking_rules()),
                           retain_matching_columns=True,
                           retain_intermediate_calculation_columns=False)


@contextmanager
def _engine(records: pl.DataFrame, model: Model | None, spill: Path,
            tf: dict[str, pl.DataFrame] | None = None
            ) -> Iterator[tuple[Linker, DatabaseAPI[Any]]]:
    """A linker over `records` on the linkage engine (`engines`: DuckDB limited to
    IDS_DUCKDB_MEMORY and spilling to `spill`, or Spark); with `tf`, the model's own
    term-frequency tables are used instead of frequencies computed from today's records.
    The engine's tables are dropped on leaving the block."""
    from splink import Linker

    engine = engines.engine_name()
    spec: Model | SettingsCreator = (
        engines.in_dialect(model, engine) if model is not None
        else settings() if engine == engines.CANONICAL
        else engines.in_dialect(_design_model(), engine))
    with engines.database(spill, engine) as db:
        linker = Linker(engines.register(db, records, "records"), spec,
                        log_level=logging.WARNING)
        for column, lookup in (tf or {}).items():
            linker.table_management.register_term_frequency_lookup(
                engines.register(db, lookup, f"tf_{column}"), column)
        yield linker, db


# The largest prior a model is trained with: a tenth of all pairs matches. Ten people
# on file three times each is 0.07; FEBRL4, each person twice, 1.4e-4. A tester's first
# agency with a default SSN on half its 1,500 records gave 0.36, and the model it trained
# merged people who shared only a date of birth; at 1.0 Splink's EM failed ("nan").
MAX_PRIOR = 0.1
# Training blocks EM on these (each session leaves the comparisons it blocks on free).
EM_BLOCKINGS = (("dob",), ("first_name", "last_name"))


class NotEnoughToTrain(ValueError):
    """The records hold nothing a model can be estimated from (too few of them, or no two
    sharing what the prior or an EM session needs). The message names the rule, never a
    value; `reason` is `untrainable`'s."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _shared_pairs(records: pl.DataFrame, columns: tuple[str, ...]) -> int:
    """Pairs of records equal on all `columns`, none null (as Splink's block_on pairs)."""
    sizes = records.drop_nulls(list(columns)).group_by(list(columns)).len()["len"]
    return int((sizes * (sizes - 1) // 2).sum())


def for_prior(records: pl.DataFrame) -> pl.DataFrame:
    """The records with the identifiers the prior's rules compare: an SSN or national id
    held by more than MAX_RECORDS_PER_ID records is a default (555-12-3456, a placeholder
    an intake system fills in), not a person, and is left out. A tester's first agency
    with one default SSN on a fifth of 1,500 different people trained a model from those
    pairs as matches (the prior 30 times too high) that merged 12 people."""
    def kept(column: str, *by: str) -> pl.Expr:
        return pl.when(pl.len().over(*by, column) <= MAX_RECORDS_PER_ID) \
            .then(pl.col(column)).alias(f"{column}_for_prior")

    return records.with_columns(kept("ssn"), kept("national_id", "national_id_type"))


def untrainable(records: pl.DataFrame) -> str | None:
    """Why a model cannot be estimated from `records` (None when it can). Splink fails on
    each of these with an error that says nothing to a data engineer: no record or one
    (ZeroDivisionError), no two records sharing what the deterministic rules compare (a
    prior of 0: "math domain error" in EM), or an EM blocking that pairs no records
    ("Training rule ... resulted in no record pairs"); and a prior above MAX_PRIOR is
    refused (at 1 Splink failed on "nan"; below it a default identifier trained a model
    that merged strangers). A first agency delivering each person once is the usual
    case."""
    n = records.height
    if n < 2:
        return f"{n} person record(s): no pair to compare"
    keyed = for_prior(records)
    shared = sum(_shared_pairs(keyed, rule) for rule in DETERMINISTIC_RULES)
    if shared == 0:
        return (f"no two of the {n:,} person records share an SSN, a national id of one "
                f"type (held by at most {MAX_RECORDS_PER_ID} records), or both names and a "
                "date of birth (what the prior is estimated from)")
    pairs = n * (n - 1) // 2
    # A pair sharing two rules' keys counts twice here (Splink counts it once): an upper
    # bound, without listing the pairs (a default identifier on most records made that
    # quadratic).
    if shared >= pairs * DETERMINISTIC_RECALL * MAX_PRIOR:
        return (f"up to {shared:,} of the {pairs:,} pairs of the {n:,} person records "
                "share an SSN, a national id, or both names and a date of birth, a prior "
                f"above {MAX_PRIOR:g}: a value many records share (a default identifier or "
                "date) or a handful of records, not people on file a few times each")
    for blocking in EM_BLOCKINGS:
        if _shared_pairs(records, blocking) == 0:
            return (f"no two of the {n:,} person records share {' and '.join(blocking)} "
                    "(an EM training session compares those pairs)")
    return None


def train(records: pl.DataFrame, *, spill: Path, seed: int = 42
          ) -> tuple[Model, dict[str, pl.DataFrame]]:
    """Estimate the model from the records: prior from deterministic rules, u by random
    sampling, m by EM on two blockings (each leaves the comparisons it blocks on free).
    Returns the model and its term-frequency tables: both belong to the model version, so
    a pair's score depends only on the version and the two records. Raises
    NotEnoughToTrain when the records cannot train one (`untrainable`)."""
    from splink import block_on

    engines.engine_name()       # a mistyped engine is named before anything else
    reason = untrainable(records)
    if reason is not None:
        raise NotEnoughToTrain(f"cannot train a linkage model: {reason}", reason)
    logging.getLogger("splink").setLevel(logging.WARNING)
    with _engine(for_prior(records), None, spill) as (linker, _):
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*r) for r in DETERMINISTIC_RULES], recall=DETERMINISTIC_RECALL)
        linker.training.estimate_u_using_random_sampling(max_pairs=2_000_000, seed=seed)
        for blocking in EM_BLOCKINGS:
            _estimate_m_by_em(linker, block_on(*blocking))
        tf = {c: engines.to_polars(linker.table_management.compute_tf_table(c))
              for c in TF_COLUMNS}
        # Saved in DuckDB's SQL whichever engine trained it (engines.canonical).
        return engines.canonical(linker.misc.save_model_to_json(), _design_model()), tf


def _estimate_m_by_em(linker: Linker, blocking_rule: BlockingRuleCreator
                      ) -> list[tuple[str, int]]:
    """One EM session estimating m (u fixed, no term frequencies). Returns the levels it
    pinned, as (comparison, comparison vector value).

    EM drives the m of a level that no match among the training pairs reaches towards 0,
    geometrically, and on some data below 1e-300 within its iterations. Splink 5's m
    setter rejects any value under M_U_CLAMP_MIN (1e-300), so the session failed with
    "m_probability value ... is below the minimum allowed value". Splink (unfixed
    upstream) clamps m and u to M_U_CLAMP_MIN only where it turns them into match
    weights (ComparisonLevel._match_weight); its EM does not clamp. Here, when a session
    fails on exactly that check, the level that underflowed is pinned at M_U_CLAMP_MIN,
    the value Splink's match weight uses for it anyway, and the session is run again from
    its start; that repeats once per level that underflows. The pin is this session's
    estimate of the level: it is released after the session and Splink combines it with
    other sessions' estimates as usual. Same records, same pins, same model: deterministic.
    Any other error, or an underflow the pins cannot explain, is raised unchanged.
    Splink has no public way to name the failing level or to fix one level's m between
    sessions, hence the reads of its traceback and the private attributes below."""
    from splink.internals.comparison_level import M_U_CLAMP_MIN

    settings = linker._settings_obj
    pinned: list[tuple[str, int]] = []
    while True:
        # A failing session leaves the linker's parameters half-changed (it drops the
        # comparisons it blocks on and changes the prior before EM starts): keep a copy.
        # (Splink leaves this deepcopy unannotated.)
        before = settings.core_model_settings.copy()  # type: ignore[no-untyped-call]
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                blocking_rule, estimate_without_term_frequencies=True)
            break
        except ValueError as error:
            level = _underflowed_level(error)
            if level is None or level in pinned:
                raise
            settings.core_model_settings = before
            pinned.append(level)
            cl = _level(settings, *level)
            cl.m_probability = M_U_CLAMP_MIN
            cl._fix_m_probability = True
            logging.getLogger(__name__).warning(
                "EM drove the m of %s level %r below %g: pinned there, session rerun",
                level[0], cl.label_for_charts, M_U_CLAMP_MIN)
    if pinned:
        for level in pinned:
            _level(settings, *level)._fix_m_probability = False
        # As Splink does after each session: m is the median of the sessions' estimates
        # (it skipped the pinned levels, which were fixed then).
        # (Splink leaves this method unannotated.)
        linker._populate_m_u_from_trained_values()  # type: ignore[no-untyped-call]
    return pinned


def _underflowed_level(error: ValueError) -> tuple[str, int] | None:
    """The level whose EM estimate of m Splink's setter rejected as below M_U_CLAMP_MIN,
    read from the failing frame (splink's expectation_maximisation.populate_m_u_from_lookup
    and its arguments); None if the error is anything else."""
    import traceback

    if not str(error).startswith("m_probability value ") or "below the minimum" not in str(error):
        return None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if (frame.f_code.co_name == "populate_m_u_from_lookup"
                and frame.f_globals.get("__name__") == "splink.internals.expectation_maximisation"):
            args = frame.f_locals
            return args["output_column_name"], args["comparison_level"].comparison_vector_value
    return None


def _level(settings: Settings, comparison: str, vector_value: int) -> ComparisonLevel:
    return (settings.core_model_settings.get_comparison_by_output_column_name(comparison)
            ._get_comparison_level_by_comparison_vector_value(vector_value))


def predict(records: pl.DataFrame, model: Model, tf: dict[str, pl.DataFrame], *,
            spill: Path, floor: float = LINK_FLOOR) -> pl.DataFrame:
    """Scored pairs at or above `floor`: ids, probability, weight and each comparison's
    level (gamma); never the compared values. DuckDB scores the pairs between one part of
    the records and another at a time (`config.linkage_chunks` parts: n x n scorings), so
    its memory holds a part's candidate pairs; Spark distributes them itself."""
    logging.getLogger("splink").setLevel(logging.WARNING)
    chunks = linkage_chunks(records.height) if engines.engine_name() == "duckdb" else 1
    with _engine(records, model, spill, tf) as (linker, _):
        return _pairs(linker.inference.predict(threshold_match_probability=floor,
                                               num_chunks_left=chunks, num_chunks_right=chunks))


def predict_changed(records: pl.DataFrame, changed: pl.Series, model: Model,
                    tf: dict[str, pl.DataFrame], *, spill: Path,
                    floor: float = LINK_FLOOR) -> pl.DataFrame:
    """Scored pairs that involve at least one `changed` record (unique ids): changed
    records against the others and among themselves; with the model's term frequencies
    the scores equal those of a full predict()."""
    logging.getLogger("splink").setLevel(logging.WARNING)
    is_changed = records["unique_id"].is_in(changed.implode())
    with _engine(records, model, spill, tf) as (linker, db):
        new = engines.register(db, records.filter(is_changed), "changed")
        old = engines.register(db, records.filter(~is_changed), "unchanged")
        between = linker.inference.predict_between(new, old, threshold_match_probability=floor)
        within = linker.inference.predict_within(new, threshold_match_probability=floor)
        return pl.concat([_pairs(between), _pairs(within)])


def _pairs(predictions: SplinkDataFrame) -> pl.DataFrame:
    """Ids, weights and levels of scored pairs, each oriented (smaller id, larger id) so a
    pair reads the same however it was scored (the comparisons are symmetric)."""
    keep = ["unique_id_l", "unique_id_r", "source_dataset_l", "source_dataset_r",
            "match_weight", "match_probability", *[f"gamma_{c}" for c in GAMMAS]]
    df = engines.to_polars(predictions, keep)
    swap = pl.col("unique_id_l") > pl.col("unique_id_r")
    return df.with_columns(
        *[pl.when(swap).then(pl.col(f"{c}_r")).otherwise(pl.col(f"{c}_l")).alias(f"{c}_l")
          for c in ("unique_id", "source_dataset")],
        *[pl.when(swap).then(pl.col(f"{c}_l")).otherwise(pl.col(f"{c}_r")).alias(f"{c}_r")
          for c in ("unique_id", "source_dataset")])


def fingerprint(records: pl.DataFrame) -> pl.Series:
    """A hash of each record's linkage columns: a record whose hash changed is re-scored.
    (Polars hashes may change between versions; that only makes a run re-score more.)"""
    return records.select(pl.struct(pl.exclude("unique_id")).hash(seed=0).reinterpret(signed=True)
                          .alias("record_hash"))["record_hash"]


TF_COLUMNS = ("first_name", "last_name")  # comparisons with term-frequency adjustments
# Comparison levels (gamma) count down from the best level to 0 ("all other"); -1 is null.
GAMMAS = ("first_name", "last_name", "middle_initial", "dob", "identifier", "location", "sex")
# What `_pairs` returns (predict's columns and types, as DuckDB gives them).
PAIR_SCHEMA = {"unique_id_l": pl.String, "unique_id_r": pl.String,
               "source_dataset_l": pl.String, "source_dataset_r": pl.String,
               "match_weight": pl.Float64, "match_probability": pl.Float64,
               **{f"gamma_{c}": pl.Int32 for c in GAMMAS}}
NULL_LEVEL = -1
FIRST_NAME_DISAGREES = 0
# "One name in the other's place": the first names still disagree, for the twins guard
# (a tester's JAMES THOMAS / THOMAS LEE, two men, was let past it).
FIRST_NAME_CROSSED = 3
FIRST_NAME_SWAPPED = 4     # "first and last swapped"
LAST_NAME_SWAPPED = 3      # the last name's "first and last swapped" (weight 0)
LAST_NAME_DISAGREES = 0
DOB_SAME_YEAR = 1          # dob levels: exact 4, transposed 3, one edit 2, same year 1, else 0
# identifier levels: exact 4, SSN last four 3, one typo apart and not in sequence 2, one
# edit 1, else 0
IDENTIFIER_EXACT = 4
IDENTIFIER_ONE_EDIT_APART = 2
IDENTIFIER_ONE_EDIT = 1
# Identifiers one edit apart that may have been issued in sequence (twins, siblings
# registered together) are "neighbours"; others are one typo apart, which lifts the
# twins guard. Two identifiers under NUMERIC_NEIGHBOURS apart are neighbours, whatever
# edit separates them: n and n + 10 differ in one digit (a tester merged twins with SSNs
# 10, 20 and 100 apart at a threshold of 10), and two adjacent digits transposed move
# the number by a multiple of 9 (a tester merged 27 of 27 twins whose SSNs were one
# transposition 90 to 999 apart when transpositions were lifted from 90).
NUMERIC_NEIGHBOURS = 1_000
IDENTIFIER_TYPO_LABEL = "one typo apart, not in sequence"


TWINS_GUARD = "first names disagree, no identifier agrees (twins guard)"
DOB_CONFLICT = "dates of birth agree at most on the year, no identifier within one edit"
SWAP_UNCONFIRMED = "names swapped, a date of birth missing, no identifier within one edit"
# Not a guard on the pair (a married name is a surname that disagrees): it binds only a
# join made through a record without a surname (identity.clustering).
SURNAMES_DISAGREE = "surnames disagree, no identifier agrees"
# Guards that say the two records are two people (clustering keeps them apart); the swap
# guard says only that the evidence is too thin to link them without a steward.
HELD_APART = (TWINS_GUARD, DOB_CONFLICT)


def held_for_review(pairs: pl.DataFrame) -> pl.Series:
    """Why a pair the model scores at or above the threshold is not linked without a
    steward (null when nothing holds it): the two patterns where the score is not evidence
    enough without an identifier (SSN, or national_id of the same type).

    - twins guard: twins and siblings share birth date, surname and address, so a pair
      whose first names disagree outright is not linked on that evidence alone, unless an
      identifier agrees exactly or is one typo apart and not in sequence (twins' SSNs may
      be issued in sequence: two under NUMERIC_NEIGHBOURS apart may be, whatever the
      edit). On FEBRL4 this guard held 32 true pairs, 21 of them with ids one typo apart
      (by 27 to 20,000); with the 1,000 threshold 26 are still held, 8 of them
      transpositions 27 to 450 apart, which look exactly like twins issued in sequence;
    - dob conflict: namesakes (a parent and a child of the same name at one address, or
      two people of a common name) agree on names and place but not on the date of birth.
      A pair whose dates of birth are both known and agree at most on the year is not
      linked on the names alone (an identifier within one edit lifts this guard). On the
      bench's 100,000 people every one of the 122 such pairs the model scored >= 0.9
      without an identifier was two different people;
    - names swapped with nothing else: the swap level has no term-frequency adjustment, so
      it cannot tell two JACK RYANs from two rarely named people. A pair whose names are
      swapped, with a date of birth missing and no identifier within one edit, is not
      linked on the names and a shared ZIP (a tester's RYAN JACK / JACK RYAN: 0.98). On
      FEBRL4 no true pair is held by it, on FEBRL3 one."""
    guards = guard_masks(pairs)
    reason = pl.lit(None, dtype=pl.String)
    for name in reversed(list(guards)):     # the first guard that holds names the pair
        reason = pl.when(pl.lit(guards[name])).then(pl.lit(name)).otherwise(reason)
    return pl.select(reason.alias("reason")).to_series()


def guard_masks(pairs: pl.DataFrame) -> dict[str, pl.Series]:
    """Each guard (held_for_review's, in its order) and the pairs it holds: a pair may be
    held by more than one (clustering keeps each reason: they bind different joins)."""
    no_id = ~pairs["gamma_identifier"].is_in([IDENTIFIER_EXACT, IDENTIFIER_ONE_EDIT_APART])
    twin_like = pairs["gamma_first_name"].is_in([FIRST_NAME_DISAGREES, FIRST_NAME_CROSSED]) \
        & no_id
    # A parent and a child do not hold identifiers one edit apart (twins may: SSNs issued
    # in sequence), so for dates of birth an identifier within one edit is evidence enough.
    no_near_id = pairs["gamma_identifier"] < IDENTIFIER_ONE_EDIT
    dob_conflict = pairs["gamma_dob"].is_between(0, DOB_SAME_YEAR) & no_near_id
    # Read on both names: a nickname of the other's surname takes the first name's
    # nickname level before its swap level (a tester's JOHN JACK / JACK JOHN).
    swap = ((pairs["gamma_first_name"] == FIRST_NAME_SWAPPED)
            | (pairs["gamma_last_name"] == LAST_NAME_SWAPPED)) \
        & (pairs["gamma_dob"] == NULL_LEVEL) & no_near_id
    return {TWINS_GUARD: twin_like, DOB_CONFLICT: dob_conflict, SWAP_UNCONFIRMED: swap}


def held_reason(first_name: int, identifier: int, dob: int, last_name: int) -> str | None:
    """`held_for_review` for one pair, from its four comparison levels (a real-time
    lookup's few candidates: a frame for them cost more than the rest of the decision).
    A test holds the two equal on every combination of levels."""
    if first_name in (FIRST_NAME_DISAGREES, FIRST_NAME_CROSSED) and \
            identifier not in (IDENTIFIER_EXACT, IDENTIFIER_ONE_EDIT_APART):
        return TWINS_GUARD
    if 0 <= dob <= DOB_SAME_YEAR and identifier < IDENTIFIER_ONE_EDIT:
        return DOB_CONFLICT
    if (first_name == FIRST_NAME_SWAPPED or last_name == LAST_NAME_SWAPPED) and \
            dob == NULL_LEVEL and identifier < IDENTIFIER_ONE_EDIT:
        return SWAP_UNCONFIRMED
    return None


def auto_link(pairs: pl.DataFrame) -> pl.Series:
    """Pairs linked without a steward: at or above the threshold and not held for review
    (`held_for_review`). Clustering may still leave one out (see identity.clustering)."""
    return (pairs["match_probability"] >= MATCH_THRESHOLD) & held_for_review(pairs).is_null()


# What training sets in a level; everything else in a saved model is the design.
_TRAINED = {"m_probability", "u_probability"}


def design(model: Model) -> str:
    """A model's design, as one canonical JSON text: its blocking rules and comparisons,
    every level's settings (condition, label, null level, term-frequency adjustment...)
    but not what training estimates (m, u; a level the design fixes keeps them)."""
    def settings(level: dict[str, Any]) -> dict[str, Any]:
        fixed = {k for k in _TRAINED if level.get(f"fix_{k}")}
        return {k: v for k, v in level.items() if k not in _TRAINED - fixed}

    comparisons = [{**{k: v for k, v in c.items() if k != "comparison_levels"},
                    "comparison_levels": [settings(lv) for lv in c["comparison_levels"]]}
                   for c in model["comparisons"]]
    return json.dumps({"comparisons": comparisons,
                       "blocking": model["blocking_rules_to_generate_predictions"],
                       "link_type": model["link_type"]}, sort_keys=True)


def _design_model() -> Model:
    """The untrained model this code defines, in DuckDB's SQL (engines.CANONICAL)."""
    as_dict: Model = settings().get_settings(  # type: ignore[no-untyped-call]
        engines.CANONICAL).as_dict()
    return as_dict


def current_design() -> str:
    """The comparisons this code defines (a saved model trained before they changed is
    not this model: its levels mean other things to the review guards)."""
    return design(_design_model())


def save_model(model: Model, tf: dict[str, pl.DataFrame], directory: LakePath) -> int:
    """Write a new numbered version (model JSON and its term-frequency tables); earlier
    versions are kept. The JSON is written last: it marks the version complete."""
    directory.mkdir(parents=True, exist_ok=True)
    version = latest_version(directory) + 1
    stem = f"linkage_model_v{version:04d}"
    for column, table in tf.items():
        storage.write_parquet(table, directory / f"{stem}.tf_{column}.parquet")
    storage.write_text_atomic(directory / f"{stem}.json",
                              json.dumps(model, indent=1, sort_keys=True))
    return version


def latest_version(directory: LakePath) -> int:
    versions = [int(p.stem.rsplit("_v", 1)[1]) for p in directory.glob("linkage_model_v*.json")]
    return max(versions, default=0)


def load_model(directory: LakePath) -> tuple[Model, dict[str, pl.DataFrame], int] | None:
    version = latest_version(directory)
    if not version:
        return None
    stem = f"linkage_model_v{version:04d}"
    tf = {c: storage.read_parquet(directory / f"{stem}.tf_{c}.parquet") for c in TF_COLUMNS}
    return json.loads((directory / f"{stem}.json").read_text()), tf, version
