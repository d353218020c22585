"""LAKE_ROOT/internal/warehouse/warehouse.duckdb: read-only views over the gold tables, one
schema per purpose, for analysts and BI tools. Rebuilt beside the old file and swapped in
atomically, so no long-lived DuckDB write lock is ever shared between runs."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.marts.declaration import load_marts


def path(lake: Lake) -> Path:
    return lake.place("warehouse") / "warehouse.duckdb"


def build(lake: Lake) -> dict[str, int]:
    """(Re)create the views declared in data_model/marts.yaml over the current version of
    each gold table; returns rows per view. The identified contact directory has no view:
    it leaves the lake only through a gated release to the agreed people and fields."""
    target = path(lake)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".duckdb.building")
    tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    with duckdb.connect(str(tmp)) as con:
        for schema, views in load_marts().views().items():
            con.execute(f"CREATE SCHEMA {schema}")
            for view, table in views.items():
                gold = delta.table(lake.gold(table))
                files = gold.file_uris()
                if not files:
                    # An empty table (no source delivers what it is built from yet):
                    # read_parquet needs a file, so an empty table of its columns.
                    con.register("_empty", pa.schema(gold.schema().to_arrow()).empty_table())
                    con.execute(f"CREATE TABLE {schema}.{view} AS SELECT * FROM _empty")
                    con.unregister("_empty")
                else:
                    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                    con.execute(f"CREATE VIEW {schema}.{view} AS "
                                f"SELECT * FROM read_parquet([{listing}])")
                row = con.execute(f"SELECT count(*) FROM {schema}.{view}").fetchone()
                assert row is not None          # count(*) returns one row
                counts[f"{schema}.{view}"] = row[0]
    os.replace(tmp, target)
    return counts
