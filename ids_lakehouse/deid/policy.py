"""The disclosure policy (`data_model/disclosure.yaml`) and the restricted ZIP3 list."""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ids_lakehouse.declarations import parse
from ids_lakehouse.marts.declaration import load_marts

LADDER_COLUMNS = {"birth_year", "zip3", "county_fips", "race_ethnicity", "sex",
                  "participation"}


class NumericMeasure(BaseModel):
    """A per person-year value a remote query may sum or average, clamped to its declared
    bounds (the bounds, not the data, set how much one person can move an answer)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    lower: int
    upper: int

    @model_validator(mode="after")
    def _ordered(self) -> NumericMeasure:
        if self.upper <= self.lower:
            raise ValueError("upper must be above lower")
        return self


class RemoteQueries(BaseModel):
    """Output control of `POST /v1/queries` (differential privacy, zero-concentrated; see
    docs/adr/0006-remote-queries-differential-privacy.md)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    noise_sigma: float = Field(gt=0)          # the least noise a count may get
    max_budget_rho: float = Field(gt=0)       # the most an agreement may declare
    max_cells: int = Field(ge=1)              # cells one answer may hold
    measures: dict[str, NumericMeasure]


class DisclosurePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cell_size: int = Field(ge=2)
    k_anonymity: int = Field(ge=2)
    max_local_suppression: float = Field(ge=0, le=1)
    age_top_code: int = Field(ge=1)
    age_bands: list[tuple[int, int]]
    cell_key_perturbation: dict[int, float]
    holdback_threshold_spread: int = Field(ge=0)
    participation_period_years: int = Field(ge=1)
    generalisation: list[dict[str, int | str]]
    remote_queries: RemoteQueries

    @model_validator(mode="after")
    def _sound(self) -> DisclosurePolicy:
        p = self.cell_key_perturbation
        if abs(sum(p.values()) - 1) > 1e-9 or min(p.values()) < 0:
            raise ValueError("cell_key_perturbation: probabilities must be >= 0 and sum to 1")
        if any(abs(p.get(v, 0) - p.get(-v, 0)) > 1e-12 for v in p):
            raise ValueError("cell_key_perturbation must be symmetric (mean zero)")
        for step in self.generalisation:
            unknown = sorted(set(step) - LADDER_COLUMNS)
            if unknown:
                raise ValueError(f"generalisation: unknown columns {unknown}")
        return self

    @property
    def research_quasi_identifiers(self) -> list[str]:
        """The research person file's quasi-identifiers, as data_model/marts.yaml classifies
        its columns (participation is one more, always: see kanon.py)."""
        return load_marts().research_quasi_identifiers()

    @property
    def max_perturbation(self) -> int:
        return max(abs(v) for v in self.cell_key_perturbation)


@lru_cache(maxsize=1)
def load_policy() -> DisclosurePolicy:
    text = resources.files("data_model").joinpath("disclosure.yaml").read_text()
    return DisclosurePolicy.model_validate(parse(text))


@lru_cache(maxsize=1)
def restricted_zip3() -> frozenset[str]:
    text = resources.files("data_model").joinpath("code_lists/restricted_zip3.csv").read_text()
    return frozenset(r["zip3"] for r in csv.DictReader(
        line for line in text.splitlines() if not line.startswith("#")))
