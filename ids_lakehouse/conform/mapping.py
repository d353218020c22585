"""Bronze -> silver for one source: map delivered columns to the canonical model, parse,
standardise, validate against the contracts and the rules across one row's entities
(`ROW_RULES`), and split the rows into silver and quarantine. Every bronze row ends up in
exactly one row-level silver entity (the source's enrollments or events; for a source
that delivers person records only, its person records) or in quarantine (one quarantine
row per bronze row, with all of its failures).

A problem with one field of a person record costs the field, not the person: an
unparseable or implausible date of birth, an SSN, identifier, postcode, state, phone or
e-mail that does not validate, a code the mapping does not list, a name a transform cannot
read -- the field is nulled, the delivered value stays in its `*_raw` column where the
model has one, its `*_status` says why, and the problems are counted per rule and column.
A person record is quarantined only when it breaks a record rule of the model (e.g. no
identifying field at all) or a non-nullable field. Enrollments and events, whose fields
carry the facts themselves, are quarantined with their row for any problem."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandera.errors
import pandera.polars as pa
import polars as pl

from ids_lakehouse.conform import standardise as std
from ids_lakehouse.conform.transforms import TRANSFORMS
from ids_lakehouse.model import DTYPES, DataModel, load_model
from ids_lakehouse.sources import FieldMap, SourceDefinition

ROW_ENTITIES = ("enrollment", "service_event")   # one row per bronze row
PROVENANCE = ["_file", "_file_sha256", "_row_number"]
FAILURE_SCHEMA = {"_i": pl.UInt32, "rule": pl.String, "column": pl.String,
                  "reason": pl.String}
PROBLEM_SCHEMA = {"_i": pl.UInt32, "rule": pl.String, "column": pl.String}


class ConformError(RuntimeError):
    """A whole-source problem (e.g. the bronze schema no longer fits the mapping)."""


# Statuses whose value is kept (usable) or that say nothing was delivered.
USABLE = {"valid", "missing", "possible", "partial", "implausible_age"}


def row_entities(defn: SourceDefinition) -> tuple[str, ...]:
    """The entities holding one silver row per conformed bronze row: the source's
    enrollments and events or, for a source that delivers person records only, those."""
    return tuple(e for e in ROW_ENTITIES if e in defn.mapping) or ("person_record",)


@dataclass
class ConformResult:
    source: str
    bronze_rows: int
    entities: dict[str, pl.DataFrame]
    quarantine: pl.DataFrame                 # one row per rejected bronze row
    failures: dict[str, int] = field(default_factory=dict)   # "rule|column" -> rows
    schema_drift: dict[str, list[str] | int] = field(default_factory=dict)
    row_entities: tuple[str, ...] = ROW_ENTITIES
    # Person records kept with a field nulled: "rule|column" -> records.
    field_problems: dict[str, int] = field(default_factory=dict)
    # Per status column of the kept person records: status -> records.
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per distinct bronze row, what conform made of it (`conform_source`'s `seen` next
    # time), and how many of this delivery's rows were replayed from an earlier one.
    row_cache: pl.DataFrame | None = None
    rows_replayed: int = 0
    # The bronze rows conformed anew (_file_sha256, _row_number) when at most a tenth were
    # (what the silver expectations validate); None: treat every row as new.
    fresh: pl.DataFrame | None = None

    # Per delivered file (an incremental source conforms all its files; a bad new file
    # must not be diluted by the good ones before it): the worst file's shares.
    worst_invalid: dict[str, float] = field(default_factory=dict)
    worst_quarantine_rate: float = 0.0

    def invalid_rates(self) -> dict[str, float]:
        """Per identifying field with a status: the share of delivered values (status not
        `missing`) nulled as invalid, in the worst delivered file."""
        return self.worst_invalid

    @property
    def row_entity_rows(self) -> int:
        return sum(self.entities[e].height for e in self.row_entities if e in self.entities)


class _Failures:
    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []

    def add(self, index: pl.Series, mask: pl.Series, rule: str, column: str,
            reason: str) -> None:
        self.add_rows(index.filter(mask.fill_null(False)), rule, column, reason)

    def add_rows(self, hit: pl.Series, rule: str, column: str, reason: str) -> None:
        if hit.len():
            self.frames.append(pl.DataFrame({
                "_i": hit, "rule": [rule] * hit.len(), "column": [column] * hit.len(),
                "reason": [reason] * hit.len()}, schema=FAILURE_SCHEMA))

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=FAILURE_SCHEMA)


class _FieldProblems:
    """Problems of single fields of person records that are kept: the value is already
    null in the field; one row per record, rule and column (counted per rule and column;
    kept per row so that a record conformed on an earlier night replays its own)."""

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []

    def add(self, index: pl.Series, mask: pl.Series, rule: str, column: str,
            reason: str) -> None:
        hit = index.filter(mask.fill_null(False))
        if hit.len():
            self.frames.append(pl.DataFrame({
                "_i": hit, "rule": [rule] * hit.len(), "column": [column] * hit.len()},
                schema=PROBLEM_SCHEMA))

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=PROBLEM_SCHEMA)


def _delivered(df: pl.DataFrame, fm: FieldMap) -> pl.Series:
    """The delivered value a field is read from: one column, or several joined."""
    if fm.columns is None:
        assert fm.column is not None    # not a constant (callers check): column or columns
        return df[fm.column]
    parts = [std.blank_to_null(pl.col(c).cast(pl.String)) for c in fm.columns]
    joined = df.select(pl.concat_str(parts, separator=fm.separator, ignore_nulls=True))
    return pl.select(std.blank_to_null(pl.lit(joined.to_series()))).to_series()


def _field(df: pl.DataFrame, fm: FieldMap, name: str, ftype: str,
           failures: _Failures | _FieldProblems) -> pl.Series:
    idx = df["_i"]
    if fm.value is not None:
        return pl.Series(name, [fm.value] * df.height, dtype=pl.String)
    raw = _delivered(df, fm)
    origin = "+".join(fm.source_columns)
    if fm.transform:
        values, bad = TRANSFORMS[fm.transform](raw)
        failures.add(idx, bad, fm.transform, name, f"{origin} could not be read by "
                     f"{fm.transform}")
        return values.alias(name)
    if ftype == "date":
        return _date(raw, fm, name, idx, failures)
    text = pl.select(std.blank_to_null(pl.lit(raw))).to_series()
    if fm.codes is not None:
        unknown = text.is_not_null() & ~text.is_in(list(fm.codes))
        failures.add(idx, unknown, "unknown_code", name,
                     f"{origin} holds a code the source mapping does not list")
        return text.replace_strict(fm.codes, default=None, return_dtype=pl.String).alias(name)
    return text.alias(name)


def _date(raw: pl.Series, fm: FieldMap, name: str, idx: pl.Series,
          failures: _Failures | _FieldProblems) -> pl.Series:
    if raw.dtype == pl.Date:
        return raw.alias(name)
    if isinstance(raw.dtype, pl.Datetime):
        return raw.dt.date().alias(name)
    text = pl.select(std.blank_to_null(std.unicode_text(pl.lit(raw.cast(pl.String))))
                     ).to_series()
    fmt = fm.format or "%Y-%m-%d"
    if "%H" in fmt:
        parsed = text.str.to_datetime(fmt, strict=False).dt.date()
    else:
        parsed = text.str.to_date(fmt, strict=False)
    failures.add(idx, text.is_not_null() & parsed.is_null(), "unparseable_date", name,
                 f"{'+'.join(fm.source_columns)} is not a date in the format {fmt}")
    return parsed.alias(name)


def _entity(df: pl.DataFrame, defn: SourceDefinition, entity: str, model: DataModel,
            failures: _Failures, problems: _FieldProblems) -> pl.DataFrame:
    fields = model.entities[entity].fields
    mapping = defn.mapping.get(entity, {})
    unknown = set(mapping) - set(fields)
    if unknown:
        raise ConformError(f"[{defn.source}] mapping.{entity} names fields the data model "
                           f"does not have: {sorted(unknown)}")
    person = entity == "person_record"
    cols = {name: _field(df, mapping[name], name, fields[name].type,
                         problems if person and fields[name].nullable else failures)
            for name in mapping}
    out = pl.DataFrame(list(cols.values())) if cols else pl.DataFrame()
    out = out.with_columns(
        pl.lit(defn.source).alias("source"), _record_id(df, defn.record_id),
        df["_i"], *[df[c] for c in PROVENANCE])
    if person:
        dob_raw = (_delivered(df, mapping["dob"]).cast(pl.String) if "dob" in mapping
                   and mapping["dob"].value is None else pl.Series([None] * df.height,
                                                                   dtype=pl.String))
        out = _standardise_person(out.with_columns(dob_raw.alias("dob_raw")), defn, model)
    missing = [n for n in fields if n not in out.columns]
    out = out.with_columns([pl.lit(None, dtype=DTYPES[fields[n].type]).alias(n)
                            for n in missing])
    return out.select([*fields, "_i", *PROVENANCE])


NO_ID = ["NULL", "NONE", "N/A", "NA", "NAN", "UNKNOWN"]


def _record_id(df: pl.DataFrame, column: str) -> pl.Series:
    """The record id as delivered, stripped; null (not_nullable quarantines the row) when
    it holds no letter or digit once invisible characters are folded away (blank, "-", a
    zero-width space) or is a spelled-out null ("NULL", "N/A")."""
    rid = df[column].cast(pl.String).str.strip_chars()
    folded = df.select(std.unicode_text(pl.col(column).cast(pl.String))).to_series()
    usable = folded.str.contains(r"[\p{L}\p{N}]") & \
        ~folded.str.strip_chars().str.to_uppercase().is_in(NO_ID)
    return pl.select(pl.when(pl.lit(usable)).then(pl.lit(rid)).otherwise(None)
                     .alias("source_record_id")).to_series()


FOLDED = ("ssn", "national_id", "zip")


def _standardise_person(p: pl.DataFrame, defn: SourceDefinition,
                        model: DataModel) -> pl.DataFrame:
    # Every field read below as a column of the frame's height (a bare null literal would
    # not broadcast through the Python folding of non-ASCII text).
    used = ("first_name", "middle_name", "last_name", "street", "city", "ssn", "national_id",
            "zip", "state", "email")
    p = p.with_columns([pl.lit(None, dtype=pl.String).alias(n) for n in used
                        if n not in p.columns])

    conv = defn.conventions
    ident = defn.mapping.get("person_record", {}).get("national_id")
    dob = pl.col("dob").cast(pl.Date) if "dob" in p.columns else pl.lit(None, dtype=pl.Date)
    dob_raw = std.blank_to_null(pl.col("dob_raw"))
    oldest = dt.date(model.as_of.year - model.max_age_years, 1, 1)
    p = p.with_columns(
        dob.alias("dob"),
        (pl.when(dob_raw.is_null()).then(pl.lit("missing"))
         .when(dob.is_null()).then(pl.lit("unparseable"))
         .when(dob < oldest).then(pl.lit("implausible_age")).otherwise(pl.lit("valid"))
         .alias("dob_status")))

    text = {"first_name": std.name, "middle_name": std.name, "last_name": std.name,
            "street": std.street, "city": std.name}
    p = p.with_columns([pl.col(n).alias(f"_raw_{n}") for n in text])
    # Identifiers and postcodes folded once (see std.ssn_frame's `folded`); the SSN's
    # digits and status computed once each (std.with_ssn).
    p = p.with_columns([std.unicode_text(pl.col(n)).alias(f"_fold_{n}") for n in FOLDED])
    p = p.with_columns([fn(pl.col(f"_raw_{n}")).alias(n) for n, fn in text.items()])
    status = {n: std.text_status(pl.col(f"_raw_{n}"), pl.col(n)) for n in text}
    p = std.with_ssn(p, "ssn", "_fold_ssn")
    p = p.with_columns(
        pl.col("_raw_first_name").alias("first_name_raw"),
        pl.col("_raw_last_name").alias("last_name_raw"),
        std.without_suffix(pl.col("last_name")).alias("last_name"),
        std.suffix(pl.col("last_name")).alias("name_suffix"),
        std.worst_status(status["first_name"], status["middle_name"], status["last_name"])
        .alias("name_status"),
        std.worst_status(status["street"], status["city"]).alias("address_status"),
        *std.national_id_frame(pl.col("national_id"), ident.id_type if ident else None,
                               ident.pattern if ident else None, pl.col("_fold_national_id")),
        *std.postcode_frame(pl.col("zip"), conv.postcode_pattern, pl.col("_fold_zip")),
        *std.state_frame(pl.col("state"), conv.state_codes),
        *std.email_frame(pl.col("email")),
    ).drop([f"_raw_{n}" for n in text] + [f"_fold_{n}" for n in FOLDED])
    # County from the ZIP only for a US source, when the ZIP itself is valid (an invalid
    # one is null, never matched by a prefix or a guess) and the record's state is the
    # code list's state or missing: a ZIP never gives a county of another state.
    home = pl.col("state").is_null() | (pl.col("state") == std.COUNTY_STATE)
    by_zip = (p.select(pl.when((pl.col("zip_status") == "valid") & pl.lit(conv.country == "US")
                               & home).then(pl.col("zip")))
              .to_series()
              .replace_strict(std.zip_county(), default=None, return_dtype=pl.String))
    county = p["county_fips"] if "county_fips" in p.columns else pl.Series(
        [None] * p.height, dtype=pl.String)
    phone = std.phones(p["phone"] if "phone" in p.columns else
                       pl.Series([None] * p.height, dtype=pl.String), conv.country)
    return p.with_columns(county.fill_null(by_zip).alias("county_fips"), phone["phone"],
                          phone["phone_raw"], phone["phone_status"])


class RowContract(Protocol):
    """The silver contracts (schemas/silver.py `contract`): an entity's Pandera schema;
    `row_level` before person records are deduplicated."""

    def __call__(self, entity: str, row_level: bool = ...) -> pa.DataFrameSchema: ...


def _validate(frame: pl.DataFrame, entity: str, failures: _Failures, source: str,
              problems: _FieldProblems, model: DataModel, contract: RowContract
              ) -> pl.DataFrame:
    """Validate against the row-level contract. A person record's nullable field that
    breaks a check is nulled (its status set: `out_of_range` for the date of birth,
    `invalid` otherwise) and counted; any other failure quarantines the row."""
    try:
        contract(entity, row_level=True).validate(frame.drop("_i"), lazy=True)
    except pandera.errors.SchemaErrors as exc:
        # failure_case holds the offending values: never keep or log it.
        cases = exc.failure_cases.drop("failure_case")
        whole = cases.filter(pl.col("index").is_null())
        if whole.height:
            raise ConformError(f"[{source}] silver.{entity} does not fit its contract as a "
                               f"whole: {whole.select('column', 'check').rows()}") from None
        fields = model.entities[entity].fields
        # In the order of (check, column), whichever rows fail: a row's failures read the
        # same whether it is conformed with all of its delivery or alone (`conform_source`
        # conforms only the rows it has not seen before).
        groups = sorted(cases.group_by(["check", "column"]),
                        key=lambda kv: tuple(str(k) for k in kv[0]))
        for (check, column), group in groups:
            positions = group["index"].cast(pl.UInt32).unique().sort()
            if entity == "person_record" and column in fields and fields[column].nullable:
                hit = frame["_i"].gather(positions)
                frame = _null_field(frame, column, positions)
                problems.add(hit, pl.Series([True] * hit.len()), check, column, "")
                continue
            rules = {r.name: r for r in model.entities[entity].rules}
            if check in rules and rules[check].requires_any:  # a record rule of the model
                column = ", ".join(rules[check].requires_any)
            elif column not in fields:
                column = entity
            rows = frame["_i"].gather(positions).unique()
            failures.add_rows(rows, check, column, f"{column} breaks {check}")
    return frame


def _null_field(frame: pl.DataFrame, column: str, positions: pl.Series) -> pl.DataFrame:
    hit = pl.int_range(pl.len(), dtype=pl.UInt32).is_in(positions.implode())
    out = [pl.when(hit).then(None).otherwise(pl.col(column)).alias(column)]
    status = f"{column}_status"
    if status in frame.columns:
        value = "out_of_range" if column == "dob" else "invalid"
        out.append(pl.when(hit).then(pl.lit(value)).otherwise(pl.col(status)).alias(status))
    return frame.with_columns(out)


# Rules across the entities of one bronze row: a person cannot be born after the row's
# enrollment started or its event happened. (rule, entity, date column, what it is)
ROW_RULES = [("dob_after_enrollment_start", "enrollment", "start_date",
              "the enrollment start_date"),
             ("dob_after_event_date", "service_event", "event_date", "the event_date")]


def _row_rules(frames: dict[str, pl.DataFrame], failures: _Failures) -> None:
    person = frames["person_record"].select("_i", "dob")
    for rule, entity, column, what in ROW_RULES:
        if entity not in frames:
            continue
        row = person.join(frames[entity].select("_i", column), on="_i")
        failures.add(row["_i"], row["dob"] > row[column], rule, "dob",
                     f"dob is after {what} of the same row")


def schema_drift(defn: SourceDefinition, bronze: pl.DataFrame,
                 missing_in_delivery: list[str] | tuple[str, ...] = (),
                 ) -> dict[str, list[str] | int]:
    """How the delivered columns differ from what the definition maps. A mapped column
    that is absent stops the conform; mapped columns that arrived empty are named, and new
    columns counted: an undeclared column's name is delivered text (it can be someone's
    name), so it never reaches a log or Dagster metadata."""
    delivered = [c for c in bronze.columns if not c.startswith("_")]
    mapped = {c for fields in defn.mapping.values() for fm in fields.values()
              for c in fm.source_columns} | {defn.record_id}
    missing = sorted((mapped - set(delivered)) | (mapped & set(missing_in_delivery)))
    if missing:
        raise ConformError(f"[{defn.source}] the delivered columns changed: mapped columns "
                           f"missing from bronze: {missing}")
    def blank(frame: pl.DataFrame) -> set[str]:
        if not frame.height:
            return set()
        kept = frame.select([pl.col(c).cast(pl.String).str.strip_chars().replace("", None)
                             .null_count().alias(c) for c in frame.columns]).row(0, named=True)
        return {c for c, nulls in kept.items() if nulls == frame.height}

    # A column with a value in its first rows is not empty: the rest is read only for the
    # columns whose first rows are all blank.
    blank_first = blank(bronze.select(sorted(mapped)).head(1000))
    empty = sorted(blank(bronze.select(sorted(blank_first))))
    return {"new_columns": len(set(delivered) - set(defn.columns)),
            "empty_mapped_columns": empty}


@dataclass
class _Rows:
    """What conform makes of each bronze row on its own, before the rows meet: each
    entity's row (fields, `_i` and provenance), the row's failures (it goes to quarantine)
    and the person record's field problems (a field nulled). A pure function of the row's
    delivered values and the code (`conform_source` replays it for rows seen before)."""
    frames: dict[str, pl.DataFrame]
    failures: pl.DataFrame      # FAILURE_SCHEMA, in the order found
    problems: pl.DataFrame      # PROBLEM_SCHEMA


def _conform_rows(df: pl.DataFrame, defn: SourceDefinition, wanted: list[str],
                  model: DataModel, contract: RowContract) -> _Rows:
    failures, problems = _Failures(), _FieldProblems()
    frames = {e: _entity(df, defn, e, model, failures, problems) for e in wanted}
    for entity in frames:
        frames[entity] = _validate(frames[entity], entity, failures, defn.source, problems,
                                   model, contract)
    _row_rules(frames, failures)
    return _Rows(frames, failures.frame(), problems.frame())


# The per-row results kept for the next delivery (`row_cache`): the row's key, then each
# entity's fields as "<entity>__<field>", the row's failures and problems as lists.
ROW_KEY = "_row_key"
FRESH_SHARE = 10     # list the rows conformed anew when they are at most 1/10 of them
# Rows conformed at a time: standardising and validating a batch needs several times its
# size in memory, and a row conforms alike in any batch (see `_validate`).
BATCH_ROWS = 500_000
SEP = "__"


def _as_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A delivered column as text: nested values (a source may allow them) as JSON, bytes
    in hexadecimal (they need not be UTF-8), anything else cast."""
    if dtype.is_nested():
        return pl.struct(pl.col(column)).struct.json_encode()
    if dtype == pl.Binary:
        return pl.col(column).bin.encode("hex")
    return pl.col(column).cast(pl.String)


