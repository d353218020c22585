"""String similarities as the linkage model defines them: DuckDB's jaro_winkler_similarity
and damerau_levenshtein, which compare UTF-8 bytes, not characters (on characters a
tester's МАРИНА / МАРИЯ fell a level). Real-time matching (identity.realtime) scores one
pair at a time with these; linkage on Spark (identity.engines) calls the column versions,
because Splink's Spark functions (Apache Commons Text) give other values: their
Jaro-Winkler of HERNANDEZ / HERNENDEZ is 0.918, DuckDB's 0.931, another level at 0.92."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Postfix, Prefix


def jaro_winkler(a: str, b: str) -> float:
    # DuckDB's jaro_winkler_similarity('', '') is 0 (rapidfuzz says 1).
    return JaroWinkler.similarity(a.encode(), b.encode()) if a and b else 0.0


# The model compares Damerau-Levenshtein distances with 0 and 1 only (`within one edit`):
# 2 stands for anything above 1. That is found in time linear in the length: after the
# common prefix and suffix, one edit leaves at most two characters on each side (the
# distance itself takes the product of the lengths: 1.6 s for two 20,000-byte streets, which
# Spark computed for every pair whatever the length guard in the model's SQL).
MORE_THAN_ONE = 2


def _within_one(a: bytes, b: bytes) -> int:
    if a == b:
        return 0
    if abs(len(a) - len(b)) > 1:
        return MORE_THAN_ONE
    start = int(Prefix.similarity(a, b))
    end = int(Postfix.similarity(a[start:], b[start:]))
    core_a, core_b = a[start:len(a) - end], b[start:len(b) - end]
    if max(len(core_a), len(core_b)) > 2:
        return MORE_THAN_ONE
    return min(int(DamerauLevenshtein.distance(core_a, core_b)), MORE_THAN_ONE)


def damerau_levenshtein(a: str, b: str) -> int:
    """DuckDB's damerau_levenshtein (on UTF-8 bytes) where it is 0 or 1, else 2."""
    return _within_one(a.encode(), b.encode())


def jaro_winkler_column(a: Sequence[str | None], b: Sequence[str | None]
                        ) -> list[float | None]:
    """`jaro_winkler` of each pair (a[i], b[i]); null where either is null."""
    pairs = list(zip(a, b, strict=True))
    if not pairs:
        return []
    scores = process.cpdist([(x or "").encode() for x, _ in pairs],
                            [(y or "").encode() for _, y in pairs],
                            scorer=JaroWinkler.similarity, dtype=np.float64, workers=1)
    return [None if x is None or y is None else float(s) if x and y else 0.0
            for (x, y), s in zip(pairs, scores, strict=True)]


def damerau_levenshtein_column(a: Sequence[str | None], b: Sequence[str | None]
                               ) -> list[int | None]:
    """`damerau_levenshtein` of each pair (a[i], b[i]); null where either is null."""
    return [None if x is None or y is None else _within_one(x.encode(), y.encode())
            for x, y in zip(a, b, strict=True)]
