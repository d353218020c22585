"""The disclosure policy (`data_model/disclosure.yaml`) and the restricted ZIP3 list."""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class DisclosurePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cell_size: int = Field(ge=2)
    k_anonymity: int = Field(ge=2)
    max_local_suppression: float = Field(ge=0, le=1)
    age_top_code: int = Field(ge=1)
    research_date_precision: Literal["year", "month"]
    age_bands: list[tuple[int, int]]
    research_quasi_identifiers: list[str]
    generalisation: list[dict[str, int | str]]


@lru_cache(maxsize=1)
def load_policy() -> DisclosurePolicy:
    text = resources.files("data_model").joinpath("disclosure.yaml").read_text()
    return DisclosurePolicy.model_validate(yaml.safe_load(text))


@lru_cache(maxsize=1)
def restricted_zip3() -> frozenset[str]:
    text = resources.files("data_model").joinpath("code_lists/restricted_zip3.csv").read_text()
    return frozenset(r["zip3"] for r in csv.DictReader(
        line for line in text.splitlines() if not line.startswith("#")))
