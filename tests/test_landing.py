"""The landing zone survey: what is a delivery, what is refused (once, with a reason), and
a landing sensor tick that fails is audited."""

from __future__ import annotations

import os
import shutil

import polars as pl
import pytest
from dagster import DagsterInstance, build_sensor_context

from ids_lakehouse import audit
from ids_lakehouse.config import Lake
from ids_lakehouse.ingest import landing
from ids_lakehouse.sources import load_sources
from pipelines.resources import LakeResource
from pipelines.sensors import landing_sensor


@pytest.fixture
def zone(tmp_path, tiny_landing, monkeypatch):
    root = tmp_path / "landing"
    shutil.copytree(tiny_landing, root)
    monkeypatch.setenv("LANDING_ROOT", str(root))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    return root


def _refused(root) -> dict[str, str]:
    return {r.name: r.reason for r in landing.survey(root, load_sources()).refused}


def test_everything_that_is_not_a_delivery_is_refused_with_a_reason(zone, tmp_path):
    sources = load_sources()
    delivered = len(landing.scan(zone, sources))
    outside = tmp_path / "secret.csv"
    outside.write_text("id\n1\n")
    (zone / "hmis" / "link_out.csv").symlink_to(outside)
    (zone / "hmis" / "passwd.csv").symlink_to("/etc/passwd")
    (zone / "linked_source").symlink_to(zone / "hmis", target_is_directory=True)
    (zone / "unknown_agency").mkdir()
    (zone / "unknown_agency" / "x.csv").write_text("a\n")
    (zone / "stray.csv").write_text("a\n")
    (zone / "hmis" / "sub").mkdir()
    (zone / "hmis" / "notes.txt").write_text("not a delivery")
    (zone / "hmis" / "bad\x07name.csv").write_text("a\n")
    (zone / "hmis" / "forged\nline.csv").write_text("a\n")
    with open(bytes(zone / "hmis") + b"/bad\xff\xfeutf8.csv", "wb") as fh:   # not UTF-8
        fh.write(b"a\n")
    os.mkfifo(zone / "hmis" / "pipe.csv")
    (zone / "hmis" / "upload.csv.part").write_text("in progress")   # waits silently

    refused = _refused(zone)
    assert "symbolic link" in refused["hmis/link_out.csv"]
    assert "symbolic link" in refused["hmis/passwd.csv"]
    assert "symbolic link" in refused["linked_source"]
    assert refused["unknown_agency"] == "no source definition has this folder's name"
    assert refused["stray.csv"] == "not inside a source folder"
    assert refused["hmis/sub"] == "not a regular file"
    assert "file_pattern" in refused["hmis/notes.txt"]
    assert "control characters" in refused["hmis/bad\\x07name.csv"]
    assert "control characters" in refused["hmis/forged\\nline.csv"]
    assert "not UTF-8" in refused["hmis/bad\\xff\\xfeutf8.csv"]
    assert all(name.isprintable() for name in refused)
    assert refused["hmis/pipe.csv"] == "not a regular file"
    assert not any("upload" in name for name in refused)
    assert len(landing.scan(zone, sources)) == delivered   # nothing refused is delivered
    with pytest.raises(FileNotFoundError, match="symbolic links are never followed"):
        landing.find_landed(zone, sources["hmis"], "passwd.csv@" + "0" * 12)


def test_an_upper_case_extension_is_a_delivery(zone):
    src = next(p for p in (zone / "hmis").iterdir())
    shutil.copy(src, zone / "hmis" / "HMIS_EXTRA.CSV")
    (zone / "hmis" / "HMIS_EXTRA.CSV").write_bytes(src.read_bytes() + b"\n")
    names = [f.name for f in landing.scan(zone, load_sources())]
    assert "hmis/HMIS_EXTRA.CSV" in names


def _tick(instance, cursor=None):
    # As the daemon does: resources are set up for the tick and torn down after it.
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"lake": LakeResource.from_env()}) as context:
        return landing_sensor(context)


def test_the_sensor_reports_each_refusal_once(zone, tmp_path):
    (zone / "unknown_agency").mkdir()
    with open(bytes(zone / "medicaid") + b"/bad\xff.csv", "wb") as fh:  # a name not UTF-8
        fh.write(b"member_id\n1\n")
    lake = Lake(tmp_path / "lake")
    with DagsterInstance.ephemeral() as instance:
        first = _tick(instance)
        second = _tick(instance, first.cursor)
        _tick(instance, second.cursor)
    # The bad name stops nothing: every source's delivery is requested in the first tick.
    assert {r.tags["ids/source"] for r in first.run_requests} == set(load_sources())
    events = pl.from_arrow(audit.read(lake)).filter(pl.col("kind") == "landing_refused")
    assert sorted(m.split(":")[0] for m in events["message"]) == [
        "medicaid/bad\\xff.csv", "unknown_agency"]


def test_a_failed_sensor_tick_is_audited(zone, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise PermissionError("/secret/path/John Smith 123-45-6789")

    monkeypatch.setattr(landing, "survey", broken)
    with DagsterInstance.ephemeral() as instance, pytest.raises(PermissionError):
        _tick(instance)
    events = pl.from_arrow(audit.read(Lake(tmp_path / "lake")))
    failed = events.filter(pl.col("kind") == "sensor_tick_failed")
    assert failed.height == 1
    assert "PermissionError" in failed["message"][0]
    assert "John" not in failed["message"][0] + failed["details"][0]
