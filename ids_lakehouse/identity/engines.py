"""The engine Splink runs linkage on: DuckDB in-process (the default) or Spark
(`IDS_LINKAGE_ENGINE=spark`), for populations past one machine.

Both run the same model. A model is written, saved and compared (`linkage.design`) in
DuckDB's SQL, whatever engine trained it: on Spark its conditions are translated
(`in_dialect`) when it is loaded and translated back (`canonical`) before it is saved, so a
model trained on either engine predicts on the other.

Spark settings (environment):

| variable                 | default        | meaning                                         |
|--------------------------|----------------|-------------------------------------------------|
| IDS_LINKAGE_ENGINE       | duckdb         | `duckdb` or `spark`                             |
| IDS_SPARK_MASTER         | local[*]       | where Spark runs: `local[n]`, `spark://host:port`,|
|                          |                | `yarn`, `k8s://...`                             |
| IDS_SPARK_DRIVER_MEMORY  | 4g             | the driver's heap (local mode: all of Spark's)  |
| IDS_SPARK_PARTITIONS     | this machine's | shuffle partitions: a cluster wants ~3 per core;|
|                          | cores          | locally more only add tasks (8 on 2 cores took  |
|                          |                | 2.3x as long to train as 1 on 800 records)      |

An active Spark session (spark-submit, Databricks, a notebook) is used as it is, with its
own settings. Two string distances run as Python functions on the executors
(identity.spark_functions), so they need this package installed (no jar: Splink's own
Spark functions give other values than DuckDB's, see identity.similarity). A session
started here listens on 127.0.0.1 only, has no web UI and keeps its shuffle and checkpoint
files (record comparisons: personal data) in the lake's spill directory, as DuckDB does;
it lives as long as the process (starting one takes seconds)."""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from splink.internals.database_api import DatabaseAPI
    from splink.internals.splink_dataframe import SplinkDataFrame

ENGINES = ("duckdb", "spark")
CANONICAL = "duckdb"          # the dialect models are saved in


class EngineError(ValueError):
    pass


def engine_name() -> str:
    raw = os.environ.get("IDS_LINKAGE_ENGINE", "duckdb")
    if raw.strip().lower() not in ENGINES:
        raise EngineError(f"IDS_LINKAGE_ENGINE={raw!r} is not a linkage engine: use one of "
                          f"{', '.join(ENGINES)}")
    return raw.strip().lower()


@contextmanager
def database(spill: Path, engine: str | None = None) -> Iterator[DatabaseAPI[Any]]:
    """A Splink database API on the engine, for one training or prediction, leaving
    nothing behind. DuckDB's is a new database limited to IDS_DUCKDB_MEMORY and spilling
    to a directory of this block's under `spill` (removed after it, or by the next block
    once its process has died), closed on leaving the block (Splink keeps references to
    it: otherwise the training database held its memory while predict's filled up).
    Spark's session outlives the block (starting one takes seconds); Splink's tables in it
    are dropped, and the parquet files it checkpoints them to (record comparisons:
    personal data), written to a directory of this block's under `spill`, are deleted."""
    engine = engine or engine_name()
    if engine == "spark":
        yield from _spark_database(spill)
        return
    import duckdb
    from splink import DuckDBAPI

    from ids_lakehouse.config import duckdb_config

    # A directory of this block's own: two DuckDB databases spilling to one directory
    # overwrite each other's files (both processes crashed, a segmentation fault or
    # "Invalid unicode detected in segment statistics update").
    for stale in spill.glob("duckdb_temp_*"):     # left at the top by earlier versions
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)
    mine, claim = _claim(_folder(spill, "duckdb"))
    try:
        duck = DuckDBAPI(duckdb.connect(config=dict(duckdb_config(mine))))
        try:
            yield duck
        finally:
            duck.duckdb_con.close()
    finally:
        _release(mine, claim)