def _delivered_json(df: pl.DataFrame, delivered: list[str]) -> pl.Expr:
    """A row's delivered values as JSON, as the quarantine keeps them (`_raw`)."""
    return pl.struct([_as_text(c, df.schema[c]) if df.schema[c] == pl.Binary
                      else pl.col(c) for c in delivered]).struct.json_encode()


def row_keys(df: pl.DataFrame, delivered: list[str]) -> pl.Series:
    """Each bronze row's key: BLAKE2b-128 of its delivered values as conform reads them
    (every column as text, since JSON writes NaN, inf and null alike as null), encoded as
    JSON with the columns named by position, keyed by a digest of the columns' names and
    types. Equal keys are rows conform reads alike."""
    # (As JSON: a delivered column's name is any text, "|" and ":" included.)
    types = json.dumps([[c, str(df.schema[c])] for c in delivered])
    key = hashlib.blake2b(types.encode(), digest_size=32).digest()
    encoded = df.select(pl.struct([_as_text(c, df.schema[c]).alias(str(n))
                                   for n, c in enumerate(delivered)])
                        .struct.json_encode().cast(pl.Binary)).to_series()
    return pl.Series(ROW_KEY, [hashlib.blake2b(r, digest_size=16, key=key).digest()
                               for r in encoded.to_list()], dtype=pl.Binary)


