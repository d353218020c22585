"""The landing sensor and an in-process materialization of the whole graph on a tiny
population, on a real (temporary) Dagster instance and real Delta tables.

The whole graph is materialized once per session (`published_build` in conftest); tests
that only look at the result read it, tests that carry on from it work on a copy of its
lake, landing zone and instance (`published_copy`). Scenarios with another history (a bad
file among the first deliveries, another population) build their own."""

from __future__ import annotations

import json
import re
import shutil

import polars as pl
import pyarrow.compute as pc
import pytest
from dagster import AssetKey, DagsterInstance, SensorResult, build_sensor_context

from assets.keys import files_partitions
from ids_lakehouse import audit, delta
from ids_lakehouse.config import Lake
from ids_lakehouse.sources import load_sources
from pipelines.definitions import build_definitions
from pipelines.demo import Outcome, materialize_everything
from pipelines.sensors import landing_sensor
from tests.conftest import PUBLISHED_KEY


@pytest.fixture
def env(tmp_path, tiny_landing, monkeypatch):
    landing = tmp_path / "landing"
    shutil.copytree(tiny_landing, landing)
    monkeypatch.setenv("LANDING_ROOT", str(landing))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", "test-only-key-" + "0" * 32)
    return landing, Lake(tmp_path / "lake")


def _sensor(instance, cursor=None) -> SensorResult:
    from pipelines.resources import LakeResource

    # As the daemon does: resources are set up for the tick and torn down after it.
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"lake": LakeResource.from_env()}) as context:
        return landing_sensor(context)


def test_sensor_registers_each_file_once(env):
    landing, _ = env
    with DagsterInstance.ephemeral() as instance:
        first = _sensor(instance)
        assert len(first.run_requests) == len(load_sources())
        assert {r.tags["ids/source"] for r in first.run_requests} == set(load_sources())
        for req in first.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        again = _sensor(instance, first.cursor)
        assert not again.run_requests            # same files: nothing to do

        # The same bytes under another name are not ingested twice...
        src = landing / "hmis" / "hmis_client_2025-12-31.csv"
        shutil.copy(src, landing / "hmis" / "hmis_resent.csv")
        assert not _sensor(instance, again.cursor).run_requests
        # ...but a corrected file is a new partition.
        (landing / "hmis" / "hmis_corrected.csv").write_bytes(src.read_bytes() + b"\n")
        corrected = _sensor(instance, again.cursor)
        assert [r.tags["ids/source"] for r in corrected.run_requests] == ["hmis"]
        assert corrected.run_requests[0].partition_key.startswith("hmis_corrected.csv@")
        # Files still being written are left alone.
        (landing / "medicaid" / "next.csv.part").write_bytes(b"id\n")
        assert len(_sensor(instance, again.cursor).run_requests) == 1


def test_whole_graph_materializes_and_reruns_are_idempotent(published_copy):
    # The first pass is the session's build; the rerun goes on a copy of its lake and
    # instance.
    landing, lake = published_copy.landing, Lake(published_copy.lake)
    defs = build_definitions()
    manifest = json.loads((landing / "_truth" / "manifest.json").read_text())
    with published_copy.instance() as instance:
        outcome = published_copy.outcome
        assert not outcome.runs_failed and not outcome.checks_failed
        assert outcome.checks_passed >= len(load_sources())
        counts = {s: delta.count(lake.bronze(s))
                  for s in load_sources()}
        assert counts == {s: a["rows"] for s, a in manifest["agencies"].items()}
        for s in load_sources():
            assert len(instance.get_dynamic_partitions(files_partitions(s).name)) == 1

        # A second pass finds nothing new and changes nothing.
        materialize_everything(defs, instance, Outcome())
        again = {s: delta.count(lake.bronze(s))
                 for s in load_sources()}
        assert again == counts

        # Re-materializing a partition replaces its rows instead of duplicating them.
        from dagster import materialize

        from assets.keys import bronze_key

        key = instance.get_dynamic_partitions(files_partitions("medicaid").name)[0]
        result = materialize(list(defs.assets), selection=[bronze_key("medicaid")],
                             partition_key=key, instance=instance, resources=defs.resources)
        assert result.success
        df = pl.from_arrow(delta.read(lake.bronze("medicaid")))
        assert df.height == counts["medicaid"]
        assert df["_run_id"].n_unique() == 1 and df["_run_id"][0] == result.run_id
    events = pl.from_arrow(audit.read(lake))
    assert (events["kind"] == "ingest_succeeded").sum() == len(load_sources()) + 1


