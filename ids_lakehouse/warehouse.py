"""LAKE_ROOT/internal/warehouse/warehouse.duckdb: read-only views over the gold tables, one
schema per purpose, for analysts and BI tools. Rebuilt beside the old file and swapped in
atomically, so no long-lived DuckDB write lock is ever shared between runs.

Each view reads its Delta table's current version through DuckDB's delta extension
(`delta_scan`), at a path relative to the lake: a new version of a mart shows at once,
and vacuuming, compacting or moving the lake does not break a view. The session says
where the lake is, as a URL (`SET VARIABLE ids_lake_root = 'file:///path/to/lake'`) and
loads the extension from its installed package (`duckdb-extension-delta`), never from the
network: `connect` does both, with DuckDB's automatic install and load of extensions
off (another client should turn them off too: `SET autoinstall_known_extensions =
false`)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import duckdb

from ids_lakehouse import delta, locks
from ids_lakehouse.config import Lake
from ids_lakehouse.marts.declaration import load_marts

ROOT_VARIABLE = "ids_lake_root"
OFFLINE = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
_UNSET = (f"the warehouse's views read the lake at the variable {ROOT_VARIABLE}: run "
          f"SET VARIABLE {ROOT_VARIABLE} = 'file:///path/to/lake' first "
          "(ids_lakehouse.warehouse.connect does it)")


class WarehouseError(RuntimeError):
    pass


def path(lake: Lake) -> Path:
    return lake.place("warehouse") / "warehouse.duckdb"


def extension() -> Path:
    """The delta extension built for the running DuckDB, from its installed package."""
    try:
        import duckdb_extension_delta
    except ImportError as error:
        raise WarehouseError("the warehouse needs DuckDB's delta extension: install the "
                             "package duckdb-extension-delta (a dependency of "
                             "ids-lakehouse)") from error
    found = (Path(duckdb_extension_delta.__file__).parent / "extensions" / f"v{duckdb.__version__}"
             / "delta.duckdb_extension")
    if not found.is_file():
        raise WarehouseError(f"duckdb-extension-delta has no build for DuckDB "
                             f"{duckdb.__version__}: install the version that matches it")
    return found


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def root_url(lake: Lake) -> str:
    """The lake's root as the views read it: a file URL (delta_scan decodes a path's "%"
    escapes, so a plain path with a "%" in it named other files)."""
    return Path(lake.root).resolve().as_uri()


def _open(database: Path, lake: Lake, read_only: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(database), read_only=read_only, config=dict(OFFLINE))
    try:
        con.execute(f"LOAD {_sql_text(str(extension()))}")
        con.execute(f"SET VARIABLE {ROOT_VARIABLE} = {_sql_text(root_url(lake))}")
    except BaseException:
        con.close()
        raise
    return con


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """The warehouse, read-only, ready to query: the extension loaded and the lake's root
    set for its views."""
    return _open(path(lake), lake, read_only=True)


def build(lake: Lake) -> dict[str, int]:
    """(Re)create the views declared in data_model/marts.yaml, each over the current
    version of its gold table; returns rows per view. The identified contact directory has
    no view: it leaves the lake only through a gated release to the agreed people and
    fields."""
    target = path(lake)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".duckdb.building")
    root = Path(lake.root).resolve()
    counts: dict[str, int] = {}
    # One build at a time (two shared the file being built: one failed, the other
    # installed a warehouse without views).
    with locks.exclusive(lake, "warehouse"):
        tmp.unlink(missing_ok=True)
        with _open(tmp, lake, read_only=False) as con:
            for schema, views in load_marts().views().items():
                con.execute(f"CREATE SCHEMA {schema}")
                for view, table in views.items():
                    table_path = Path(lake.gold(table)).resolve()
                    if not delta.exists(table_path):
                        raise WarehouseError(f"view {schema}.{view}: its gold table {table} "
                                             "has not been written")
                    relative = urllib.parse.quote(table_path.relative_to(root).as_posix())
                    where = (f"coalesce(getvariable({_sql_text(ROOT_VARIABLE)}), "
                             f"error({_sql_text(_UNSET)})::VARCHAR) || "
                             f"{_sql_text('/' + relative)}")
                    con.execute(f"CREATE VIEW {schema}.{view} AS "
                                f"SELECT * FROM delta_scan({where})")
                    row = con.execute(f"SELECT count(*) FROM {schema}.{view}").fetchone()
                    assert row is not None          # count(*) returns one row
                    counts[f"{schema}.{view}"] = row[0]
        os.replace(tmp, target)
    return counts
