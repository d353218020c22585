"""Source definitions: one declarative YAML file per agency in `data_model/sources/`.

Onboarding an agency is a new file, not new code. A malformed file fails at load with a
message naming the file and the key."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ids_lakehouse.declarations import DeclarationError, load

Format = Literal["csv", "parquet", "jsonl", "fixed_width", "xlsx"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Strict):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str = Field('"', min_length=1, max_length=1)
    header: bool = True
    multiline_values: bool = False  # quoted values may span lines (row numbers, not lines)


class FixedWidthColumn(_Strict):
    name: str
    start: int = Field(ge=1, description="1-based first character")
    width: int = Field(ge=1)


class FieldMap(_Strict):
    """How one canonical field is filled from the source."""

    column: str | None = None
    value: str | None = None              # a constant
    format: str | None = None             # strptime format for dates
    codes: dict[str, str | None] | None = None  # code-list translation
    transform: str | None = None          # a named parser (e.g. name_last_comma_first)

    @model_validator(mode="after")
    def _one_origin(self) -> FieldMap:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        return self


class SourceDefinition(_Strict):
    source: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    agency: str
    description: str
    data_owner: str
    steward: str
    file_pattern: str = "*"
    format: Format
    encoding: str = "utf-8"
    compression: Literal["none", "gzip", "infer"] = "infer"
    csv: CsvOptions = CsvOptions()
    fixed_width: list[FixedWidthColumn] | None = None
    sheet: str | None = None
    columns: list[str] = Field(min_length=1, description="expected columns, as delivered")
    required_columns: list[str] = []
    record_id: str
    extra_columns: Literal["keep", "fail"] = "keep"
    row_errors: Literal["quarantine", "fail"] = "quarantine"
    # snapshot: each file is the agency's full extract (conform reads the latest);
    # incremental: each file adds records (conform reads them all).
    delivery: Literal["snapshot", "incremental"] = "snapshot"
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    mapping: dict[str, dict[str, FieldMap]] = {}

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SourceDefinition:
        known = set(self.columns)
        for key in ("required_columns",):
            missing = [c for c in getattr(self, key) if c not in known]
            if missing:
                raise ValueError(f"{key} names columns not in 'columns': {missing}")
        if self.record_id not in known:
            raise ValueError(f"record_id {self.record_id!r} is not in 'columns'")
        if self.format == "fixed_width":
            if not self.fixed_width:
                raise ValueError("format fixed_width needs a 'fixed_width' column layout")
            if [c.name for c in self.fixed_width] != self.columns:
                raise ValueError("'fixed_width' names must equal 'columns', in order")
        from ids_lakehouse.conform.transforms import TRANSFORMS

        for entity, fields in self.mapping.items():
            for name, fm in fields.items():
                if fm.column is not None and fm.column not in known:
                    raise ValueError(f"mapping.{entity}.{name}: column {fm.column!r} "
                                     "is not in 'columns'")
                if fm.transform is not None and fm.transform not in TRANSFORMS:
                    raise ValueError(f"mapping.{entity}.{name}: unknown transform "
                                     f"{fm.transform!r}; known: {sorted(TRANSFORMS)}")
        return self

    @property
    def text_format(self) -> bool:
        return self.format != "parquet"


class SourceDefinitionError(DeclarationError):
    pass


def load_source(path: Path) -> SourceDefinition:
    return load(path, SourceDefinition, name_key="source", error=SourceDefinitionError)


def sources_dir() -> Path:
    return Path(str(resources.files("data_model").joinpath("sources")))


@lru_cache(maxsize=4)
def load_sources(directory: Path | None = None) -> dict[str, SourceDefinition]:
    directory = Path(directory) if directory else sources_dir()
    defs = [load_source(p) for p in sorted(directory.glob("*.yaml"))]
    return {d.source: d for d in defs}