def test_a_bad_file_fails_its_partition_and_others_flow(env):
    landing, lake = env
    (landing / "hmis" / "hmis_broken.csv").write_bytes(b"PersonalID,FirstName\n1,A\n")
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        outcome = Outcome()
        materialize_everything(defs, instance, outcome)
    assert len(outcome.runs_failed) == 1 and "hmis_broken.csv" in outcome.runs_failed[0]
    assert outcome.runs_ok == len(load_sources()) + 1  # every other ingest, then silver
    events = pl.from_arrow(audit.read(lake)).filter(pl.col("kind") == "ingest_failed")
    assert events.height == 1
    assert "missing_required_columns" in events["message"][0]
    assert (landing / "hmis" / "hmis_broken.csv").exists()  # the file stays where it is


def _event_log_text(instance) -> str:
    from dagster._serdes import serialize_value

    parts = []
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            parts.append(serialize_value(entry))
    return "\n".join(parts)


def _appears(needle: str, text: str) -> bool:
    """A name anywhere in the text; a number-like value (SSN, date) where it stands alone,
    not inside a longer number: a step's "duration_ms": 1823.3413200005089 held the birth
    date 20000508, and the test failed on a timing."""
    if needle[:1].isdigit():
        return re.search(rf"(?<![0-9.]){re.escape(needle)}(?![0-9])", text) is not None
    return needle in text


def test_silver_reconciles_per_source_and_no_personal_data_reaches_dagster(published_build):
    landing, lake = published_build.landing, Lake(published_build.lake)
    with published_build.instance() as instance:
        outcome = published_build.outcome
        assert not outcome.runs_failed and not outcome.checks_failed, outcome
        text = _event_log_text(instance)
    for source in load_sources():
        bronze = delta.count(lake.bronze(source))
        silver_rows = sum(delta.count(lake.silver(e), pc.field("source") == source)
                          for e in ("enrollment", "service_event"))
        quarantined = delta.count(lake.quarantine(source), pc.field("_stage") == "conform")
        assert bronze == silver_rows + quarantined, source
    assert delta.count(lake.quarantine("hmis")) + delta.count(lake.quarantine("medicaid")) >= 0

    persons = pl.read_parquet(landing / "_truth" / "persons.parquet")
    needles = set()
    for p in persons.iter_rows(named=True):
        needles |= {p["ssn"], f"{p['ssn'][:3]}-{p['ssn'][3:5]}-{p['ssn'][5:]}",
                    f"{p['first_name']} {p['last_name']}",
                    f"{p['first_name']} {p['last_name']}".upper(),
                    p["dob"].isoformat(), p["dob"].strftime("%m/%d/%Y"),
                    p["dob"].strftime("%Y%m%d"), p["dob"].strftime("%d/%m/%Y")}
    assert len(text) > 10_000  # the log really holds the runs' events and metadata
    assert _appears("20000508", '"dob_text": "20000508"') and \
        not _appears("20000508", '"duration_ms": 1823.3413200005089')
    leaked = sorted(n for n in needles if _appears(n, text))
    assert not leaked, f"{len(leaked)} personal values reached the Dagster event log"


def test_marts_are_published_and_the_warehouse_answers_queries(published_build,
                                                              monkeypatch):
    import duckdb

    from ids_lakehouse import warehouse

    monkeypatch.setenv("IDS_PSEUDONYM_KEY", PUBLISHED_KEY)   # the audit log's key
    lake = Lake(published_build.lake)
    with published_build.instance() as instance:
        outcome = published_build.outcome
        # Counts of held-back changes and suppressed records are disclosive between
        # nights (even rounded): they go to the audit log, never to metadata.
        for mart in ("indicators", "research_person"):
            event = instance.get_latest_materialization_event(AssetKey(["gold", mart]))
            keys = set(event.asset_materialization.metadata)
            assert not {k for k in keys if "held_back" in k or k == "records_suppressed"}
    assert not outcome.runs_failed and not outcome.checks_failed, outcome
    kinds = {e["kind"] for e in audit.read(lake).to_pylist()}
    assert "disclosure_holdback" in kinds
    with warehouse.connect(lake) as con:
        research = con.execute("SELECT count(*) FROM research.persons").fetchone()[0]
        assert research == delta.count(lake.gold("research_person")) > 0
        total = con.execute(
            "SELECT persons FROM indicators.person_counts WHERE year = 2024 AND program = "
            "'K12' AND county_fips = 'ALL' AND age_band = 'ALL' AND sex = 'ALL' AND "
            "race_ethnicity = 'ALL'").fetchone()[0]
        assert total > 10
        columns = {r[0] for r in con.execute("DESCRIBE research.persons").fetchall()}
        assert "pseudonym" in columns and "person_id" not in columns
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE research.x AS SELECT 1")  # read-only for analysts
        schemas = {r[0] for r in con.execute(
            "SELECT schema_name FROM information_schema.schemata").fetchall()}
        assert "operations" not in schemas         # the identified directory has no view