def _entity_schema(entity: str, model: DataModel) -> dict[str, Any]:
    return {n: DTYPES[f.type] for n, f in model.entities[entity].fields.items()}


def _replay(hit: pl.DataFrame, wanted: list[str], model: DataModel) -> _Rows:
    """The `_Rows` of rows seen before (`hit`: `_i`, provenance and the cached columns)."""
    hit = hit.sort("_i")
    frames = {e: hit.select(*[pl.col(f"{e}{SEP}{n}").cast(t).alias(n)
                              for n, t in _entity_schema(e, model).items()],
                            "_i", *PROVENANCE) for e in wanted}

    def listed(column: str, schema: dict[str, Any]) -> pl.DataFrame:
        out = (hit.select("_i", column).filter(pl.col(column).list.len() > 0)
               .explode(column).unnest(column))
        return out.select([pl.col(c).cast(t) for c, t in schema.items()])

    return _Rows(frames, listed("_failures", FAILURE_SCHEMA),
                 listed("_problems", PROBLEM_SCHEMA))


def _cacheable(rows: _Rows, keys: pl.DataFrame) -> pl.DataFrame:
    """`rows` as the row cache: one row per distinct key (`keys`: `_i`, ROW_KEY)."""
    parts = [keys]
    for entity, frame in rows.frames.items():
        fields = frame.select([pl.col(c).alias(f"{entity}{SEP}{c}") for c in frame.columns
                               if c != "_i" and c not in PROVENANCE])
        # Every entity's frame holds one row per bronze row, in the bronze order.
        assert frame["_i"].equals(keys["_i"]), entity
        parts.append(fields)
    out = pl.concat(parts, how="horizontal")

    for name, frame in (("_failures", rows.failures), ("_problems", rows.problems)):
        per_row = frame.group_by("_i", maintain_order=True).agg(
            pl.struct(pl.exclude("_i")).alias(name))
        empty = pl.lit([], dtype=per_row.schema[name])
        out = out.join(per_row, on="_i", how="left", maintain_order="left").with_columns(
            pl.col(name).fill_null(empty))
    return out.filter(pl.col(ROW_KEY).is_first_distinct()).drop("_i")