def _spark_database(spill: Path) -> Iterator[DatabaseAPI[Any]]:
    from splink.backends.spark import SparkAPI

    spark = session(spill)
    mine, claim = _claim(_folder(spill, "spark", "checkpoints"))
    context = spark.sparkContext
    previous = context._jsc.sc().getCheckpointDir()
    before = {t.name for t in spark.catalog.listTables()}
    try:
        context.setCheckpointDir(str(mine))
        yield SparkAPI(  # type: ignore[no-untyped-call]
            spark_session=spark, break_lineage_method="parquet",
            register_udfs_automatically=False)
    finally:
        for table in spark.catalog.listTables():
            if table.isTemporary and table.name not in before:
                spark.catalog.dropTempView(table.name)
        # An active session's own checkpoint directory back, or none as it had (Spark has
        # no public way to unset it).
        getattr(context._jsc.sc(), "checkpointDir_$eq")(previous)
        _release(mine, claim)


def _folder(spill: Path, *parts: str) -> Path:
    """`spill`/`parts`, created; a link or a file on the way is refused (the directories
    under it are removed when their owner is gone: a link would take that elsewhere)."""
    folder = spill
    for part in parts:
        folder = folder / part
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise EngineError(f"{folder} is a link or a file, not the linkage engine's "
                              "spill directory: remove it")
        folder.mkdir(exist_ok=True, parents=True)
    return folder


def _claim(folder: Path) -> tuple[Path, int]:
    """A new directory under `folder` for this process, and the descriptor holding its
    lock (`<directory>.lock`, locked before the directory exists): while it is open no
    other process removes the directory, whatever its process id means there (another
    container's processes share the lake, not the process ids)."""
    _remove_dead(folder)
    while True:
        mine = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        lock = f"{mine}.lock"
        claim = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(claim, fcntl.LOCK_EX)
        # Between creating the lock file and locking it, another process's cleanup may
        # have found it free, with no directory, and removed it: then try another name.
        try:
            if os.path.samestat(os.stat(lock, follow_symlinks=False), os.fstat(claim)):
                mine.mkdir()
                return mine, claim
        except FileNotFoundError:
            pass
        os.close(claim)


def _release(mine: Path, claim: int) -> None:
    shutil.rmtree(mine, ignore_errors=True)
    Path(f"{mine}.lock").unlink(missing_ok=True)
    os.close(claim)


def _remove_dead(folder: Path) -> None:
    """Directories left by processes that died mid-run (kill -9, out of memory):
    checkpoints, shuffle and spill files (record comparisons), removed once their lock is
    free. (Directories without a lock, from earlier versions, are named after their
    process: removed when no process has that id here.)"""
    for child in sorted(folder.iterdir()) if folder.is_dir() else ():
        if child.is_symlink():
            continue
        if child.suffix == ".lock":
            if not child.with_suffix("").exists():
                _remove_if_free(child, None)       # its directory is gone already
            continue
        if not child.is_dir():
            continue
        lock = Path(f"{child}.lock")
        if os.path.lexists(lock):
            _remove_if_free(lock, child)
            continue
        pid = child.name.split("-", 1)[0]
        if pid.isascii() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(child, ignore_errors=True)


def _remove_if_free(lock: Path, directory: Path | None) -> None:
    """Remove `directory` and its lock when no process holds the lock. A lock that is not
    a regular file, or that this process may not open (another user's), is left alone."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:                     # gone meanwhile, another user's, a link, a device
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:         # in use
            return
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:     # another user's process
        return True
    return True


def register(db: DatabaseAPI[Any], frame: pl.DataFrame, name: str) -> SplinkDataFrame:
    """A polars frame as a table of the engine (Arrow for both: Spark 4 reads it). On Spark
    the view's name is unique: a session the user started may hold a view of that name."""
    from splink.internals.duckdb.database_api import DuckDBAPI

    unique = None if isinstance(db, DuckDBAPI) else f"ids_{name}_{uuid.uuid4().hex[:12]}"
    return db.register(frame.to_arrow(), dataset_display_name=name, table_name=unique)