def test_a_population_too_small_for_the_research_policy_stops_only_research(
        tmp_path, monkeypatch):
    """Local suppression beyond the policy fails the research file's blocking check: the
    research release is not made, and the indicators and the operations release are."""
    from ids_lakehouse.synth.generate import generate

    landing = tmp_path / "landing"
    generate(300, seed=3, out=landing, chunk_size=300)
    monkeypatch.setenv("LANDING_ROOT", str(landing))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", "test-only-key-" + "0" * 32)
    lake = Lake(tmp_path / "lake")
    with DagsterInstance.ephemeral() as instance:
        outcome = Outcome()
        materialize_everything(build_definitions(), instance, outcome)
    assert outcome.checks_failed == ["gold/research_person:local_suppression"], outcome
    released = {p.parent.parent.name for p in lake.root.glob("*/releases/*/v*/"
                                                                     "manifest.json")}
    assert released == {"dsa-public-indicators", "dsa-traveller-followup"}
    assert delta.exists(lake.gold("indicators"))


def _conform(defs, instance, **config):
    from dagster import materialize

    from assets.conform import ENTITIES
    from assets.keys import silver_key

    run_config = {"ops": {"conform": {"config": config}}} if config else None
    return materialize([*defs.assets, *(defs.asset_checks or [])],
                       selection=[silver_key(e) for e in ENTITIES], instance=instance,
                       resources=defs.resources, raise_on_error=False, run_config=run_config)


def _conform_metadata(result) -> dict:
    from assets.keys import silver_key

    return next({k: v.value for k, v in m.metadata.items()}
                for m in result.asset_materializations_for_node("conform")
                if m.asset_key == silver_key("person_record"))


def test_conform_redoes_only_changed_sources_and_failed_ones(published_copy, monkeypatch):
    from ids_lakehouse.conform import run as conform_run

    landing, lake = published_copy.landing, Lake(published_copy.lake)
    defs = build_definitions()
    sources = sorted(load_sources())
    with published_copy.instance() as instance:  # the whole graph already materialized
        versions = {e: delta.table(lake.silver(e)).version()
                    for e in ("person_record", "enrollment")}

        # Nothing new: no source is conformed again, the silver tables are untouched, and
        # every check still covers every source.
        again = _conform(defs, instance)
        assert again.success
        meta = _conform_metadata(again)
        assert meta["sources_conformed"] == [] and meta["sources_unchanged"] == sources
        assert {e: delta.table(lake.silver(e)).version() for e in versions} == versions
        checks = {c.check_name: c for c in again.get_asset_check_evaluations()}
        assert all(c.passed for c in checks.values())
        assert set(checks["rows_reconcile"].metadata["by_source"].value) == set(sources)

        # A new hmis delivery: only hmis is conformed; the expectations cover its rows.
        src = landing / "hmis" / "hmis_client_2025-12-31.csv"
        (landing / "hmis" / "hmis_client_2026-01-01.csv").write_bytes(src.read_bytes() + b"\n")
        materialize_everything(defs, instance, Outcome())
        from assets.keys import silver_key

        latest = instance.get_latest_materialization_event(silver_key("person_record"))
        meta = {k: v.value for k, v in latest.asset_materialization.metadata.items()}
        runs = instance.get_runs(limit=1)
        assert meta["sources_conformed"] == ["hmis"]
        gx = [e for e in instance.all_logs(runs[0].run_id) if e.is_dagster_event
              and e.dagster_event_type.value == "ASSET_CHECK_EVALUATION"
              and e.dagster_event.event_specific_data.check_name == "expectations"]
        assert gx and all(e.dagster_event.event_specific_data.metadata[
            "sources_validated"].value == ["hmis"] for e in gx)
        # Its rows are yesterday's: replayed, not conformed or validated again.
        hmis_rows = delta.count(lake.bronze("hmis"))
        assert 0 < meta["rows_replayed_by_source"]["hmis"] <= hmis_rows
        person_gx = next(e.dagster_event.event_specific_data.metadata for e in gx
                         if e.dagster_event.event_specific_data.asset_key
                         == silver_key("person_record"))
        assert person_gx["rows_validated"].value == 0
        assert person_gx["rows_replayed_not_revalidated"].value == delta.count(
            lake.silver("person_record"), pc.field("source") == "hmis")

        # A source that fails a check is no longer recorded as conformed: every later run
        # conforms and checks it again rather than trusting its failed rows.
        strict = {s: d.model_copy(update={"max_invalid_rate": 0.0}) if s == "medicaid"
                  else d for s, d in load_sources().items()}
        # (Only this patch is undone after: the copy's environment stays.)
        with monkeypatch.context() as patched:
            patched.setattr(conform_run, "load_sources", lambda: strict)
            medicaid_rows = delta.count(lake.silver("person_record"),
                                        pc.field("source") == "medicaid")
            others = [s for s in sources if s != "medicaid"]
            for config, conformed in (({"full_rebuild": True}, others), ({}, [])):
                failed = _conform(defs, instance, **config)
                rate = next(c for c in failed.get_asset_check_evaluations()
                            if c.check_name == "field_validity")
                assert not rate.passed and set(rate.metadata["over_limit"].value) == {"medicaid"}
                meta = _conform_metadata(failed)
                assert meta["sources_conformed"] == conformed
                assert list(meta["sources_refused"]) == ["medicaid"]
                # Refused before writing: medicaid's rows from its last good delivery stay.
                assert delta.count(lake.silver("person_record"),
                                   pc.field("source") == "medicaid") == medicaid_rows
        assert _conform_metadata(_conform(defs, instance))["sources_conformed"] == ["medicaid"]
        assert _conform_metadata(_conform(defs, instance))["sources_conformed"] == []


