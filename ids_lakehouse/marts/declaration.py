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
from ids_lakehouse.model import Classification, DataModel, load_model

Purpose = Literal["indicators", "research", "operations"]
MartType = Literal["String", "Int32", "Int64", "Float64", "Date"]
Format = Literal["pseudonym"]
# A lineage reference: layer/table.column
REFERENCE = re.compile(r"^(silver|identity)/([a-z_]+)\.([a-z_]+)$")
# A warehouse schema or view name: a plain SQL identifier (they are written into DDL).
SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Regular-expression syntax Python accepts but the contracts' engine (Rust regex, in
# polars) does not: look-around and back-references.
UNSUPPORTED_REGEX = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")
TEXT_CHECKS = ("code_list", "values", "pattern", "format")


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

    @model_validator(mode="after")
    def _checks_fit_the_type(self) -> MartColumn:
        text = [c for c in TEXT_CHECKS if getattr(self, c) is not None]
        if text and self.type != "String":
            raise ValueError(f"{', '.join(text)} apply to String columns, not {self.type}")
        if self.non_negative and self.type not in ("Int32", "Int64", "Float64"):
            raise ValueError(f"non_negative applies to numbers, not {self.type}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern: {exc}") from None
            if UNSUPPORTED_REGEX.search(self.pattern):
                raise ValueError("pattern: look-around and back-references are not supported "
                                 "by the contracts' regex engine")
        return self

    def lineage_pairs(self) -> list[tuple[str, str]]:
        """[(layer/table, column)] this column derives from."""
        return [(ref.split(".")[0], ref.split(".")[1]) for ref in self.lineage]


class MartDef(_Strict):
    purpose: Purpose
    description: str
    zone: Literal["restricted", "internal", "published"] | None = None
    identifier_free: bool = False
    aggregate: bool = False
    # Whole-record k-anonymity (with participation) and local suppression are checked on it.
    k_anonymous: bool = False
    view: str | None = Field(default=None, pattern=SQL_NAME.pattern)
    unique: list[str] = []
    strict: bool = True
    columns: dict[str, MartColumn] = Field(min_length=1)

    def quasi_identifiers(self) -> list[str]:
        return [c for c, d in self.columns.items() if d.classification == "quasi_identifier"]


class PurposeDef(_Strict):
    access_level: Literal["public", "restricted public", "non-public"]
    warehouse_schema: str | None = Field(default=None, pattern=SQL_NAME.pattern)


class MartsDeclaration(_Strict):
    purposes: dict[Purpose, PurposeDef]
    marts: dict[str, MartDef] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> MartsDeclaration:
        for name, mart in self.marts.items():
            _check_mart(f"marts.{name}", mart)
            where = f"marts.{name}"
            if mart.purpose not in self.purposes:
                raise ValueError(f"{where}.purpose: {mart.purpose!r} is not under purposes")
            if mart.view and not self.purposes[mart.purpose].warehouse_schema:
                raise ValueError(f"{where}.view: purpose {mart.purpose!r} has no "
                                 "warehouse_schema")
        k_anonymous = [n for n, m in self.marts.items() if m.k_anonymous]
        if len(k_anonymous) > 1:
            raise ValueError(f"marts: only one mart (the research person file) may be "
                             f"k_anonymous, not {k_anonymous}")
        seen: dict[tuple[str, str], str] = {}
        for name, mart in self.marts.items():
            if mart.view is None:
                continue
            if (mart.purpose, mart.view) in seen:
                raise ValueError(f"marts.{name}.view: {mart.purpose}.{mart.view} is already "
                                 f"the view of {seen[mart.purpose, mart.view]}")
            seen[mart.purpose, mart.view] = name
        return self

    def research_quasi_identifiers(self) -> list[str]:
        """The quasi-identifier columns of the k-anonymous research person file."""
        return [c for m in self.marts.values() if m.k_anonymous
                for c in m.quasi_identifiers()]

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


def _check_mart(where: str, mart: MartDef) -> None:
    """What a single mart's declaration must satisfy beyond its fields' own types."""
    unknown = sorted(set(mart.unique) - set(mart.columns))
    if unknown:
        raise ValueError(f"{where}.unique: unknown columns {unknown}")
    if mart.aggregate and "persons" not in mart.columns:
        raise ValueError(f"{where}: an aggregate mart publishes a 'persons' count")
    identified = [c for c, d in mart.columns.items() if d.classification == "direct_identifier"]
    if identified and (mart.identifier_free or mart.view or mart.zone != "restricted"):
        raise ValueError(f"{where}: direct identifiers {identified} may only be in a mart "
                         "in the restricted zone, not identifier_free, without a view")
    if mart.k_anonymous and not mart.quasi_identifiers():
        raise ValueError(f"{where}: k_anonymous without a quasi_identifier column")
    model = load_model()
    for cname, col in mart.columns.items():
        if col.code_list and col.code_list not in model.code_lists:
            raise ValueError(f"{where}.columns.{cname}.code_list: unknown code list "
                             f"{col.code_list!r}")
        for ref in col.lineage:
            problem = _lineage_problem(ref, model)
            if problem:
                raise ValueError(f"{where}.columns.{cname}.lineage: {ref!r} {problem}")


def _lineage_problem(ref: str, model: DataModel) -> str:
    """Why a lineage reference does not name a column the lake has ("" when it does)."""
    from ids_lakehouse.identity.stable_ids import XREF_SCHEMA

    found = REFERENCE.match(ref)
    if not found:
        return "is not 'layer/table.column'"
    layer, table, column = found.groups()
    if layer == "silver":
        entity = model.entities.get(table)
        if entity is None:
            return "names no silver entity"
        return "" if column in entity.fields else f"names no field of {table}"
    if table != "person_xref":
        return "names no identity table a mart reads (person_xref)"
    return "" if column in XREF_SCHEMA else "names no column of person_xref"


def marts_file() -> Path:
    return Path(str(resources.files("data_model").joinpath("marts.yaml")))


def load_marts_file(path: Path) -> MartsDeclaration:
    return load(path, MartsDeclaration)


@lru_cache(maxsize=1)
def load_marts() -> MartsDeclaration:
    return load_marts_file(marts_file())