def to_polars(table: SplinkDataFrame, columns: list[str] | None = None) -> pl.DataFrame:
    """A table Splink made, read back (only `columns` when given)."""
    from splink.internals.duckdb.dataframe import DuckDBDataFrame

    if isinstance(table, DuckDBDataFrame):
        relation = table.as_duckdbpyrelation()
        return (relation.select(", ".join(columns)) if columns else relation).pl()
    frame = table.as_spark_dataframe()
    out = pl.from_arrow(frame.select(*columns).toArrow() if columns else frame.toArrow())
    assert isinstance(out, pl.DataFrame)
    return out


_REGISTERED: set[tuple[str, int]] = set()     # (application, session) with our functions
# The session started here and what it was started with (the spill directory: its shuffle
# files go there, and the IDS_SPARK_* settings): another lake or other settings start a
# new one (Spark fixes both when it starts).
_OWN: tuple[SparkSession, tuple[str, ...]] | None = None
# The shuffle directory of the session started here, and the descriptor holding its lock.
_LOCAL: tuple[Path, int] | None = None


def _settings(spill: Path) -> tuple[str, ...]:
    return (str(spill.resolve()), os.environ.get("IDS_SPARK_MASTER", "local[*]"),
            os.environ.get("IDS_SPARK_DRIVER_MEMORY", "4g"),
            os.environ.get("IDS_SPARK_PARTITIONS", str(os.cpu_count() or 2)))


def session(spill: Path) -> SparkSession:
    """The active Spark session, or one started here for `spill` (see the module's
    settings), with the model's string functions registered."""
    global _OWN
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    ours = _OWN is not None and spark is not None and \
        spark._jsparkSession.equals(_OWN[0]._jsparkSession)
    if spark is None or ours:
        settings = _settings(spill)
        if spark is not None and _OWN is not None and \
                (_OWN[1] != settings or _LOCAL is None or not _LOCAL[0].is_dir()):
            spark.stop()            # another lake, other settings, or its spill was deleted
            spark = None
        if spark is None:
            spark = _start(spill, settings)
            _OWN = (spark, settings)
    key = (spark.sparkContext.applicationId, id(spark._jsparkSession))
    if key not in _REGISTERED:
        _register_functions(spark)
        _REGISTERED.add(key)
    return spark


def _start(spill: Path, settings: tuple[str, ...]) -> SparkSession:
    """A session whose shuffle files go to a directory of its own under `spill` (the one
    of a session this process stopped is removed)."""
    global _LOCAL
    from pyspark.sql import SparkSession

    _, master, memory, partitions = settings
    work = spill / "spark"
    if _LOCAL is not None:
        _release(*_LOCAL)
    _LOCAL = _claim(_folder(spill, "spark", "local"))
    # The Python the workers run the model's string functions in: this one, whose
    # environment has them (PySpark reads it from the driver's environment).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.appName("ids-lakehouse-linkage")
             .master(master)
             .config("spark.driver.memory", memory)
             .config("spark.sql.shuffle.partitions", partitions)
             .config("spark.default.parallelism", partitions)
             .config("spark.local.dir", str(_LOCAL[0]))
             .config("spark.sql.warehouse.dir", str(work / "warehouse"))
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# The model is defined by DuckDB's SQL; Spark's differs in four ways, each undone here.
# DuckDB's string distances compare UTF-8 bytes, Spark's characters: on characters a
# tester's МАРИНА / МАРИЯ fell a level. Jaro-Winkler and Damerau-Levenshtein are DuckDB's
# own (identity.similarity, as Spark functions: Splink's, from Apache Commons Text, give
# other values); for Spark's levenshtein the UTF-8 bytes are decoded as ISO-8859-1, one
# character per byte.
SPARK_FUNCTIONS = {"jaro_winkler_similarity": "ids_jaro_winkler",
                   "damerau_levenshtein": "ids_damerau_levenshtein"}


def _as_bytes(node: Any) -> Any:
    from sqlglot import exp

    encoded = exp.Anonymous(this="encode", expressions=[node, exp.Literal.string("UTF-8")])
    return exp.Anonymous(this="decode", expressions=[encoded, exp.Literal.string("ISO-8859-1")])