def _concat(parts: list[_Rows], wanted: list[str]) -> _Rows:
    if len(parts) == 1:
        return parts[0]
    frames = {e: pl.concat([p.frames[e] for p in parts]).sort("_i") for e in wanted}
    return _Rows(frames, pl.concat([p.failures for p in parts]).sort("_i", maintain_order=True),
                 pl.concat([p.problems for p in parts]).sort("_i", maintain_order=True))


def conform_source(defn: SourceDefinition, bronze: pl.DataFrame, contract: RowContract, *,
                   model: DataModel | None = None,
                   missing_in_delivery: list[str] | tuple[str, ...] = (),
                   seen: pl.DataFrame | None = None) -> ConformResult:
    """`contract`: the silver contracts each entity's rows are validated against.
    `missing_in_delivery`: declared columns a delivery read here did not have (from the
    ledger); a mapped one among them stops the source like a column missing from bronze.
    `seen`: the `row_cache` of an earlier conform of this source by the same code; a row
    whose delivered values it holds is not conformed again (its results are replayed with
    this delivery's provenance), so a snapshot that changed little costs little. The
    result equals conforming every row (tests/test_conform_incremental.py)."""
    model = model or load_model()
    drift = schema_drift(defn, bronze, missing_in_delivery)
    df = bronze.with_row_index("_i")
    delivered = [c for c in bronze.columns if not c.startswith("_")]
    keys = df.select("_i", row_keys(df, delivered))
    wanted = ["person_record", *[e for e in ROW_ENTITIES if e in defn.mapping]]
    parts = []
    novel = df
    if seen is not None and seen.height:
        known = keys.join(seen, on=ROW_KEY, how="inner").join(
            df.select("_i", *PROVENANCE), on="_i")
        if known.height:
            parts.append(_replay(known, wanted, model))
            novel = df.filter(~pl.col("_i").is_in(known["_i"].implode()))
    for start in range(0, novel.height, BATCH_ROWS):
        parts.append(_conform_rows(novel.slice(start, BATCH_ROWS), defn, wanted, model,
                                   contract))
    if not parts:
        parts.append(_conform_rows(novel, defn, wanted, model, contract))
    rows = _concat(parts, wanted)
    frames = rows.frames
    failures = _Failures()
    failures.frames.append(rows.failures)
    rows_of = row_entities(defn)
    if rows_of == ("person_record",):
        _duplicate_records(frames["person_record"], failures)
    fails = failures.frame()
    rejected = fails.group_by("_i").agg(
        pl.col("rule").unique(maintain_order=True).str.join("; ").alias("_rule"),
        pl.col("column").unique(maintain_order=True).str.join("; ").alias("_column"),
        pl.col("reason").unique(maintain_order=True).str.join("; ").alias("_reason"))
    bad = rejected["_i"]
    entities = {}
    for entity, frame in frames.items():
        # Which rows stay is decided on the few columns it depends on; the entity's rows
        # are then gathered once.
        keep = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_pos"), "_i",
                            "_row_number", "source", "source_record_id").filter(
            ~pl.col("_i").is_in(bad.implode()))
        if entity == "person_record":
            # A record delivered more than once: its first row, the rows in delivery order.
            keep = keep.sort("_row_number", maintain_order=True).unique(
                ["source", "source_record_id"], keep="first", maintain_order=True)
        entities[entity] = frame.drop("_i").select(pl.all().gather(keep["_pos"]))
    quarantine = rejected.join(
        df.select("_i", "_source", *PROVENANCE, _delivered_json(df, delivered)
                  .alias("_raw")).filter(pl.col("_i").is_in(bad.implode())),
        on="_i").drop("_i")
    counts = (fails.group_by(["rule", "column"]).agg(pl.col("_i").n_unique().alias("n")))
    problems = rows.problems.group_by(["rule", "column"]).len("n")
    kept = entities["person_record"]
    statuses = {c: dict(sorted(kept[c].value_counts().iter_rows()))
                for c in kept.columns if c.endswith("_status")}
    worst_invalid = {}
    for c in statuses:
        name = c.removesuffix("_status")
        if name in ("name", "address"):
            continue
        per_file = kept.filter(pl.col(c) != "missing").group_by("_file_sha256").agg(
            (~pl.col(c).is_in(sorted(USABLE))).mean().alias("rate"))
        if per_file.height:
            rate = per_file["rate"].max()
            assert isinstance(rate, (int, float))   # a mean over at least one row
            worst_invalid[name] = round(float(rate), 4)
    by_file = bronze.group_by("_file_sha256").len("n").join(
        quarantine.group_by("_file_sha256").len("q"), on="_file_sha256", how="left")
    worst_q = 0.0
    if by_file.height:
        q_rate = (by_file["q"].fill_null(0) / by_file["n"]).max()
        assert q_rate is None or isinstance(q_rate, (int, float))   # a Float64 column
        worst_q = float(q_rate or 0.0)
    return ConformResult(
        source=defn.source, bronze_rows=bronze.height, entities=entities,
        quarantine=quarantine,
        failures={f"{r}|{c}": n for r, c, n in counts.iter_rows()}, schema_drift=drift,
        row_entities=rows_of,
        field_problems=dict(sorted((f"{r}|{c}", n) for r, c, n in problems.iter_rows())),
        statuses=statuses, worst_invalid=worst_invalid,
        worst_quarantine_rate=round(worst_q, 4),
        row_cache=_cacheable(rows, keys), rows_replayed=bronze.height - novel.height,
        fresh=novel.select("_file_sha256", "_row_number")
        if novel.height * FRESH_SHARE <= df.height else None)


def _duplicate_records(person: pl.DataFrame, failures: _Failures) -> None:
    """A source of person records only delivers one row per record: a later row with the
    same record id is quarantined (the first is kept), so every row is accounted for."""
    later = person.sort("_row_number").select(
        "_i", pl.col("source_record_id").is_duplicated().alias("dup"),
        pl.col("source_record_id").is_first_distinct().alias("first"))
    failures.add(later["_i"], later["dup"] & ~later["first"], "duplicate_record_id",
                 "source_record_id", "an earlier row of the delivery has the same record id")
