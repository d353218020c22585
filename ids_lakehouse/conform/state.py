"""Conform's state and its reads and writes: a source's bronze rows to conform, and its
silver rows and conform quarantine, each replacing that source's earlier rows in one commit
per table.

Conform is incremental per source: `silver/_conformed` records, for every source whose
silver rows passed all of conform's checks, the input signature they were built from (the
accepted deliveries it read, the data-model declarations, the conform code and the
parsing libraries' versions). A source whose signature is unchanged is not conformed again:
its silver rows would come out identical. A source is recorded only after its checks pass,
so a source that failed a check is conformed (and checked) again on every run."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ids_lakehouse import delta, storage
from ids_lakehouse.config import Lake
from ids_lakehouse.conform.mapping import ConformResult, RowContract, row_entities
from ids_lakehouse.ingest import delivery
from ids_lakehouse.ingest.bronze import QUARANTINE_SCHEMA
from ids_lakehouse.sources import SourceDefinition

STAGE = "conform"
STATE = "_conformed"
ROWS = "_conform_rows"   # what conform made of each distinct bronze row (mapping.row_cache)
STATE_SCHEMA = pa.schema([("source", pa.string()), ("signature", pa.string()),
                          ("bronze_rows", pa.int64()),
                          ("quarantined_rows", pa.int64()), ("run_id", pa.string()),
                          ("conformed_at", pa.timestamp("us", tz="UTC")),
                          ("invalid_rates", pa.string()),   # JSON: field -> share
                          # JSON {file sha256: [row numbers]}: the rows conformed anew when
                          # the others were replayed (null: every row was conformed)
                          ("fresh_rows", pa.string())])
# Libraries whose upgrade can change what conform produces (parsing and reference data).
PARSERS = ("polars", "pandera", "phonenumbers", "usaddress", "nameparser", "zipcodes")


@lru_cache(maxsize=4)
def code_digest(contracts: Path) -> str:
    """SHA-256 over what decides how bronze becomes silver, other than the bronze rows:
    the data-model declarations (model, code lists, source mappings) and the code that
    loads them, the conform code, the silver contracts (the module `contracts`) and the
    parsing libraries' versions."""
    from ids_lakehouse import model, sources

    h = hashlib.sha256()
    declarations = Path(str(resources.files("data_model")))
    code = Path(__file__).parent
    files = [*sorted(declarations.glob("model.yaml")), *sorted(declarations.glob("code_lists/*")),
             *sorted(sources.sources_dir().glob("*.yaml")), *sorted(code.glob("*.py")),
             contracts, Path(model.__file__),
             Path(sources.__file__)]
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for lib in PARSERS:
        h.update(f"{lib}={metadata.version(lib)}".encode())
    return h.hexdigest()


def deliveries_to_conform(lake: Lake, defn: SourceDefinition) -> list[str]:
    """The file versions (SHA-256) whose rows conform reads: the latest accepted delivery
    of a snapshot source, every accepted delivery of an incremental one. A delivery that
    is not accepted (rejected, or its ingest died) is never read."""
    shas: list[str] = delivery.accepted(lake, defn.source)["file_sha256"].to_pylist()
    if defn.delivery == "incremental":
        return shas
    return shas[-1:]


def missing_columns(lake: Lake, shas: list[str]) -> list[str]:
    """Declared columns absent from any of these deliveries, as ingest recorded them (a
    later file without a column earlier files had reads as nulls from bronze)."""
    rows = delivery.ledger(lake).to_pylist()
    out: set[str] = set()
    for r in rows:
        if r["file_sha256"] in shas and r.get("missing_columns"):
            out |= set(json.loads(r["missing_columns"]))
    return sorted(out)


def code_of(contract: RowContract) -> str:
    """`code_digest` of the code conforming with these contracts."""
    module = sys.modules[contract.__module__].__file__
    assert module is not None
    return code_digest(Path(module))


def signature(shas: list[str], contract: RowContract) -> str:
    """The input signature of a source's conform: the deliveries it reads and the code."""
    return hashlib.sha256(",".join(shas).encode()).hexdigest()[:16] + ":" + code_of(contract)


def rows_seen(lake: Lake, source: str, code: str) -> pl.DataFrame | None:
    """What the same code made of the source's bronze rows when it last conformed them
    (`conform_source`'s `seen`); None when there is nothing to reuse."""
    path = lake.table("silver", ROWS)
    if not delta.exists(path):
        return None
    try:
        seen = delta.frame(path, filter=(pc.field("source") == source)
                           & (pc.field("_code") == code))
    except Exception as exc:    # a derived table: damaged, every row is conformed again
        raise CacheUnreadable(f"{path}: {type(exc).__name__}") from None
    return seen.drop("source", "_code") if seen.height else None


class CacheUnreadable(RuntimeError):
    """The row cache cannot be read (a file lost or damaged): conform every row; `write`
    replaces the cache whole."""