def test_a_source_that_cannot_be_conformed_is_refused_alone(published_copy, monkeypatch):
    """One agency's delivery lacks a mapped column: that source is refused with the reason
    (its earlier silver rows kept), every other source is conformed, and the run does not
    crash half-way through the sources."""
    from ids_lakehouse.conform import run as conform_run
    from ids_lakehouse.sources import FieldMap

    lake = Lake(published_copy.lake)
    defs = build_definitions()
    with published_copy.instance() as instance:  # the whole graph already materialized
        kept = delta.count(lake.silver("person_record"), pc.field("source") == "births")
        broken = {s: d.model_copy(update={
            "columns": [*d.columns, "mothers_phone"],
            "mapping": d.mapping | {"person_record": d.mapping["person_record"] | {
                "email": FieldMap(column="mothers_phone")}}}) if s == "births" else d
            for s, d in load_sources().items()}
        monkeypatch.setattr(conform_run, "load_sources", lambda: broken)
        result = _conform(defs, instance, full_rebuild=True)
    meta = _conform_metadata(result)
    assert "births" not in meta["sources_conformed"]
    assert set(meta["sources_conformed"]) == set(load_sources()) - {"births"}
    assert "missing from bronze: ['mothers_phone']" in meta["sources_refused"]["births"]
    rec = next(c for c in result.get_asset_check_evaluations()
               if c.check_name == "rows_reconcile")
    assert not rec.passed and not rec.metadata["by_source"].value["births"]["reconciles"]
    assert delta.count(lake.silver("person_record"), pc.field("source") == "births") == kept


def test_people_who_leave_while_held_back_keep_their_cell_keys(published_copy):
    """Found by a red team: a new HMIS snapshot without some clients, and the
    marts step died with a KeyError naming a person_id (indicators silently dropped them):
    the held-back basis still counts people the index no longer has, and they need their
    record keys like anyone."""
    from ids_lakehouse.marts.publish import BASIS

    lake = Lake(published_copy.lake)
    last = sorted((published_copy.landing / "hmis").glob("*.csv"))[-1]
    lines = last.read_bytes().splitlines()
    kept = [lines[0], *lines[1:len(lines) // 2]]
    (last.parent / "hmis_client_2026-02-01.csv").write_bytes(b"\n".join(kept) + b"\n")
    outcome = Outcome()
    with published_copy.instance() as instance:
        materialize_everything(build_definitions(), instance, outcome)
    assert not outcome.runs_failed, outcome
    basis = delta.frame(lake.disclosure(BASIS))
    xref = delta.frame(lake.identity("person_xref"), columns=["person_id"])
    assert not basis.join(xref.unique(), on="person_id", how="anti").is_empty(), \
        "the scenario holds back someone who left"
    indicators = delta.frame(lake.gold("indicators"))
    assert indicators.height
