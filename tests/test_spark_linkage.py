"""Linkage on Spark (IDS_LINKAGE_ENGINE=spark; pyspark in local mode, Java from the OS):
on the published lake's records and on copies of them changed every way records of one
person differ (and a few hostile values), Spark pairs the records DuckDB pairs, at the same
levels and probability; an identity build on Spark gives every record the person_id a
DuckDB build gives; a model trained on Spark is saved in the same format and scores on
DuckDB."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.identity import engines, linkage, mpi
from tests.linkage_variants import variants

PAIR_KEY = ["unique_id_l", "unique_id_r"]
GAMMAS = [f"gamma_{c}" for c in linkage.GAMMAS]


def _hostile(people: pl.DataFrame) -> pl.DataFrame:
    """Values an engine may treat differently: an identifier too long for a BIGINT or
    ending in a line break (Java's $ matched before it), empty strings, quotes and
    backslashes, characters outside the BMP, names in other scripts, streets of 20,000
    characters (edit distances over them took seconds a pair on Spark)."""
    rows = []
    for n, row in enumerate(people.head(60).iter_rows(named=True)):
        changed = dict(row) | {"source_record_id": f"H{n:04d}"}
        if n % 6 == 4:     # and a record whose SSN is one typo from it, not in sequence
            ssn = row["ssn"] or f"12345{n:04d}"
            changed |= {"ssn": ssn + "\n", "ssn_last4": ssn[-4:], "first_name": "JAMES",
                        "dob": row["dob"] or dt.date(1990, 5, 6)}
            rows.append(changed | {"source_record_id": f"H{n:04d}B", "ssn": ssn + "0",
                                   "ssn_last4": (ssn + "0")[-4:]})
        elif n % 6 == 5:
            changed |= {"street": "1 " + "ELM" * 6_700, "zip": "99100", "last_name": "LONG",
                        "dob": None}
        elif n % 4 == 0:
            changed |= {"national_id": "9" * 25, "national_id_type": "state_id",
                        "ssn": None, "ssn_last4": None}
        elif n % 4 == 1:
            changed |= {"first_name": "", "last_name": "O'BRIEN\\", "street": "1 'A' ST"}
        elif n % 4 == 2:
            changed |= {"first_name": "ZOË😀", "last_name": "ДМИТРИЕВ", "zip": ""}
        else:
            changed |= {"first_name": "李敏", "last_name": row["first_name"],
                        "national_id": "9" * 25, "national_id_type": "state_id"}
        rows.append(changed)
    return pl.DataFrame(rows, schema=people.schema)


@pytest.fixture(scope="module")
def population(published) -> tuple[pl.DataFrame, linkage.Model, dict[str, pl.DataFrame]]:
    lake = Lake(published)
    people = delta.frame(lake.silver("person_record"), columns=linkage.SILVER_COLUMNS)
    people = pl.concat([people, variants(people), _hostile(people)])
    model, tf, _ = linkage.load_model(mpi.models_dir(lake)) or pytest.fail("no model")
    return linkage.linkage_input(people), model, tf


def _scored(records: pl.DataFrame, model: linkage.Model, tf: dict[str, pl.DataFrame],
            spill: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> pl.DataFrame:
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", engine)
    return linkage.predict(records, model, tf, spill=spill, floor=0.0).sort(PAIR_KEY)


def _same_scores(duck: pl.DataFrame, spark: pl.DataFrame) -> None:
    assert spark.schema == duck.schema
    assert spark.select(PAIR_KEY).equals(duck.select(PAIR_KEY))
    for gamma in GAMMAS:     # each comparison's disagreements, as (duckdb, spark) levels
        differ = pl.DataFrame({"duckdb": duck[gamma], "spark": spark[gamma]}).filter(
            pl.col("duckdb") != pl.col("spark")).group_by("duckdb", "spark").len()
        assert differ.is_empty(), (gamma, differ.rows())
    for column in ("match_probability", "match_weight"):
        assert (spark[column] - duck[column]).abs().max() < 1e-9


def test_spark_scores_every_pair_at_duckdbs_levels_and_probability(population, tmp_path,
                                                                   monkeypatch):
    records, model, tf = population
    duck = _scored(records, model, tf, tmp_path / "spill", "duckdb", monkeypatch)
    spark = _scored(records, model, tf, tmp_path / "spill", "spark", monkeypatch)
    assert duck.height > 5_000
    # every level of every comparison is reached, so each condition was compared
    for gamma in GAMMAS:
        assert duck[gamma].n_unique() >= 3, gamma
    _same_scores(duck, spark)

    # scoring only what changed: the changed records against the others and each other
    changed = records["unique_id"].filter(records["unique_id"].str.contains(":[VH]"))
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "spark")
    some = linkage.predict_changed(records, changed, model, tf, spill=tmp_path / "spill",
                                   floor=0.0).sort(PAIR_KEY)
    touched = duck.filter(pl.col("unique_id_l").is_in(changed.implode())
                          | pl.col("unique_id_r").is_in(changed.implode()))
    _same_scores(touched, some)
    # Splink's checkpoints (record comparisons) are gone with the run
    assert not [p for p in (tmp_path / "spill").rglob("*") if p.is_file()
                and "checkpoints" in p.parts]


def test_an_identity_build_on_spark_gives_every_record_duckdbs_person_id(published, tmp_path,
                                                                        monkeypatch):
    results = {}
    for engine in ("duckdb", "spark"):
        lake = Lake(tmp_path / engine)
        shutil.copytree(published, lake.root)
        people = delta.frame(lake.silver("person_record"))
        monkeypatch.setenv("IDS_LINKAGE_ENGINE", engine)
        results[engine] = mpi.build(lake, people, f"run-{engine}", full=True)
    duck, spark = results["duckdb"], results["spark"]
    assert (spark.mode, spark.trained, spark.model_version) == \
        (duck.mode, duck.trained, duck.model_version)
    assert (duck.mode, duck.trained) == ("full", False)
    assert duck.people < duck.records and duck.links > 0
    assert (spark.people, spark.links, spark.review_pairs, spark.events) == \
        (duck.people, duck.links, duck.review_pairs, duck.events)

    links = [t["person_link"].drop("run_id", strict=False).sort(PAIR_KEY)
             for t in (duck.tables, spark.tables)]
    assert links[0].select(PAIR_KEY + GAMMAS).equals(links[1].select(PAIR_KEY + GAMMAS))
    assert (links[0]["match_probability"] - links[1]["match_probability"]).abs().max() < 1e-9
    xrefs = [t["person_xref"].select("source", "source_record_id", "person_id")
             .sort("source", "source_record_id") for t in (duck.tables, spark.tables)]
    assert xrefs[0].equals(xrefs[1])
    queues = [t["review_queue"].select(PAIR_KEY + ["reason"]).sort(PAIR_KEY)
              for t in (duck.tables, spark.tables)]
    assert queues[0].equals(queues[1])


def test_a_model_trained_on_spark_is_saved_as_duckdbs_and_scores_there(published, tmp_path,
                                                                        monkeypatch):
    lake = Lake(published)
    # A sample keeps Spark's sampling of u pairs (every row through Python's string
    # functions) within seconds.
    records = linkage.linkage_input(
        delta.frame(lake.silver("person_record"), columns=linkage.SILVER_COLUMNS)
        .sample(n=800, seed=3))
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "duckdb")
    duck_model, duck_tf = linkage.train(records, spill=tmp_path / "spill")
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "spark")
    spark_model, spark_tf = linkage.train(records, spill=tmp_path / "spill")

    # the same format: DuckDB's SQL, this code's design, the same term frequencies
    assert spark_model["sql_dialect"] == "duckdb"
    assert linkage.design(spark_model) == linkage.current_design()
    for column in linkage.TF_COLUMNS:
        assert spark_tf[column].sort(column).equals(duck_tf[column].sort(column))
    # the same estimates: the prior exactly; m by EM and u by random sampling (Spark
    # samples other pairs) close
    assert spark_model["probability_two_random_records_match"] == \
        duck_model["probability_two_random_records_match"]
    for ours, theirs in zip(spark_model["comparisons"], duck_model["comparisons"], strict=True):
        for a, b in zip(ours["comparison_levels"], theirs["comparison_levels"], strict=True):
            for p in ("m_probability", "u_probability"):
                assert abs((a.get(p) or 0) - (b.get(p) or 0)) < 0.02, \
                    (ours["output_column_name"], a["label_for_charts"], p)

    # saved and loaded like any model, it scores on DuckDB, linking what DuckDB's links
    models = tmp_path / "models"
    version = linkage.save_model(spark_model, spark_tf, models)
    loaded, tf, loaded_version = linkage.load_model(models) or pytest.fail("not saved")
    assert loaded_version == version
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "duckdb")
    linked = [set(map(tuple, linkage.predict(records, m, t, spill=tmp_path / "spill",
                                             floor=linkage.MATCH_THRESHOLD)
                      .select(PAIR_KEY).rows()))
              for m, t in ((loaded, tf), (duck_model, duck_tf))]
    assert len(linked[1]) > 100
    assert len(linked[0] ^ linked[1]) <= 0.01 * len(linked[1])


def test_an_unknown_engine_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "postgres")
    with pytest.raises(engines.EngineError, match="IDS_LINKAGE_ENGINE='postgres'.*duckdb, spark"):
        engines.engine_name()
    # before anything else: records nothing can be trained from do not hide it
    one = linkage.linkage_input(pl.DataFrame(
        {c: [None] for c in linkage.SILVER_COLUMNS},
        schema={c: pl.Date if c == "dob" else pl.String for c in linkage.SILVER_COLUMNS})
        .with_columns(source=pl.lit("a"), source_record_id=pl.lit("1")))
    with pytest.raises(engines.EngineError):
        linkage.train(one, spill=tmp_path / "spill")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_each_lake_keeps_its_own_spark_files_and_a_deleted_spill_is_recovered(
        population, tmp_path, monkeypatch):
    """Shuffle files go where Spark was started: a process linking a second lake starts
    Spark again in that lake's spill (a tester found lake B's comparisons in lake A's), a
    spill deleted under a running session (lake A removed) does not break the next run,
    and what a killed process left in the spill is removed."""
    records, model, tf = population
    some = records.head(400)
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "duckdb")
    expected = linkage.predict(some, model, tf, spill=tmp_path / "duck", floor=0.0) \
        .sort(PAIR_KEY)
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "spark")
    a, b = tmp_path / "a" / "_spill", tmp_path / "b" / "_spill"
    _same_scores(expected, linkage.predict(some, model, tf, spill=a, floor=0.0).sort(PAIR_KEY))
    assert (a / "spark" / "local").is_dir()
    shutil.rmtree(tmp_path / "a")
    # what a process killed mid-run left in lake B: its shuffle files and checkpoints
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for left in (b / "spark" / "local" / dead, b / "spark" / "checkpoints" / f"{dead}-x"):
        left.mkdir(parents=True)
        (left / "part-0.parquet").write_bytes(b"comparisons")
    _same_scores(expected, linkage.predict(some, model, tf, spill=b, floor=0.0).sort(PAIR_KEY))
    assert not (b / "spark" / "local" / dead).exists()
    assert not (b / "spark" / "checkpoints" / f"{dead}-x").exists()
    assert not _files(tmp_path / "a")     # (Spark may recreate its empty local directory)
    assert (b / "spark" / "local").is_dir()
    assert not [p for p in _files(b) if "checkpoints" in p.parts]


def test_a_spark_session_the_user_started_is_used_and_left_as_it_was(population, tmp_path,
                                                                      monkeypatch):
    """A notebook's session: its own view named `records` and its cache stay, a missing
    checkpoint directory is not an error, and the scores are DuckDB's."""
    from pyspark.sql import SparkSession

    records, model, tf = population
    some = records.head(400)
    monkeypatch.setenv("IDS_LINKAGE_ENGINE", "duckdb")
    expected = linkage.predict(some, model, tf, spill=tmp_path / "duck", floor=0.0) \
        .sort(PAIR_KEY)
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    user = (SparkSession.builder.master("local[1]").appName("a user's notebook")
            .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.warehouse.dir", str(tmp_path / "warehouse"))
            .config("spark.local.dir", str(tmp_path / "user-local")).getOrCreate())
    try:
        mine = user.createDataFrame([(1, "mine")], "id INT, what STRING")
        mine.createOrReplaceTempView("records")
        user.table("records").cache()
        monkeypatch.setenv("IDS_LINKAGE_ENGINE", "spark")
        spark = linkage.predict(some, model, tf, spill=tmp_path / "spill", floor=0.0)
        _same_scores(expected, spark.sort(PAIR_KEY))
        assert SparkSession.getActiveSession() is not None
        assert user.table("records").collect()[0]["what"] == "mine"
        assert user.catalog.isCached("records")
        assert user.sparkContext._jsc.sc().getCheckpointDir().isEmpty()
        assert not [p for p in _files(tmp_path / "spill") if "checkpoints" in p.parts]
    finally:
        user.stop()


def test_the_string_distances_spark_runs_are_duckdbs():
    """identity.similarity's column functions (Spark's jaro_winkler and
    damerau_levenshtein) equal DuckDB's on the values that told them apart: repeated
    letters (Splink's Apache Commons Jaro-Winkler differs), other scripts and characters
    outside the BMP (DuckDB compares UTF-8 bytes), empty strings and nulls; and on random
    short strings over few letters (ties, repeats, transpositions), where the distance is
    told as 0, 1 or more (2)."""
    import random

    import duckdb

    from ids_lakehouse.identity import similarity

    words = ["HERNANDEZ", "HERNENDEZ", "МАРИЯ", "МАРИНА", "ZOË😀", "ZOE", "", "李敏", "李明",
             "O'BRIEN\\", "OBRIEN", "A", "123456789\n", "123456789", None]
    pairs = [(a, b) for a in words for b in words]
    rng = random.Random(5)
    for _ in range(20_000):
        pairs.append(tuple("".join(rng.choice("ABЖ") for _ in range(rng.randrange(6)))
                           for _ in range(2)))
    left, right = [a for a, _ in pairs], [b for _, b in pairs]
    theirs = duckdb.execute(
        "SELECT jaro_winkler_similarity(a, b), if(damerau_levenshtein(a, b) > 2, 2, "
        "damerau_levenshtein(a, b)) "
        "FROM (SELECT unnest($1) AS a, unnest($2) AS b)", [left, right]).fetchall()
    assert similarity.jaro_winkler_column(left, right) == [jw for jw, _ in theirs]
    assert similarity.damerau_levenshtein_column(left, right) == [dl for _, dl in theirs]


def _edit_pairs() -> list[tuple[str | None, str | None]]:
    """Texts and their one- and two-edit variants (substitutions, insertions, deletions,
    transpositions, anywhere), other scripts and characters outside the BMP, empty
    texts and nulls, and unrelated texts."""
    import random

    rng = random.Random(11)
    alphabet = "AB12Ж😀"
    pairs: list[tuple[str | None, str | None]] = [(None, "A"), ("A", None), (None, None),
                                                  ("", ""), ("", "A"), ("AB", "")]

    def edit(text: str) -> str:
        i = rng.randrange(len(text) + 1)
        kind = rng.choice("sidt")
        if kind == "i" or not text:
            return text[:i] + rng.choice(alphabet) + text[i:]
        i = min(i, len(text) - 1)
        if kind == "s":
            return text[:i] + rng.choice(alphabet) + text[i + 1:]
        if kind == "d":
            return text[:i] + text[i + 1:]
        return text[:i] + text[i + 1:i + 2] + text[i] + text[i + 2:] if i + 1 < len(text) \
            else text
    for _ in range(6_000):
        text = "".join(rng.choice(alphabet[:4] if rng.random() < 0.7 else alphabet)
                       for _ in range(rng.randrange(12)))
        once = edit(text)
        pairs += [(text, once), (once, text), (text, edit(once)),
                  (text, "".join(rng.choice(alphabet) for _ in range(len(text))))]
    return pairs


def test_the_edit_distance_shortcut_never_changes_a_level(tmp_path):
    """linkage.within_one_edit checks a necessary condition before the edit distance: on
    DuckDB and on Spark it says what `damerau_levenshtein(a, b) <= 1` says, pair by pair."""
    import duckdb
    from pyspark.sql import functions

    pairs = _edit_pairs()
    left, right = [a for a, _ in pairs], [b for _, b in pairs]
    condition = linkage.within_one_edit("a", "b")
    plain = "damerau_levenshtein(a, b) <= 1"
    query = "SELECT coalesce({}, false) FROM (SELECT unnest($1) AS a, unnest($2) AS b)"
    shortcut = [r[0] for r in duckdb.execute(query.format(condition), [left, right]).fetchall()]
    truth = [r[0] for r in duckdb.execute(query.format(plain), [left, right]).fetchall()]
    assert sum(truth) > 5_000 and shortcut == truth

    spark = engines.session(tmp_path / "spill")
    frame = spark.createDataFrame(list(zip(left, right, strict=True)), "a string, b string")
    frame = frame.withColumn("i", functions.monotonically_increasing_id())
    rows = frame.selectExpr("i", f"coalesce({engines.spark_sql(condition)}, false) AS s",
                            f"coalesce({engines.spark_sql(plain)}, false) AS p"
                            ).orderBy("i").collect()
    assert [r["s"] for r in rows] == truth and [r["p"] for r in rows] == truth
