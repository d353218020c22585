"""HIPAA Safe Harbor transforms: dates to year, ZIP to ZIP3 (000 where the three-digit
area has 20,000 people or fewer), ages at or above the top code reported together."""

from __future__ import annotations

import polars as pl

from ids_lakehouse.deid.policy import load_policy, restricted_zip3


def zip3(zip5: pl.Expr) -> pl.Expr:
    z = zip5.str.slice(0, 3)
    return pl.when(z.is_in(list(restricted_zip3()))).then(pl.lit("000")).otherwise(z)


def age_on(dob: pl.Expr, on_year: pl.Expr | int, month: int = 7, day: int = 1) -> pl.Expr:
    """Age in whole years on `month`/`day` of `on_year`."""
    year = on_year if isinstance(on_year, pl.Expr) else pl.lit(on_year)
    before_birthday = (dob.dt.month() > month) | ((dob.dt.month() == month)
                                                 & (dob.dt.day() > day))
    return year - dob.dt.year() - before_birthday.cast(pl.Int32)


def age_band(age: pl.Expr) -> pl.Expr:
    policy = load_policy()
    expr = pl.lit("UNKNOWN", dtype=pl.String)  # no age, or one outside every band
    for low, high in reversed(policy.age_bands):
        label = f"{low}+" if low >= policy.age_top_code else f"{low}-{high}"
        expr = pl.when((age >= low) & (age <= high)).then(pl.lit(label)).otherwise(expr)
    return expr


def birth_year(dob: pl.Expr, as_of_year: int) -> pl.Expr:
    """Year of birth as text; people at or above the top code are all '<= year' so their
    age cannot be read off."""
    top = load_policy().age_top_code
    cutoff = as_of_year - top
    return (pl.when(dob.is_null()).then(pl.lit("UNKNOWN"))
            .when(dob.dt.year() <= cutoff).then(pl.lit(f"<={cutoff}"))
            .otherwise(dob.dt.year().cast(pl.String)))
