"""Helpers the linkage benchmark's worker tasks share: reading the cached inputs and the
Splink underflow shim."""

from __future__ import annotations


def install_clamp_shim() -> list:
    """Splink 5 raises ValueError when EM estimates an m or u probability below 1e-300
    (`M_U_CLAMP_MIN`). An earlier model hit it (a "same e-mail" location level that only one
    agency could fill; the level is gone). The workers clamp such a value to 1e-300 instead
    of failing and record each clamp, so a recurrence is reported in the doc rather than
    ending the benchmark; with no underflow it changes nothing. Installed for bare Splink
    too."""
    import splink.internals.comparison_level as clm

    hits: list = []
    low = clm.M_U_CLAMP_MIN
    for name in ("m_probability", "u_probability"):
        prop = getattr(clm.ComparisonLevel, name)

        def setter(self, value, _fset=prop.fset, _name=name):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
                hits.append({"level": self.label_for_charts, "param": _name,
                             "value": float(value)})
                value = low
            _fset(self, value)

        setattr(clm.ComparisonLevel, name, prop.setter(setter))
    return hits


def read_records(path: str, holdout: float = 0.0, holdout_seed: int = 0):
    """Silver person records, minus a random `holdout` share of them when asked."""
    import polars as pl

    df = pl.read_parquet(path)
    if holdout:
        df = df.sample(fraction=1 - holdout, seed=holdout_seed, shuffle=False)
    return df


def read_truth(path: str):
    import polars as pl

    return pl.read_parquet(path)