def _to_spark(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.JarowinklerSimilarity):
        return exp.Anonymous(this=SPARK_FUNCTIONS["jaro_winkler_similarity"],
                             expressions=[node.this, node.expression])
    if isinstance(node, exp.Anonymous) and node.name.lower() == "damerau_levenshtein":
        _check_within_one(node)
        return exp.Anonymous(this=SPARK_FUNCTIONS["damerau_levenshtein"],
                             expressions=list(node.expressions))
    if isinstance(node, exp.Anonymous) and node.name.lower() == "strlen":
        return exp.Anonymous(this="OCTET_LENGTH", expressions=list(node.expressions))
    if isinstance(node, exp.Levenshtein):
        return exp.Levenshtein(this=_as_bytes(node.this), expression=_as_bytes(node.expression))
    if isinstance(node, exp.RegexpFullMatch):
        # RE2's full match is Java's between \A and \z (Java's $ also matches before a
        # final line break: an SSN ending in a newline passed for digits).
        pattern = exp.Literal.string(f"\\A(?:{node.expression.name})\\z")
        return exp.RegexpLike(this=node.this, expression=pattern)
    if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
        # Spark 4's ANSI mode fails a whole query on one value that does not cast.
        return exp.TryCast(this=node.this, to=node.to, safe=True)
    return node


def _check_within_one(node: Any) -> None:
    """Spark's damerau_levenshtein tells 0, 1 and more (identity.similarity): the model may
    only compare it with 0 or 1."""
    from sqlglot import exp

    parent = node.parent
    bound = parent.expression if isinstance(parent, exp.LTE | exp.EQ | exp.LT) \
        and parent.this is node else None
    if not (isinstance(bound, exp.Literal) and bound.is_int
            and int(bound.name) <= (2 if isinstance(parent, exp.LT) else 1)):
        raise EngineError(f"the model compares damerau_levenshtein otherwise than with 0 or 1 "
                          f"({parent.sql('duckdb')}): the Spark engine tells only 0, 1 and "
                          "more edits apart (identity.similarity)")


def _register_functions(spark: SparkSession) -> None:
    from pyspark.sql.functions import pandas_udf

    from ids_lakehouse.identity import spark_functions

    spark.udf.register(SPARK_FUNCTIONS["jaro_winkler_similarity"],
                       pandas_udf(spark_functions.jaro_winkler, "double"))  # type: ignore[call-overload]
    spark.udf.register(SPARK_FUNCTIONS["damerau_levenshtein"],
                       pandas_udf(spark_functions.damerau_levenshtein,  # type: ignore[call-overload]
                                  "long"))


def spark_sql(condition: str) -> str:
    """One of the model's conditions (DuckDB's SQL) in Spark's."""
    import sqlglot

    if condition.strip().upper() == "ELSE":
        return condition
    return str(sqlglot.parse_one(condition, read="duckdb").transform(_to_spark).sql("spark"))


def in_dialect(model: dict[str, Any], engine: str) -> dict[str, Any]:
    """A saved model (canonical: DuckDB's SQL), ready for the engine's Linker."""
    if engine == CANONICAL:
        return model
    out = copy.deepcopy(model)
    out["sql_dialect"] = engine
    for comparison in out["comparisons"]:
        for level in comparison["comparison_levels"]:
            level["sql_condition"] = spark_sql(level["sql_condition"])
    for rule in out["blocking_rules_to_generate_predictions"]:
        rule["blocking_rule"] = spark_sql(rule["blocking_rule"])
        rule["sql_dialect"] = engine
    return out


def canonical(trained: dict[str, Any], design: dict[str, Any]) -> dict[str, Any]:
    """A model trained on another engine, saved as if trained on DuckDB: the estimates
    from `trained`, every condition from `design` (the same model in DuckDB's SQL)."""
    out = copy.deepcopy(trained)
    out["sql_dialect"] = design["sql_dialect"]
    out["blocking_rules_to_generate_predictions"] = copy.deepcopy(
        design["blocking_rules_to_generate_predictions"])
    for comparison, reference in zip(out["comparisons"], design["comparisons"], strict=True):
        for level, ref in zip(comparison["comparison_levels"], reference["comparison_levels"],
                              strict=True):
            level["sql_condition"] = ref["sql_condition"]
    return out
