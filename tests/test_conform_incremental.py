"""Conform replays what it made of a bronze row it has seen before (the row cache) instead
of conforming it again. The result must equal conforming every row: here on every source
of the tiny population, with rows changed, removed, added, duplicated, reordered and
broken between two deliveries; and through the conform step on a real lake."""

from __future__ import annotations

import polars as pl
import pytest

from ids_lakehouse.conform import state
from ids_lakehouse.conform.mapping import ConformResult, conform_source
from ids_lakehouse.sources import SourceDefinition, load_sources
from schemas.silver import contract

PROVENANCE = ["_file", "_file_sha256", "_row_number"]


def _delivery(rows: pl.DataFrame, name: str) -> pl.DataFrame:
    """`rows` as one delivered file: its own name, hash and row numbers."""
    return rows.with_columns(pl.lit(f"x/{name}.csv").alias("_file"),
                             pl.lit(name[0] * 64).alias("_file_sha256"),
                             pl.int_range(2, rows.height + 2, dtype=pl.Int64).alias("_row_number"))


def _mapped(defn: SourceDefinition, field: str) -> str | None:
    fm = defn.mapping["person_record"].get(field)
    return fm.column if fm is not None and fm.column else None


def _broken(defn: SourceDefinition, rows: pl.DataFrame, every: int, offset: int) -> pl.DataFrame:
    """Some rows with a field problem (a date of birth that is no date, a phone that is no
    phone) and some with a row problem (no record id): quarantined or nulled."""
    i = pl.int_range(pl.len())
    edits = []
    for field, value in (("dob", "31/31/1990"), ("phone", "call me"), ("last_name", " ")):
        column = _mapped(defn, field)
        if column:
            edits.append(pl.when((i + offset) % every == 0).then(pl.lit(value))
                         .otherwise(pl.col(column)).alias(column))
    edits.append(pl.when((i + offset) % (every * 3) == 1).then(pl.lit(""))
                 .otherwise(pl.col(defn.record_id)).alias(defn.record_id))
    return rows.with_columns(edits)


def _canonical(result: ConformResult) -> dict:
    return {
        "entities": {e: f.sort(PROVENANCE) for e, f in result.entities.items()},
        "quarantine": result.quarantine.sort(PROVENANCE),
        "failures": result.failures, "field_problems": result.field_problems,
        "statuses": result.statuses, "worst_invalid": result.worst_invalid,
        "worst_quarantine_rate": result.worst_quarantine_rate,
        "bronze_rows": result.bronze_rows, "drift": result.schema_drift}


def _assert_equal(a: ConformResult, b: ConformResult) -> None:
    ca, cb = _canonical(a), _canonical(b)
    for entity in ca["entities"]:
        assert ca["entities"][entity].equals(cb["entities"][entity]), entity
    assert ca["quarantine"].equals(cb["quarantine"])
    for key in ("failures", "field_problems", "statuses", "worst_invalid",
                "worst_quarantine_rate", "bronze_rows", "drift"):
        assert ca[key] == cb[key], key


