"""k-anonymity over the whole released record of a person: full-domain generalisation along
a declared ladder, then local suppression (Samarati, "Protecting respondents' identities
in microdata release", 2001; Sweeney, "Achieving k-anonymity privacy protection using
generalization and suppression", 2002 — the model of ARX and sdcMicro).

The quasi-identifiers are everything a recipient could know about a person from outside:
the person row's demographics AND their program participation and its timing as released.
Participation is released per period (one row per program and period with any enrolment in
it); its *signature* (the sorted set of program:period) is one more quasi-identifier, so k
holds over a person's row and all their participation rows together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import polars as pl

BROAD_RACE = {"HISPANIC": "HISPANIC", "WHITE": "WHITE", "BLACK": "BLACK", "ASIAN": "ASIAN"}
DROPPED = "*"
PARTICIPATION = "participation"     # the signature column
ALL_YEARS = "all"


def k_of(df: pl.DataFrame, qis: list[str]) -> int:
    """The smallest equivalence class over the quasi-identifiers (0 for an empty table)."""
    if df.height == 0:
        return 0
    return int(cast(int, df.group_by(qis).len()["len"].min()))


def periods(facts: pl.DataFrame, years: int | str, first_year: int, last_year: int
            ) -> pl.DataFrame:
    """(person_id, program, period) from (person_id, program, year): the periods of
    `years` years tiling first_year..last_year ("all" = the whole window) in which the
    person was in the program. A period is labelled "YYYY-YYYY"."""
    length = last_year - first_year + 1 if years == ALL_YEARS else int(years)
    start = pl.lit(first_year) + ((pl.col("year") - first_year) // length) * length
    end = pl.min_horizontal(start + (length - 1), pl.lit(last_year))
    return (facts.filter(pl.col("year").is_between(first_year, last_year))
            .select("person_id", "program",
                    (start.cast(pl.String) + "-" + end.cast(pl.String)).alias("period"))
            .unique())


def signatures(person_periods: pl.DataFrame) -> pl.DataFrame:
    """(person_id, participation): the sorted set of program:period of each person."""
    return (person_periods.select("person_id", (pl.col("program") + ":" + pl.col("period"))
                                  .alias("_t"))
            .group_by("person_id").agg(pl.col("_t").unique().sort().str.join("|")
                                       .alias(PARTICIPATION)))


def _band_start(column: str) -> pl.Expr:
    """The first year of an exact year or a band "1985-1989" (null for anything else)."""
    return pl.col(column).str.extract(r"^([0-9]{4})", 1).cast(pl.Int32, strict=False)


def _generalise(df: pl.DataFrame, column: str, how: int | str) -> pl.DataFrame:
    if how == "drop":
        return df.with_columns(pl.lit(DROPPED).alias(column))
    if column == "birth_year" and isinstance(how, int):
        # Works on an exact year and on a narrower band alike; the top code ("<=1935"),
        # UNKNOWN and a dropped value stay as they are.
        start = (_band_start(column) // how) * how
        band = start.cast(pl.String) + "-" + (start + how - 1).cast(pl.String)
        return df.with_columns(pl.when(start.is_null()).then(pl.col(column))
                               .otherwise(band).alias(column))
    if column == "race_ethnicity" and how == "broad":
        return df.with_columns(pl.when(pl.col(column) == DROPPED).then(pl.col(column))
                               .otherwise(pl.col(column).replace_strict(
                                   BROAD_RACE, default="OTHER")).alias(column))
    raise ValueError(f"unknown generalisation {column}: {how!r}")


@dataclass(frozen=True)
class Anonymised:
    persons: pl.DataFrame        # person_id, the quasi-identifiers (generalised)
    periods: pl.DataFrame        # person_id, program, period of the kept persons
    k: int                       # measured over the quasi-identifiers + participation
    level: int                   # rungs of the ladder applied
    applied: list[str] = field(default_factory=list)   # what each rung did, in words
    participation_years: int | str = 1
    suppressed: int = 0          # records removed by local suppression
    suppression_rate: float = 0.0


def anonymise(people: pl.DataFrame, facts: pl.DataFrame, qis: list[str], k: int,
              ladder: list[dict[str, int | str]], max_suppression: float, first_year: int,
              last_year: int, participation_years: int | str = 1) -> Anonymised:
    """Climb the ladder until local suppression would remove at most `max_suppression` of
    the records (or the ladder ends), then remove the records in classes below k.

    `people`: person_id + the quasi-identifier columns; `facts`: (person_id, program, year)
    for every year a person was in a program."""
    current, level, applied, years = people, 0, [], participation_years
    # Participation depends only on the period length, which few rungs change: each
    # length's periods and signatures are computed once.
    by_length: dict[int | str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    while True:
        if years not in by_length:
            found = periods(facts, years, first_year, last_year)
            by_length[years] = found, signatures(found)
        person_periods, signature = by_length[years]
        record = _with_signature(current, signature, "person_id")
        keys = [*qis, PARTICIPATION]
        sizes = record.group_by(keys).len("_class_size")
        small = int(sizes.filter(pl.col("_class_size") < k)["_class_size"].sum() or 0)
        if small <= max_suppression * people.height or level == len(ladder):
            break
        words = []
        for column, how in ladder[level].items():
            if column == PARTICIPATION:
                years = how
                words.append(f"participation per {how} years" if how != ALL_YEARS
                             else "participation: which programs, not when")
            else:
                current = _generalise(current, column, how)
                words.append(f"{column}: {how}" if how != "drop" else f"{column} removed")
        applied.append(", ".join(words))
        level += 1
    kept = record.join(sizes, on=keys).filter(pl.col("_class_size") >= k)
    removed = people.height - kept.height
    return Anonymised(
        persons=kept.select("person_id", *qis),
        periods=person_periods.join(kept.select("person_id"), on="person_id", how="semi"),
        k=k_of(kept, keys), level=level, applied=applied, participation_years=years,
        suppressed=removed,
        suppression_rate=round(removed / people.height, 5) if people.height else 0.0)


def records(persons: pl.DataFrame, participation: pl.DataFrame | None,
            id_column: str = "pseudonym") -> pl.DataFrame:
    """One row per person: their row and the signature of their participation rows."""
    if participation is None:
        return persons.with_columns(pl.lit("").alias(PARTICIPATION))
    sig = signatures(participation.rename({id_column: "person_id"})).rename(
        {"person_id": id_column})
    return _with_signature(persons, sig, id_column)


def _with_signature(persons: pl.DataFrame, signature: pl.DataFrame, id_column: str
                    ) -> pl.DataFrame:
    return persons.join(signature, on=id_column, how="left").with_columns(
        pl.col(PARTICIPATION).fill_null(""))


def unrecords(rows: pl.DataFrame, id_column: str = "pseudonym"
              ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """records() undone: (person rows, participation rows)."""
    tokens = (rows.select(id_column, pl.col(PARTICIPATION).str.split("|").alias("_t"))
              .explode("_t").filter(pl.col("_t") != "")
              .with_columns(pl.col("_t").str.split_exact(":", 1).alias("_p")).unnest("_p"))
    participation = tokens.select(id_column, pl.col("field_0").alias("program"),
                                  pl.col("field_1").alias("period"))
    return rows.drop(PARTICIPATION), participation


def whole_record_k(persons: pl.DataFrame, spells: pl.DataFrame, qis: list[str],
                   id_column: str = "pseudonym") -> int:
    """k over the released files themselves: each person's row plus the signature of their
    participation rows (program, period), as a recipient would see them."""
    return k_of(records(persons, spells, id_column),
                [*[q for q in qis if q in persons.columns], PARTICIPATION])
