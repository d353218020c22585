"""String similarities as the linkage model defines them: DuckDB's jaro_winkler_similarity
and damerau_levenshtein, which compare UTF-8 bytes, not characters (on characters a
tester's МАРИНА / МАРИЯ fell a level). Real-time matching (identity.realtime) scores one
pair at a time with these; linkage on Spark (identity.engines) calls the column versions,
because Splink's Spark functions (Apache Commons Text) give other values: their
Jaro-Winkler of HERNANDEZ / HERNENDEZ is 0.918, DuckDB's 0.931, another level at 0.92."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler


def jaro_winkler(a: str, b: str) -> float:
    # DuckDB's jaro_winkler_similarity('', '') is 0 (rapidfuzz says 1).
    return JaroWinkler.similarity(a.encode(), b.encode()) if a and b else 0.0


def damerau_levenshtein(a: str, b: str, cutoff: int | None = None) -> int:
    """The distance; with `cutoff`, cutoff + 1 stands for anything above it."""
    return int(DamerauLevenshtein.distance(a.encode(), b.encode(), score_cutoff=cutoff))


def _pairwise(a: Sequence[str | None], b: Sequence[str | None], scorer: Any,
              dtype: type) -> tuple[np.ndarray, np.ndarray]:
    left = [s.encode() if s is not None else b"" for s in a]
    right = [s.encode() if s is not None else b"" for s in b]
    null = np.array([x is None or y is None for x, y in zip(a, b, strict=True)], dtype=bool)
    if not left:
        return np.zeros(0, dtype=dtype), null
    return process.cpdist(left, right, scorer=scorer, dtype=dtype, workers=1), null


def jaro_winkler_column(a: Sequence[str | None], b: Sequence[str | None]
                        ) -> list[float | None]:
    """`jaro_winkler` of each pair (a[i], b[i]); null where either is null."""
    scores, null = _pairwise(a, b, JaroWinkler.similarity, np.float64)
    empty = np.array([not x or not y for x, y in zip(a, b, strict=True)], dtype=bool)
    scores[empty] = 0.0
    return [None if n else float(s) for s, n in zip(scores, null, strict=True)]


def damerau_levenshtein_column(a: Sequence[str | None], b: Sequence[str | None]
                               ) -> list[int | None]:
    """`damerau_levenshtein` of each pair (a[i], b[i]); null where either is null."""
    distances, null = _pairwise(a, b, DamerauLevenshtein.distance, np.int64)
    return [None if n else int(d) for d, n in zip(distances, null, strict=True)]
