"""The gold marts as declared, once, in `data_model/marts.yaml`: their purposes, columns,
classifications, lineage, checks and views. Everything else about a mart (the Dagster
assets, the Pandera contract, the catalog, the zone, the warehouse, the agreements'
allowed marts, the research quasi-identifiers) is derived from here."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ids_lakehouse.declarations import load
from ids_lakehouse.model import Classification, load_model

Purpose = Literal["indicators", "research", "operations"]
MartType = Literal["String", "Int32", "Int64", "Float64", "Date"]
Format = Literal["pseudonym"]
# A lineage reference: layer/table.column
REFERENCE = re.compile(r"^(silver|identity)/[a-z_]+\.[a-z_]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MartColumn(_Strict):
    type: MartType
    description: str
    classification: Classification
    nullable: bool = False
    unique: bool = False
    code_list: str | None = None
    values: list[str] | None = None
    pattern: str | None = None
    format: Format | None = None
    non_negative: bool = False
    lineage: list[str] = []

    def lineage_pairs(self) -> list[tuple[str, str]]:
        """[(layer/table, column)] this column derives from."""
        return [(ref.split(".")[0], ref.split(".")[1]) for ref in self.lineage]


class MartDef(_Strict):
    purpose: Purpose
    description: str
    zone: Literal["restricted", "internal", "published"] | None = None
    identifier_free: bool = False
    aggregate: bool = False
    view: str | None = None
    unique: list[str] = []
    strict: bool = True
    columns: dict[str, MartColumn] = Field(min_length=1)

    def quasi_identifiers(self) -> list[str]:
        return [c for c, d in self.columns.items() if d.classification == "quasi_identifier"]


class PurposeDef(_Strict):
    access_level: Literal["public", "restricted public", "non-public"]
    warehouse_schema: str | None = None


class MartsDeclaration(_Strict):
    purposes: dict[Purpose, PurposeDef]
    marts: dict[str, MartDef] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> MartsDeclaration:
        model = load_model()
        for name, mart in self.marts.items():
            where = f"marts.{name}"
            if mart.purpose not in self.purposes:
                raise ValueError(f"{where}.purpose: {mart.purpose!r} is not under purposes")
            if mart.view and not self.purposes[mart.purpose].warehouse_schema:
                raise ValueError(f"{where}.view: purpose {mart.purpose!r} has no "
                                 "warehouse_schema")
            unknown = sorted(set(mart.unique) - set(mart.columns))
            if unknown:
                raise ValueError(f"{where}.unique: unknown columns {unknown}")
            if mart.aggregate and "persons" not in mart.columns:
                raise ValueError(f"{where}: an aggregate mart publishes a 'persons' count")
            for cname, col in mart.columns.items():
                if col.code_list and col.code_list not in model.code_lists:
                    raise ValueError(f"{where}.columns.{cname}.code_list: unknown code list "
                                     f"{col.code_list!r}")
                bad = [r for r in col.lineage if not REFERENCE.match(r)]
                if bad:
                    raise ValueError(f"{where}.columns.{cname}.lineage: {bad} are not "
                                     "'layer/table.column'")
                if col.pattern is not None:
                    try:
                        re.compile(col.pattern)
                    except re.error as exc:
                        raise ValueError(f"{where}.columns.{cname}.pattern: {exc}") from None
        views = [(m.purpose, m.view) for m in self.marts.values() if m.view]
        if len(views) != len(set(views)):
            raise ValueError("two marts declare the same warehouse view")
        return self

    def of_purpose(self, purpose: str) -> list[str]:
        return sorted(n for n, m in self.marts.items() if m.purpose == purpose)

    @property
    def aggregates(self) -> frozenset[str]:
        return frozenset(n for n, m in self.marts.items() if m.aggregate)

    @property
    def identifier_free(self) -> list[str]:
        return [n for n, m in self.marts.items() if m.identifier_free]

    def views(self) -> dict[str, dict[str, str]]:
        """warehouse schema -> view -> mart."""
        out: dict[str, dict[str, str]] = {}
        for name, mart in self.marts.items():
            schema = self.purposes[mart.purpose].warehouse_schema
            if mart.view and schema:
                out.setdefault(schema, {})[mart.view] = name
        return out


def marts_file() -> Path:
    return Path(str(resources.files("data_model").joinpath("marts.yaml")))


def load_marts_file(path: Path) -> MartsDeclaration:
    return load(path, MartsDeclaration)


@lru_cache(maxsize=1)
def load_marts() -> MartsDeclaration:
    return load_marts_file(marts_file())
