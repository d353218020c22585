"""The warehouse's views read each gold table's current Delta version, through DuckDB's delta
extension loaded from its installed package: a new mart version shows without a rebuild,
and vacuuming, compacting or moving the lake leaves every view answering."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ids_lakehouse import delta, warehouse
from ids_lakehouse.config import Lake
from ids_lakehouse.marts.declaration import load_marts


def _mart(rows: list[int]) -> pa.Table:
    return pa.table({"n": pa.array(rows, pa.int64()),
                     "label": pa.array([f"row {r}" for r in rows], pa.string())})


def _lake(root) -> Lake:
    """A lake with every gold table a view reads: three rows each, written in two commits
    (so a vacuum has a file to remove)."""
    lake = Lake(root)
    for views in load_marts().views().values():
        for table in views.values():
            write_deltalake(str(lake.gold(table)), _mart([1]), mode="overwrite")
            write_deltalake(str(lake.gold(table)), _mart([1, 2, 3]), mode="overwrite")
    return lake


@pytest.fixture()
def lake(tmp_path) -> Lake:
    return _lake(tmp_path / "lake")


def _views() -> list[tuple[str, str, str]]:
    return [(schema, view, table) for schema, views in load_marts().views().items()
            for view, table in views.items()]


def test_views_read_the_current_version_and_survive_vacuum_and_compaction(lake):
    counts = warehouse.build(lake)
    assert counts == {f"{s}.{v}": 3 for s, v, _ in _views()}
    schema, view, table = _views()[0]
    # A new version of the mart: the view shows it, no rebuild.
    delta.overwrite(lake.gold(table), _mart([7, 8]))
    with warehouse.connect(lake) as con:
        assert con.execute(f"SELECT n FROM {schema}.{view} ORDER BY n").fetchall() == \
            [(7,), (8,)]
    # Compacted, then every older file vacuumed away.
    for _, _, name in _views():
        gold = DeltaTable(str(lake.gold(name)))
        gold.optimize.compact()
        gold.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with warehouse.connect(lake) as con:
        for s, v, name in _views():
            assert con.execute(f"SELECT count(*) FROM {s}.{v}").fetchone() == \
                (delta.count(lake.gold(name)),)


def test_a_moved_lake_reads_its_own_tables_never_the_old_location(lake, tmp_path):
    warehouse.build(lake)
    moved = Lake(tmp_path / "elsewhere")
    shutil.copytree(lake.root, moved.root)
    schema, view, table = _views()[0]
    delta.overwrite(moved.gold(table), _mart([42]))      # the copy differs from the original
    with warehouse.connect(moved) as con:
        assert con.execute(f"SELECT n FROM {schema}.{view}").fetchall() == [(42,)]
    shutil.rmtree(lake.root)
    with warehouse.connect(moved) as con:
        for s, v, _ in _views():
            con.execute(f"SELECT count(*) FROM {s}.{v}").fetchone()


def test_a_session_without_the_lake_root_gets_a_clear_error_and_nothing_downloads(lake):
    warehouse.build(lake)
    schema, view, _ = _views()[0]
    with duckdb.connect(str(warehouse.path(lake)), read_only=True,
                        config=dict(warehouse.OFFLINE)) as con:
        with pytest.raises(duckdb.CatalogException, match="delta"):
            con.execute(f"SELECT * FROM {schema}.{view}")      # not loaded: not fetched
        con.execute(f"LOAD '{warehouse.extension()}'")
        with pytest.raises(duckdb.InvalidInputException,
                           match="SET VARIABLE ids_lake_root"):
            con.execute(f"SELECT * FROM {schema}.{view}")
    with warehouse.connect(lake) as con:
        assert con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                           "current_setting('autoload_known_extensions')").fetchone() == \
            (False, False)


def test_a_missing_gold_table_is_named(lake):
    _, view, table = _views()[0]
    shutil.rmtree(lake.gold(table))
    with pytest.raises(warehouse.WarehouseError, match=f"{view}: its gold table {table}"):
        warehouse.build(lake)
    assert not warehouse.path(lake).exists()


# (A valid escape such as %41 cannot be tested: deltalake itself decodes it when writing.)
@pytest.mark.parametrize("name", ["lake%v2", "my lake", "lake's", "lac-été"])
def test_a_lake_path_with_url_characters_reads_its_own_files(tmp_path, name):
    """delta_scan decodes "%" escapes in a plain path (a tester's lake%v2 read files of
    another name): the views read the lake as a file URL."""
    lake = _lake(tmp_path / name)
    assert warehouse.build(lake) == {f"{s}.{v}": 3 for s, v, _ in _views()}
    with warehouse.connect(lake) as con:
        for s, v, _ in _views():
            assert con.execute(f"SELECT sum(n) FROM {s}.{v}").fetchone() == (6,)


def _build(root: str, outcome) -> None:
    try:
        outcome.put(sorted(warehouse.build(Lake(Path(root)))))
    except Exception as error:      # reported to the test
        outcome.put(repr(error))


def test_concurrent_builds_take_turns(lake):
    """Two builds shared the file being built: one failed, the other installed a
    warehouse with no views. They take turns: both succeed, every view is there."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    outcome = context.Queue()
    builds = [context.Process(target=_build, args=(str(lake.root), outcome))
              for _ in range(3)]
    for b in builds:
        b.start()
    results = [outcome.get(timeout=120) for _ in builds]
    for b in builds:
        b.join(60)
    expected = sorted(f"{s}.{v}" for s, v, _ in _views())
    assert results == [expected] * 3
    with warehouse.connect(lake) as con:
        for s, v, _ in _views():
            con.execute(f"SELECT count(*) FROM {s}.{v}").fetchone()


@pytest.mark.parametrize("name", ["lake%41", "a%2fb", "%2e%2e", "a\\b"])
def test_a_lake_root_delta_would_read_as_another_path_is_refused(tmp_path, monkeypatch, name):
    """Delta's object store (and the delta extension) decode "%41" as "A" and "%2e%2e" as
    "..": a lake there would read and write other directories. LAKE_ROOT says so."""
    from ids_lakehouse import config

    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / name))
    with pytest.raises(ValueError, match="percent escape"):
        config.lake_root()