def conformed(lake: Lake) -> dict[str, dict[str, Any]]:
    """Per source, the state its current silver rows were conformed from (and passed)."""
    path = lake.table("silver", STATE)
    if not delta.exists(path):
        return {}
    rows = delta.read(path).to_pylist()
    return {r["source"]: r | {"invalid_rates": json.loads(r.get("invalid_rates") or "{}"),
                              "fresh_rows": json.loads(r["fresh_rows"])
                              if r.get("fresh_rows") else None}
            for r in rows}


def record_conformed(lake: Lake, result: ConformResult, sig: str, run_id: str) -> None:
    row = {"source": result.source, "signature": sig,
           "bronze_rows": result.bronze_rows, "quarantined_rows": result.quarantine.height,
           "run_id": run_id, "conformed_at": dt.datetime.now(dt.timezone.utc),
           "invalid_rates": json.dumps(result.invalid_rates(), sort_keys=True),
           "fresh_rows": None if result.fresh is None else json.dumps(
               {sha: sorted(rows) for sha, rows in result.fresh.group_by("_file_sha256").agg(
                   pl.col("_row_number")).iter_rows()}, sort_keys=True)}
    delta.replace(lake.table("silver", STATE), pa.Table.from_pylist([row], schema=STATE_SCHEMA),
                  f"source = '{result.source}'")


def forget_conformed(lake: Lake, source: str) -> None:
    """The source's silver rows failed a check: the next run must conform it again."""
    path = lake.table("silver", STATE)
    if delta.exists(path):
        delta.table(path).delete(f"source = '{source}'")


def bronze_to_conform(lake: Lake, defn: SourceDefinition,
                      shas: list[str] | None = None) -> pl.DataFrame | None:
    """The bronze rows of the deliveries conform reads; None when there is none."""
    shas = deliveries_to_conform(lake, defn) if shas is None else shas
    if not shas:
        return None
    return delta.frame(lake.bronze(defn.source), filter=pc.field("_file_sha256").isin(shas))


ABSENT = -1   # the "version" of a silver table no source has delivered rows for yet


def read(lake: Lake, entity: str, version: int | None = None) -> pl.DataFrame:
    """A silver entity's rows (at `version`); none, with the model's columns, when no
    source delivers the entity (e.g. every source sends person records only)."""
    path = lake.silver(entity)
    if version == ABSENT or (version is None and not delta.exists(path)):
        from ids_lakehouse.model import DTYPES, load_model

        fields = load_model().entities[entity].fields
        return pl.DataFrame(schema={n: DTYPES[f.type] for n, f in fields.items()}
                            | {"_file": pl.String, "_file_sha256": pl.String,
                               "_row_number": pl.Int64})
    return delta.frame(path, version=version)


def version(lake: Lake, entity: str) -> int:
    path = lake.silver(entity)
    return delta.table(path).version() if delta.exists(path) else ABSENT


def write(lake: Lake, result: ConformResult, run_id: str, code: str | None = None) -> None:
    """The source's silver rows and conform quarantine, and (with `code`, the
    `code_of` that conformed them) the row cache the next conform of it replays."""
    source = result.source
    # The cache first: what it holds is a function of rows and code alone, right whether
    # or not the silver rows below are written.
    if code is not None and result.row_cache is not None:
        cache = result.row_cache.with_columns(pl.lit(source).alias("source"),
                                              pl.lit(code).alias("_code"))
        path = lake.table("silver", ROWS)
        try:
            delta.replace(path, cache.to_arrow(), f"source = '{source}'")
        except Exception:
            # Damaged (a file lost): it is derived, so it starts again with this source;
            # the others' rows are conformed anew on their next delivery.
            storage.rmtree(path)
            delta.replace(path, cache.to_arrow(), f"source = '{source}'")
    for entity, frame in result.entities.items():
        delta.replace(lake.silver(entity), frame.to_arrow(), f"source = '{source}'")
    now = dt.datetime.now(dt.timezone.utc)
    q = result.quarantine.with_columns(
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(run_id).alias("_run_id"), pl.lit(STAGE).alias("_stage"))
    table = pa.Table.from_pylist(q.to_dicts(), schema=QUARANTINE_SCHEMA) if q.height else \
        QUARANTINE_SCHEMA.empty_table()
    path = lake.quarantine(source)
    if table.num_rows or delta.exists(path):
        delta.replace(path, table, f"_source = '{source}' AND _stage = '{STAGE}'")


def reconcile(lake: Lake, defn: SourceDefinition, bronze_rows: int) -> dict[str, int | bool]:
    """bronze rows conformed = row-level silver rows + quarantined rows, read back (the
    row-level entities are the source's enrollments and events, or its person records
    when it delivers nothing else)."""
    source = defn.source
    silver = sum(delta.count(lake.silver(e), pc.field("source") == source)
                 for e in row_entities(defn))
    quarantined = delta.count(lake.quarantine(source),
                              (pc.field("_source") == source) & (pc.field("_stage") == STAGE))
    return {"bronze_rows": bronze_rows, "silver_rows": silver, "quarantined_rows": quarantined,
            "reconciles": bronze_rows == silver + quarantined}
