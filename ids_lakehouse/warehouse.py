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
false`).

For a lake on S3 the file is in the lake's local folder (config.local_state: a DuckDB
file needs a local disk), the root is the s3:// URL, and each session also loads the
httpfs extension (`duckdb-extension-httpfs`) and creates a temporary S3 secret from the
AWS_* environment variables (never stored in the file)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Literal

import duckdb

from ids_lakehouse import delta, locks
from ids_lakehouse.config import Lake
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.storage import LakePath, ObjectPath

ROOT_VARIABLE = "ids_lake_root"
OFFLINE = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
_UNSET = (f"the warehouse's views read the lake at the variable {ROOT_VARIABLE}: run "
          f"SET VARIABLE {ROOT_VARIABLE} = 'file:///path/to/lake' first "
          "(ids_lakehouse.warehouse.connect does it)")


class WarehouseError(RuntimeError):
    pass


def path(lake: Lake) -> Path:
    return lake.local("warehouse") / "warehouse.duckdb"


def extension(name: Literal["delta", "httpfs"] = "delta") -> Path:
    """A DuckDB extension (delta, httpfs) built for the running DuckDB, from its installed
    package `duckdb-extension-<name>`."""
    package = f"duckdb-extension-{name}"
    try:
        if name == "httpfs":
            import duckdb_extension_httpfs as module
        else:
            import duckdb_extension_delta as module
    except ImportError as error:
        raise WarehouseError(f"the warehouse needs DuckDB's {name} extension: install the "
                             f"package {package} (a dependency of ids-lakehouse)") from error
    assert module.__file__ is not None
    found = (Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}"
             / f"{name}.duckdb_extension")
    if not found.is_file():
        raise WarehouseError(f"{package} has no build for DuckDB {duckdb.__version__}: "
                             "install the version that matches it")
    return found


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def root_url(lake: Lake) -> str:
    """The lake's root as the views read it: a file URL (delta_scan decodes a path's "%"
    escapes, so a plain path with a "%" in it named other files), or the store's URL."""
    if isinstance(lake.root, ObjectPath):
        if not lake.root.url.startswith("s3://"):
            raise WarehouseError("the warehouse's views read a lake on S3 or on a local disk; "
                                 "LAKE_ROOT is another object store")
        return lake.root.url
    return lake.root.resolve().as_uri()


def _s3_secret(con: duckdb.DuckDBPyConnection) -> None:
    """A temporary S3 secret for this session, from the AWS_* environment (what delta-rs
    reads too). The statement holds the key: an error is re-raised without its text."""
    env = os.environ
    options = {"KEY_ID": env.get("AWS_ACCESS_KEY_ID"), "SECRET": env.get("AWS_SECRET_ACCESS_KEY"),
               "SESSION_TOKEN": env.get("AWS_SESSION_TOKEN"),
               "REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")}
    endpoint = env.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        options |= {"ENDPOINT": parts.netloc, "URL_STYLE": "path",
                    "USE_SSL": "true" if parts.scheme == "https" else "false"}
    body = ", ".join(f"{k} {v if k == 'USE_SSL' else _sql_text(v)}"
                     for k, v in options.items() if v)
    try:
        con.execute(f"CREATE TEMPORARY SECRET ids_lake (TYPE s3, {body})")
    except duckdb.Error:
        raise WarehouseError("the S3 secret for the warehouse's session could not be made "
                             "from the AWS_* environment variables") from None


def _open(database: Path, lake: Lake, read_only: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(database), read_only=read_only, config=dict(OFFLINE))
    try:
        if lake.remote:
            con.execute(f"LOAD {_sql_text(str(extension('httpfs')))}")
            _s3_secret(con)
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


def _relative(lake: Lake, table: LakePath) -> str:
    if isinstance(table, ObjectPath) and isinstance(lake.root, ObjectPath):
        return table.relative_to(lake.root).as_posix()
    assert isinstance(table, Path) and isinstance(lake.root, Path)
    return table.resolve().relative_to(lake.root.resolve()).as_posix()


def build(lake: Lake) -> dict[str, int]:
    """(Re)create the views declared in data_model/marts.yaml, each over the current
    version of its gold table; returns rows per view. The identified contact directory has
    no view: it leaves the lake only through a gated release to the agreed people and
    fields."""
    target = path(lake)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".duckdb.building")
    counts: dict[str, int] = {}
    # One build at a time (two shared the file being built: one failed, the other
    # installed a warehouse without views).
    with locks.exclusive(lake, "warehouse"):
        tmp.unlink(missing_ok=True)
        with _open(tmp, lake, read_only=False) as con:
            for schema, views in load_marts().views().items():
                con.execute(f"CREATE SCHEMA {schema}")
                for view, table in views.items():
                    table_path = lake.gold(table)
                    if not delta.exists(table_path):
                        raise WarehouseError(f"view {schema}.{view}: its gold table {table} "
                                             "has not been written")
                    relative = urllib.parse.quote(_relative(lake, table_path))
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
