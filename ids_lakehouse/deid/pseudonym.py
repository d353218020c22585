"""Keyed pseudonyms: HMAC-SHA-256 of the person_id. Each release derives its own key from
the master secret, so two recipients' files cannot be joined on the pseudonym."""

from __future__ import annotations

import hashlib
import hmac

import polars as pl

PSEUDONYM_CHARS = 32  # 128 bits


def derive_key(master: bytes, label: str) -> bytes:
    """The key of one release (or mart), derived from the master secret and a label."""
    return hmac.new(master, b"ids-lakehouse/pseudonym/v1/" + label.encode(),
                    hashlib.sha256).digest()


def pseudonymise(person_ids: pl.Series, key: bytes) -> pl.Series:
    return pl.Series(person_ids.name, [
        hmac.new(key, p.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]
        for p in person_ids.to_list()], dtype=pl.String)
