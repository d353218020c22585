"""Source definitions: one declarative YAML file per agency in `data_model/sources/`.

Onboarding an agency is a new file, not new code. A malformed file fails at load with a
message naming the file and the key."""

from __future__ import annotations

import re
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
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    header: bool = True
    # Quoted values may span lines (a record's _row_number is the line it starts on). When
    # false (the default) a record spanning lines (an RFC 4180 quoted line break, or an
    # unbalanced quote swallowing the lines after it) fails the file with rule
    # `newline_in_value` and the line; nothing is merged silently.
    multiline_values: bool = False


GIB = 1 << 30
MIB = 1 << 20


class IngestLimits(_Strict):
    """Bounds on what one delivered file may cost to read; a file past a limit fails with a
    clear rule instead of exhausting time or memory. Every limit has a default; a source
    declares its own under `limits:` only when its deliveries legitimately need more."""

    # Decompressed bytes of a gzip file, and the uncompressed bytes of all the parts of an
    # xlsx workbook (rule `decompression_limit`).
    max_expanded_bytes: int = Field(default=16 * GIB, ge=1)
    # Decompressed / compressed bytes, checked while streaming once 256 KiB have been
    # expanded (gzip), for each xlsx part over 1 MiB, and for a Parquet file's pages. Real
    # extracts compress 3-30x; a bomb of repeated bytes approaches deflate's 1032x.
    max_expansion_ratio: float = Field(default=200.0, ge=1)
    # The sharedStrings part of an xlsx workbook, which the reader holds in memory.
    max_shared_strings_bytes: int = Field(default=256 * MIB, ge=1)
    # One physical line of a text file, in bytes (rule `line_too_long`, the file fails). CSV
    # lines are also bounded by the parser's block size (1 MiB).
    max_line_bytes: int = Field(default=1 * MIB, ge=16)
    # One delivered value (CSV field, JSON string, fixed-width field, Excel cell), in
    # characters; longer values quarantine their row (rule `value_too_long`). The default is
    # Excel's own cell limit.
    max_value_chars: int = Field(default=32_767, ge=1)


class FixedWidthColumn(_Strict):
    name: str
    start: int = Field(ge=1, description="1-based first character")
    width: int = Field(ge=1)


class FieldMap(_Strict):
    """How one canonical field is filled from the source."""

    column: str | None = None
    # Several delivered columns joined (blank ones skipped) with `separator`, e.g. a street
    # number and a street name; format, codes and transform then apply to the joined text.
    columns: list[str] | None = Field(default=None, min_length=2)
    separator: str = " "
    value: str | None = None              # a constant
    format: str | None = None             # strptime format for dates
    codes: dict[str, str | None] | None = None  # code-list translation
    transform: str | None = None          # a named parser (e.g. name_last_comma_first)
    # Only for `national_id`: what the identifier is (e.g. PASSPORT, AU_MEDICARE,
    # AGENCY_CLIENT_ID; records are compared on it only with the same type) and the pattern
    # its normalised value (upper case, spaces, hyphens, dots and slashes removed) matches.
    id_type: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{1,39}$")
    pattern: str | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> FieldMap:
        if sum(x is not None for x in (self.column, self.columns, self.value)) != 1:
            raise ValueError("give exactly one of 'column', 'columns' or 'value'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        return self

    @property
    def source_columns(self) -> list[str]:
        """The delivered columns this field is read from."""
        if self.columns is not None:
            return list(self.columns)
        return [self.column] if self.column is not None else []


# USPS state and territory codes: the default `conventions.state_codes`.
USPS_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI UM AA "
    "AE AP").split()
US_ZIP = r"^([0-9]{5})(?:-?[0-9]{4})?$"


