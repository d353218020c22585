"""Reading Delta tables. Every read goes through here: delta-rs' default object-store
filesystem can abort the process at interpreter exit (delta-rs #2184), which a native
pyarrow filesystem avoids (a local one, or the object store's: storage.ObjectPath).
A table's location is a local path or an object-store URL (storage.py)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable

from ids_lakehouse.storage import LakePath, ObjectPath, lake_path

Location = LakePath | str


def exists(path: Location) -> bool:
    return (lake_path(path) / "_delta_log").is_dir()


def log_state(path: Location) -> tuple[int, int] | None:
    """(modification time, entries) of a table's log folder, None without one: it changes
    with every commit (a commit adds a file), so a service can tell a change by a stat
    instead of opening the table. On an object store, which has no folder times: (the
    newest commit's version, entries)."""
    log = lake_path(path) / "_delta_log"
    if isinstance(log, ObjectPath):
        names = [p.name for p in log.iterdir()]
        commits = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
        return (max(commits), len(names)) if commits else None
    try:
        return log.stat().st_mtime_ns, len(os.listdir(log))
    except FileNotFoundError:
        return None


def table(path: Location, version: int | None = None) -> DeltaTable:
    return DeltaTable(str(path), version=version)


def dataset(path: Location, version: int | None = None) -> pads.Dataset:
    where = lake_path(path)
    fs = (where.filesystem() if isinstance(where, ObjectPath) else
          pafs.SubTreeFileSystem(str(Path(where).resolve()), pafs.LocalFileSystem()))
    return table(path, version).to_pyarrow_dataset(filesystem=fs)


def read(path: Location, columns: list[str] | None = None,
         filter: pads.Expression | None = None, version: int | None = None) -> pa.Table:
    return dataset(path, version).to_table(columns=columns, filter=filter)


def frame(path: Location, columns: list[str] | None = None,
          filter: pads.Expression | None = None, version: int | None = None) -> pl.DataFrame:
    """`read`, as a polars DataFrame."""
    df = pl.from_arrow(read(path, columns=columns, filter=filter, version=version))
    assert isinstance(df, pl.DataFrame)     # an Arrow table converts to a DataFrame
    return df


def count(path: Location, filter: pads.Expression | None = None) -> int:
    if not exists(path):
        return 0
    rows: int = dataset(path).count_rows(filter=filter)
    return rows


def replace(path: Location, data: pa.Table, predicate: str) -> None:
    """Replace the rows matching `predicate` with `data`, in one commit; new columns are
    added to the table. (Never combine a predicate with schema_mode="overwrite": delta-rs
    accepts it and corrupts the table schema.)"""
    from deltalake import write_deltalake

    write_deltalake(str(path), data, mode="overwrite", predicate=predicate,
                    schema_mode="merge")


def overwrite(path: Location, data: pa.Table) -> None:
    """Replace the whole table (and its schema) with `data`, in one commit."""
    from deltalake import write_deltalake

    write_deltalake(str(path), data, mode="overwrite", schema_mode="overwrite")
