"""The lake on object storage: LAKE_ROOT=s3://bucket/prefix against a local S3-compatible
server (moto's server mode, started here on 127.0.0.1 and stopped at the end), the whole
demo graph materialized there by the real pipeline, and what it wrote compared with the
same build on a local disk."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ids_lakehouse import audit, config, delta, storage
from ids_lakehouse.config import Lake
from ids_lakehouse.storage import ObjectPath, StorageError
from tests.conftest import INSTANCE_YAML, PUBLISHED_KEY, Built, build_everything

SERVER_LIFETIME_S = 900     # the server stops itself after this, whatever happens here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1, and the environment that points delta-rs, pyarrow
    and DuckDB at it (test credentials: moto accepts any)."""
    port = _free_port()
    server = subprocess.Popen(
        ["timeout", str(SERVER_LIFETIME_S), sys.executable, "-m", "moto.server",
         "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1",
               "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _bucket(env: dict[str, str], name: str | None = None) -> str:
    import boto3

    name = name or f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(s3_server, monkeypatch) -> str:
    """A fresh bucket; the environment set for it. Returns the bucket's name."""
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    storage._filesystem.cache_clear()        # the endpoint comes from this environment
    return _bucket(s3_server)


@pytest.fixture(scope="module")
def s3_build(s3_server, tmp_path_factory, tiny_landing) -> Iterator[tuple[Built, str]]:
    """Every asset materialized once by the real pipeline with the lake on the S3 server:
    the same population, key and instance set-up as conftest's `published_build`."""
    from pipelines.demo import Outcome

    root = tmp_path_factory.mktemp("s3build")
    shutil.copytree(tiny_landing, root / "landing")
    (root / "dagster_home").mkdir()
    (root / "dagster_home" / "dagster.yaml").write_text(INSTANCE_YAML)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    url = f"s3://{bucket}/state/lakehouse"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.items():
            mp.setenv(name, value)
        storage._filesystem.cache_clear()
        _bucket(s3_server, bucket)
        built = Built(lake=Path("/nonexistent-local-lake"), landing=root / "landing",
                      anchors=root / "anchors.jsonl", dagster_home=root / "dagster_home",
                      outcome=Outcome())
        mp.chdir(root)                    # anything written to a relative local path shows
        mp.setenv("DAGSTER_HOME", str(built.dagster_home))
        build_everything(mp, built, url)
        yield built, url


def _tables(root: Path | ObjectPath) -> dict[str, int]:
    from pipelines.demo import table_counts

    return dict(table_counts(root))


def test_the_demo_graph_runs_green_on_s3_and_writes_what_a_local_lake_holds(
        s3_build, published_build, s3_server, monkeypatch):
    built, url = s3_build
    assert not built.outcome.runs_failed and not built.outcome.checks_failed, built.outcome
    assert built.outcome.runs_ok > 0 and built.outcome.checks_passed > 0
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    remote, local = _tables(ObjectPath(url)), _tables(published_build.lake)
    # The same tables with the same rows as the same build on a local disk (the audit
    # log excepted: it also records where each step ran and who ran it, so may differ).
    assert set(remote) == set(local)
    differ = {t: (remote[t], local[t]) for t in remote
              if remote[t] != local[t] and not t.startswith("restricted/audit")}
    assert not differ
    assert remote["internal/silver/person_record"] > 0
    # Nothing of the lake landed on the local disk: no lake folder, only the local state
    # (locks and spill) under the Dagster home.
    assert not (built.landing.parent / "lake").exists()
    local_state = list((built.dagster_home / "lake-local").iterdir())
    assert len(local_state) == 1
    lake = Lake(ObjectPath(url))
    # Plain files went to the store too: the model, the data docs, the catalog, releases.
    assert lake.models("linkage").glob("linkage_model_v0001.json")
    assert (lake.docs("data_docs") / "results.json").is_file()
    assert (lake.docs("catalog") / "catalog.json").is_file()
    from ids_lakehouse import releases
    from ids_lakehouse.agreements import load_agreements

    for agreement in load_agreements().values():
        versions = releases.published(lake, agreement)
        assert versions, agreement.id
        manifest = (versions[-1] / "manifest.json").read_text()
        import hashlib
        import json

        for f in json.loads(manifest)["files"]:
            data = (versions[-1] / f["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"]


def test_the_audit_log_on_s3_verifies_and_the_warehouse_reads_it(s3_build, s3_server,
                                                                  monkeypatch):
    from ids_lakehouse import warehouse

    built, url = s3_build
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", PUBLISHED_KEY)
    monkeypatch.setenv("IDS_AUDIT_ANCHORS", str(built.anchors))
    monkeypatch.setenv("DAGSTER_HOME", str(built.dagster_home))
    lake = Lake(ObjectPath(url))
    result = audit.verify(lake)
    assert result.intact, result.problems
    assert result.events > 0
    with warehouse.connect(lake) as con:
        research = con.execute("SELECT count(*) FROM research.persons").fetchone()[0]
        assert research == delta.count(lake.gold("research_person")) > 0


def test_delta_commits_on_s3_are_safe_between_concurrent_writers(s3, tmp_path):
    """Four processes append to one table at once: every commit lands (delta-rs commits
    with a conditional put, which the server honours, and retries an append that lost
    the race). The table exists first: two creations of one table conflict (refused)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    url = f"s3://{s3}/t/concurrent"
    write_deltalake(url, pa.table({"w": [-1], "i": [-1]}), mode="append")
    script = ("import sys, pyarrow as pa\nfrom deltalake import write_deltalake\n"
              "for i in range(8):\n"
              "    write_deltalake(sys.argv[1], pa.table({'w': [int(sys.argv[2])], 'i': [i]}),"
              " mode='append')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, url, str(w)],
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-600:] for e in errors]
    rows = delta.frame(url)
    assert rows.height == 33 and rows.unique().height == 33
    assert delta.table(url).version() == 32


def test_object_paths_read_write_list_and_delete(s3):
    root = ObjectPath(f"s3://{s3}/p")
    (root / "a" / "x.json").write_text("{}")
    (root / "a" / "y.parquet").write_bytes(b"PAR1")
    (root / "b" / "c" / "_delta_log" / "0.json").write_text("")
    assert (root / "a").is_dir() and (root / "a" / "x.json").is_file()
    assert not (root / "nothing").exists()
    assert sorted(p.name for p in (root / "a").glob("*.json")) == ["x.json"]
    assert [str(p) for p in root.glob("**/_delta_log")] == [f"s3://{s3}/p/b/c/_delta_log"]
    storage.rmtree(root / "a")
    assert not (root / "a").exists() and (root / "b").is_dir()
    with pytest.raises(StorageError):
        root / "../elsewhere"


@pytest.mark.parametrize("value", ["ftp://bucket/lake", "s3:///lake", "s3://b/lake?x=1",
                                   "http://example.org/lake", "s3://AKIA:secret@b/lake",
                                   "s3://b/lake/../other", "s3://b/%2e%2e/x", "s3://b/./x",
                                   "s3://b/lake#", "s3://b/lake?", "s3://b/la#ke/x",
                                   "s3://Bucket/lake", "s3://b//lake"])
def test_a_lake_root_url_the_lake_cannot_use_is_refused(value, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", value)
    with pytest.raises(StorageError):
        config.lake_root()


def test_one_lake_has_one_spelling(monkeypatch):
    """Its local folder (locks) and its audit name derive from the root: two spellings of
    one lake would not share them."""
    for spelling in ("S3://b/lake/", "s3://b/lake", "s3://b/lake//"):
        monkeypatch.setenv("LAKE_ROOT", spelling)
        assert str(config.lake_root()) == "s3://b/lake"


def test_object_path_parts_stay_inside_the_lake_and_stray_keys_do_not_stop_a_listing(
        s3, s3_server):
    import boto3

    root = ObjectPath(f"s3://{s3}/p")
    for part in ("", "a#b", "a?b", "a//b", "../x", "a/./b", "/abs"):
        with pytest.raises(StorageError):
            root / part
    (root / "a" / "x.json").write_text("{}")
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"],
                 region_name="us-east-1").put_object(Bucket=s3, Key="p/a/..", Body=b"")
    assert "x.json" in {p.name for p in (root / "a").iterdir()}


def test_the_audit_chain_holds_with_writers_on_two_machines(s3, tmp_path, monkeypatch):
    """Two processes with their own local folders (two pods: no shared lock) record
    events at once: each commit is made on the version its chain was read from, so none
    is chained on a head another took; the log verifies with every seq once."""
    url = f"s3://{s3}/lake"
    env = {**os.environ, "LAKE_ROOT": url, "IDS_PSEUDONYM_KEY": PUBLISHED_KEY,
           "DAGSTER_HOME": str(tmp_path / "home"),
           "IDS_AUDIT_ANCHORS": str(tmp_path / "anchors.jsonl")}
    script = ("import sys\nfrom ids_lakehouse import audit, config\nlake = config.lake()\n"
              "for i in range(int(sys.argv[1])):\n"
              "    audit.record(lake, 'test_event', f'writer {sys.argv[2]} #{i}', via='test')\n")
    subprocess.run([sys.executable, "-c", script, "1", "first"], env=env, check=True,
                   timeout=120)
    procs = [subprocess.Popen([sys.executable, "-c", script, "12", w],
                              env=env | {"IDS_LAKE_LOCAL": str(tmp_path / f"local-{w}")},
                              stderr=subprocess.PIPE, text=True) for w in ("a", "b")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-600:] for e in errors]
    for name in ("LAKE_ROOT", "IDS_PSEUDONYM_KEY", "DAGSTER_HOME", "IDS_AUDIT_ANCHORS"):
        monkeypatch.setenv(name, env[name])
    lake = config.lake()
    seqs = sorted(e["seq"] for e in audit.read(lake).to_pylist())
    assert seqs == list(range(1, 26))
    result = audit.verify(lake)
    assert result.intact, result.problems


def test_services_that_serve_local_files_refuse_an_object_store_lake(monkeypatch, tmp_path):
    from ids_lakehouse.sharing.server import Settings, create_app

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    lake = Lake(ObjectPath("s3://somewhere/lake"))
    with pytest.raises(StorageError, match="local disk"):
        create_app(lake, Settings(public_url="http://127.0.0.1:1"))
