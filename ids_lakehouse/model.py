"""The canonical data model (`data_model/model.yaml`), loaded and checked once."""

from __future__ import annotations

import csv
import datetime as dt
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator

from ids_lakehouse.declarations import load

Classification = Literal["direct_identifier", "quasi_identifier", "sensitive",
                         "non_identifying"]
# The polars type of each model field type.
DTYPES: dict[str, type[pl.DataType]] = {"string": pl.String, "date": pl.Date, "int": pl.Int64,
                                        "bool": pl.Boolean}
Regime = Literal["HIPAA", "FERPA", "42_CFR_PART_2", "PRIVACY_ACT", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldDef(_Strict):
    type: Literal["string", "date", "int", "bool"]
    description: str
    classification: Classification
    legal_regime: Regime
    nullable: bool = True
    code_list: str | None = None
    pattern: str | None = None
    min: str | None = None      # ISO date, or "as_of"
    max: str | None = None


class RuleDef(_Strict):
    name: str
    description: str
    # A record-level rule: the record is quarantined when none of these fields is usable.
    requires_any: list[str] = []


class EntityDef(_Strict):
    description: str
    fields: dict[str, FieldDef]
    key: list[str] = []
    rules: list[RuleDef] = []
    embedded_in: str | None = None


class CodeListDef(_Strict):
    description: str
    codes: list[str] | None = None
    file: str | None = None
    column: str | None = None


class DataModel(_Strict):
    as_of: dt.date
    owners: list[str]
    max_age_years: int
    code_lists: dict[str, CodeListDef]
    entities: dict[str, EntityDef]

    @model_validator(mode="after")
    def _references(self) -> DataModel:
        for ename, entity in self.entities.items():
            for fname, f in entity.fields.items():
                if f.code_list and f.code_list not in self.code_lists:
                    raise ValueError(f"entities.{ename}.fields.{fname}: unknown code_list "
                                     f"{f.code_list!r}")
            for rule in entity.rules:
                unknown = set(rule.requires_any) - set(entity.fields)
                if unknown:
                    raise ValueError(f"entities.{ename}.rules.{rule.name}: requires_any names "
                                     f"unknown fields {sorted(unknown)}")
            if entity.embedded_in and entity.embedded_in not in self.entities:
                raise ValueError(f"entities.{ename}.embedded_in: unknown entity")
        return self

    def codes(self, name: str) -> list[str]:
        cl = self.code_lists[name]
        if cl.codes is not None:
            return list(cl.codes)
        if cl.file is None:
            raise ValueError(f"code_lists.{name}: neither codes nor a file")
        text = resources.files("data_model").joinpath(cl.file).read_text()
        rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
        return [r[cl.column] for r in rows]

    def date_bound(self, value: str | None) -> dt.date | None:
        if value is None:
            return None
        return self.as_of if value == "as_of" else dt.date.fromisoformat(value)

    def classification(self, entity: str, field: str) -> Classification:
        return self.entities[entity].fields[field].classification

    def published_entities(self) -> list[str]:
        return [n for n, e in self.entities.items() if not e.embedded_in]


def load_model_file(path: Path) -> DataModel:
    return load(path, DataModel)


@lru_cache(maxsize=1)
def load_model() -> DataModel:
    return load_model_file(Path(str(resources.files("data_model").joinpath("model.yaml"))))