@pytest.mark.parametrize("source", sorted(load_sources()))
def test_replaying_seen_rows_equals_conforming_every_row(tiny_silver, source):
    defn = load_sources()[source]
    bronze = state.bronze_to_conform(tiny_silver, defn)
    assert bronze is not None and bronze.height > 20
    n = bronze.height
    yesterday = _delivery(_broken(defn, bronze.head(n * 8 // 10), 7, 0), "a")
    # Today: the first tenth gone, the rest with other rows broken (some of yesterday's
    # broken rows mended, some new), a fifth of it twice, all in another order.
    rest = _broken(defn, bronze.slice(n // 10), 5, 3)
    today = pl.concat([rest, rest.head(rest.height // 5)]).sample(fraction=1.0, shuffle=True,
                                                                  seed=7)
    today = _delivery(today, "b")
    before = conform_source(defn, yesterday, contract)
    full = conform_source(defn, today, contract)
    replayed = conform_source(defn, today, contract, seen=before.row_cache)
    assert 0 < replayed.rows_replayed < today.height
    assert full.rows_replayed == 0
    assert full.quarantine.height > 0 and full.field_problems
    _assert_equal(replayed, full)
    # And the cache it leaves behind is the one a full conform leaves.
    assert replayed.row_cache is not None and full.row_cache is not None
    key = "_row_key"
    assert replayed.row_cache.sort(key).equals(full.row_cache.sort(key))


@pytest.mark.parametrize("source", sorted(load_sources()))
def test_conforming_in_batches_equals_conforming_at_once(tiny_silver, source, monkeypatch):
    """A large delivery is conformed BATCH_ROWS rows at a time: the same result, also for
    a record delivered twice in different batches and for broken rows in each batch."""
    from ids_lakehouse.conform import mapping

    defn = load_sources()[source]
    bronze = state.bronze_to_conform(tiny_silver, defn)
    assert bronze is not None and bronze.height > 20
    rows = _broken(defn, bronze, 5, 2)
    today = _delivery(pl.concat([rows, rows.head(rows.height // 4)]), "b")
    whole = conform_source(defn, today, contract)
    assert whole.quarantine.height > 0 and whole.field_problems
    monkeypatch.setattr(mapping, "BATCH_ROWS", 7)
    batched = conform_source(defn, today, contract)
    _assert_equal(batched, whole)
    assert batched.row_cache is not None and whole.row_cache is not None
    assert batched.row_cache.sort("_row_key").equals(whole.row_cache.sort("_row_key"))


def test_a_delivery_seen_whole_is_replayed_whole(tiny_silver):
    defn = load_sources()["medicaid"]
    bronze = state.bronze_to_conform(tiny_silver, defn)
    assert bronze is not None
    first = conform_source(defn, _delivery(bronze, "a"), contract)
    again = conform_source(defn, _delivery(bronze, "c"), contract, seen=first.row_cache)
    assert again.rows_replayed == bronze.height
    _assert_equal(again, conform_source(defn, _delivery(bronze, "c"), contract))
    # The provenance is today's file's, not the one the rows were first conformed from.
    assert set(again.entities["enrollment"]["_file"]) == {"x/c.csv"}


def _silver(lake) -> dict[str, pl.DataFrame]:
    from ids_lakehouse import delta

    return {e: delta.frame(lake.silver(e)).sort("source", *PROVENANCE)
            for e in ("person_record", "enrollment", "service_event")} | {
        f"quarantine/{s}": delta.frame(lake.quarantine(s)).drop("_ingested_at", "_run_id")
        .sort(PROVENANCE) for s in load_sources() if delta.exists(lake.quarantine(s))}


def test_a_changed_snapshot_conforms_and_validates_only_its_changed_rows(silver_lake,
                                                                         tiny_landing,
                                                                         tmp_path):
    import os

    from ids_lakehouse.conform import run
    from ids_lakehouse.ingest.delivery import ingest_delivery
    from ids_lakehouse.ingest.landing import landed_file

    lake, defn = silver_lake, load_sources()["medicaid"]
    first = run.conform_all(lake, "run-1", contract)
    assert first.conformed and all(r.rows_replayed == 0 for r in first.conformed)

    # The next snapshot: yesterday's rows, one of them changed, two new ones at the end.
    src = next((tiny_landing / "medicaid").glob("*.csv"))
    rows = pl.read_csv(src, infer_schema=False)
    name, rid = _mapped(defn, "first_name"), defn.record_id
    assert name is not None
    changed = rows.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("Zebulon"))
                                .otherwise(pl.col(name)).alias(name))
    new = rows.head(2).with_columns((pl.col(rid) + "NEW").alias(rid))
    folder = tmp_path / "landing" / "medicaid"
    folder.mkdir(parents=True)
    path = folder / "medicaid_enrollment_2026-01-01.csv"
    pl.concat([changed, new]).write_csv(path)
    os.utime(path, (2_000_000_000, 2_000_000_000))
    assert ingest_delivery(defn, landed_file(tmp_path / "landing", defn, path), lake,
                           "run-2").accepted

    second = run.conform_all(lake, "run-2", contract)
    assert [r.source for r in second.conformed] == ["medicaid"]
    assert second.conformed[0].rows_replayed == rows.height - 1
    assert all(c.passed for c in second.checks), [c for c in second.checks if not c.passed]
    fresh, frames, replayed = run.expectations(lake, "run-2")
    assert fresh == ["medicaid"]
    assert frames["enrollment"].height == 3 and set(frames["enrollment"]["_row_number"]) == {
        5, rows.height + 2, rows.height + 3}    # row numbers count the header line
    assert 2 <= frames["person_record"].height <= 3
    assert replayed["enrollment"] == rows.height - 1

    # While an entity's last validation failed, all of its rows in scope are validated.
    from ids_lakehouse.conform.expectations import RESULTS

    results = lake.docs("data_docs") / RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text('{"enrollment": {"success": false}}')
    _, frames, replayed = run.expectations(lake, "run-2")
    assert frames["enrollment"].height == rows.height + 2 and "enrollment" not in replayed

    # What the replay left in silver is what conforming every row again leaves.
    incremental = _silver(lake)
    again = run.conform_all(lake, "run-3", contract, full_rebuild=True)
    assert all(r.rows_replayed == 0 for r in again.conformed)
    for table, frame in _silver(lake).items():
        assert frame.equals(incremental[table]), table


def test_values_json_writes_alike_are_different_rows(tiny_silver):
    """NaN, inf and null are all `null` in JSON; conform reads them as different text."""
    defn = load_sources()["childcare"]
    bronze = state.bronze_to_conform(tiny_silver, defn)
    assert bronze is not None
    column = defn.mapping["enrollment"]["detail"].column
    assert column is not None
    floats = [None, float("nan"), float("inf")]

    def day(values: list) -> pl.DataFrame:
        rows = bronze.head(3).with_columns(pl.Series(column, values, dtype=pl.Float64))
        return _delivery(rows, "a")

    before = conform_source(defn, day([None] * 3), contract)
    replayed = conform_source(defn, day(floats), contract, seen=before.row_cache)
    assert replayed.rows_replayed == 1
    _assert_equal(replayed, conform_source(defn, day(floats), contract))


def test_columns_whose_names_read_alike_joined_are_different_rows(tiny_silver):
    """Delivered column names are any text: a tester's two deliveries, one with an extra
    column named `q:String|first_name` after the first name, the other with one named
    `first_name:String|q` before it, holding the first name in turn, had one key, and the
    second replayed the first's name."""
    defn = load_sources()["childcare"]
    bronze = state.bronze_to_conform(tiny_silver, defn)
    assert bronze is not None
    first = _mapped(defn, "first_name")
    assert first is not None
    row = _delivery(bronze.head(1), "a")
    rest = [c for c in row.columns if c != first]
    a = row.with_columns(pl.lit("ALICE").alias(first), pl.lit("BOB").alias("q:String|" + first))
    a = a.select(*rest, first, "q:String|" + first)
    b = row.with_columns(pl.lit("ALICE").alias(first + ":String|q"), pl.lit("BOB").alias(first))
    b = b.select(*rest, first + ":String|q", first)
    replayed = conform_source(defn, b, contract,
                              seen=conform_source(defn, a, contract).row_cache)
    assert replayed.rows_replayed == 0
    assert replayed.entities["person_record"]["first_name"].to_list() == ["BOB"]


def test_unmapped_nested_and_binary_columns_are_read_not_a_crash(tiny_silver):
    """A source may allow nested Parquet columns (allow_nested_types), and a binary column
    need not be UTF-8: unmapped, they crashed conform (no cast to text). They are keyed
    as JSON and hexadecimal: a row whose list changed is conformed again, the others are
    replayed, and the quarantine keeps the bytes in hexadecimal."""
    defn = load_sources()["childcare"]
    bronze = state.bronze_to_conform(tiny_silver, defn)
    assert bronze is not None
    rows = _delivery(bronze.head(4), "a").with_columns(
        pl.Series("tags", [["a"], ["b", None], [], None], dtype=pl.List(pl.String)),
        pl.Series("extra", [{"x": 1, "y": None}, None, {"x": None, "y": "z"}, {"x": 2, "y": "w"}],
                  dtype=pl.Struct({"x": pl.Int64, "y": pl.String})),
        pl.Series("blob", [b"\xff\xfe", b"ok", None, b"\x00"], dtype=pl.Binary))
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit(""))
                             .otherwise(pl.col(defn.record_id)).alias(defn.record_id))
    first = conform_source(defn, rows, contract)
    assert first.quarantine["_raw"].str.contains("0x00|\"00\"").any()
    changed = rows.with_columns(pl.Series("tags", [["a"], ["b", None], ["new"], None],
                                          dtype=pl.List(pl.String)))
    again = conform_source(defn, changed, contract, seen=first.row_cache)
    assert again.rows_replayed == 3
    _assert_equal(again, conform_source(defn, changed, contract))


def test_a_damaged_row_cache_costs_time_not_the_night(silver_lake):
    from ids_lakehouse.conform import run

    lake = silver_lake
    run.conform_all(lake, "run-1", contract)
    cache = lake.table("silver", state.ROWS)
    for part in cache.glob("*.parquet"):
        part.write_bytes(part.read_bytes()[:100])
    warnings = []
    again = run.conform_all(lake, "run-2", contract, full_rebuild=False,
                            log=lambda level, message: warnings.append(level))
    assert not again.conformed      # nothing new: no source is conformed again
    # A new delivery of every source (the code changed, say): the cache is unreadable,
    # every row is conformed, the cache rewritten, the night green.
    again = run.conform_all(lake, "run-3", contract, full_rebuild=True)
    assert again.conformed and all(c.passed for c in again.checks)
    assert state.rows_seen(lake, "medicaid", state.code_of(contract)) is not None
