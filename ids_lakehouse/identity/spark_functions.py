"""identity.similarity's column functions as Spark SQL functions over Arrow batches
(identity.engines registers them). Spark reads the annotations to tell a pandas function's
kind: this module leaves them unpostponed (no `from __future__ import annotations`).
Spark's executors import it, so they need this package installed, as for the model's
other code."""

import pandas as pd  # type: ignore[import-untyped]

from ids_lakehouse.identity import similarity


def _as_list(s: pd.Series) -> list[str | None]:
    return [None if v is None or v is pd.NA else str(v) for v in s.astype(object)]


def jaro_winkler(a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.Series(similarity.jaro_winkler_column(_as_list(a), _as_list(b)), dtype="Float64")


def damerau_levenshtein(a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.Series(similarity.damerau_levenshtein_column(_as_list(a), _as_list(b)),
                     dtype="Int64")
