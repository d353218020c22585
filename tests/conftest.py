from __future__ import annotations

from pathlib import Path

import pytest

from ids_lakehouse.config import Lake
from ids_lakehouse.synth.generate import generate

TINY_PERSONS = 800


@pytest.fixture(scope="session")
def tiny_landing(tmp_path_factory) -> Path:
    """A small generated population; read-only for tests (copy before changing)."""
    out = tmp_path_factory.mktemp("landing")
    generate(TINY_PERSONS, seed=7, out=out, chunk_size=300)
    return out


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake")
