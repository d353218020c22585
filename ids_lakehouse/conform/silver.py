"""Reading a source's bronze rows for conform, and writing its silver rows and conform
quarantine, each replacing that source's earlier rows in one commit per table."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import polars as pl

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.conform.conform import ROW_ENTITIES, ConformResult
from ids_lakehouse.ingest.bronze import QUARANTINE_SCHEMA
from ids_lakehouse.sources import SourceDefinition

STAGE = "conform"


def bronze_to_conform(lake: Lake, defn: SourceDefinition) -> pl.DataFrame | None:
    """The rows to conform: the latest delivered file for snapshot sources, every file for
    incremental ones. None when the source has no bronze table yet."""
    path = lake.bronze(defn.source)
    if not delta.exists(path):
        return None
    if defn.delivery == "incremental":
        return pl.from_arrow(delta.read(path))
    files = pl.from_arrow(delta.read(path, columns=["_file_sha256", "_landed_at", "_file"]))
    if files.height == 0:
        return pl.from_arrow(delta.read(path))
    latest = files.unique().sort(["_landed_at", "_file"])["_file_sha256"][-1]
    return pl.from_arrow(delta.read(path, filter=pc.field("_file_sha256") == latest))


def write(lake: Lake, result: ConformResult, run_id: str) -> None:
    source = result.source
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


def reconcile(lake: Lake, source: str, bronze_rows: int) -> dict:
    """bronze rows conformed = row-level silver rows + quarantined rows, read back."""
    silver = sum(delta.count(lake.silver(e), pc.field("source") == source)
                 for e in ROW_ENTITIES)
    quarantined = delta.count(lake.quarantine(source),
                              (pc.field("_source") == source) & (pc.field("_stage") == STAGE))
    return {"bronze_rows": bronze_rows, "silver_rows": silver, "quarantined_rows": quarantined,
            "reconciles": bronze_rows == silver + quarantined}