class Conventions(_Strict):
    """How the agency writes addresses and phone numbers. The defaults are the United
    States'; an agency elsewhere declares its own, e.g. for Australia
    `{country: AU, postcode_pattern: "^[0-9]{4}$", state_codes: [ACT, NSW, NT, QLD, SA,
    TAS, VIC, WA]}`. A delivered value that does not follow them is kept in the field's
    `*_raw` column and nulled in the field, with its `*_status`."""

    # ISO 3166-1 alpha-2 (GB, not UK): phone numbers written without a country code are
    # read as this country's numbers.
    country: str = Field(default="US", pattern=r"^[A-Z]{2}$")

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        import phonenumbers

        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"country {value!r} is not an ISO 3166-1 alpha-2 code with a "
                             "numbering plan (the United Kingdom is GB)")
        return value
    # Postcodes are upper-cased, runs of spaces made one, then matched against this
    # pattern; when it has a group, the group is kept (ZIP+4 -> ZIP).
    postcode_pattern: str = US_ZIP
    # The codes a delivered state or province (upper-cased) must be one of.
    state_codes: list[str] = Field(default_factory=lambda: list(USPS_STATES), min_length=1)

    @field_validator("postcode_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"postcode_pattern is not a regular expression: {exc}") from None
        return value

    @field_validator("postcode_pattern")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if re.fullmatch(value, ""):
            raise ValueError("postcode_pattern matches an empty value")
        return value

    @field_validator("state_codes")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [v.strip().upper() for v in value]


def _date_format(fmt: str) -> bool:
    """A strptime format that reads a whole date: a year, a month and a day directive,
    and one a sample date survives a round trip through."""
    import datetime as dt

    if not (any(d in fmt for d in ("%Y", "%y")) and any(d in fmt for d in ("%m", "%b", "%B"))
            and "%d" in fmt):
        return False
    try:
        sample = dt.datetime(2001, 2, 3, 4, 5, 6)
        return dt.datetime.strptime(sample.strftime(fmt), fmt).date() == sample.date()
    except ValueError:
        return False


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
    max_quarantine_rate: float = Field(default=0.05, ge=0, le=1)
    # Per identifying field (dob, ssn, national_id, zip, state, phone, email): the share of
    # delivered values that fail validation and are nulled. Messy values cost a field, not
    # the record; a share past this limit is a broken extract (a changed date format, a
    # shifted column) and fails conform's blocking `field_validity` check.
    max_invalid_rate: float = Field(default=0.5, ge=0, le=1)
    # Parquet list/struct/map columns are refused (rule `nested_type`) unless declared here:
    # a nested value is never flattened or cast to text silently.
    allow_nested_types: bool = False
    limits: IngestLimits = IngestLimits()
    conventions: Conventions = Conventions()
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
        from ids_lakehouse.model import load_model

        model = load_model()
        for entity, fields in self.mapping.items():
            mappable = sorted(e for e, d in model.entities.items() if not d.embedded_in)
            if entity not in mappable:
                raise ValueError(f"mapping.{entity}: not an entity of the data model; "
                                 f"known: {mappable}")
            unknown = sorted(set(fields) - set(model.entities[entity].fields))
            if unknown:
                raise ValueError(f"mapping.{entity}: fields the data model does not have: "
                                 f"{unknown}")
            for name, fm in fields.items():
                ftype = model.entities[entity].fields[name].type
                if fm.format is not None and (ftype != "date" or not _date_format(fm.format)):
                    raise ValueError(f"mapping.{entity}.{name}: 'format' is a strptime "
                                     "format with the year, month and day (e.g. "
                                     "\"%d.%m.%Y\") for a date field")
                if fm.id_type is not None and "SSN" in fm.id_type.split("_"):
                    raise ValueError(f"mapping.{entity}.{name}: a US SSN is mapped to "
                                     "'ssn' (with its structural checks), not national_id")
                if fm.pattern is not None and re.fullmatch(fm.pattern, ""):
                    raise ValueError(f"mapping.{entity}.{name}: pattern matches an empty "
                                     "value")
                for column in fm.source_columns:
                    if column not in known:
                        raise ValueError(f"mapping.{entity}.{name}: column {column!r} "
                                         "is not in 'columns'")
                is_id = (entity, name) == ("person_record", "national_id")
                if is_id and (fm.id_type is None or fm.pattern is None):
                    raise ValueError(f"mapping.{entity}.{name}: give the identifier's "
                                     "'id_type' and the 'pattern' it follows")
                if not is_id and (fm.id_type is not None or fm.pattern is not None):
                    raise ValueError(f"mapping.{entity}.{name}: 'id_type' and 'pattern' "
                                     "are only for person_record.national_id")
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
    """Where the source declarations are: IDS_SOURCES_DIR when set (a deployment's own
    agencies, kept outside the package), else the package's data_model/sources."""
    import os

    chosen = os.environ.get("IDS_SOURCES_DIR")
    return Path(chosen) if chosen else Path(str(resources.files("data_model").joinpath("sources")))


@lru_cache(maxsize=4)
def load_sources(directory: Path | None = None) -> dict[str, SourceDefinition]:
    directory = Path(directory) if directory else sources_dir()
    defs = [load_source(p) for p in sorted(directory.glob("*.yaml"))]
    return {d.source: d for d in defs}
