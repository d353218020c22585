"""The steward command line on a real lake: every bad argument is one `error:` line on
stderr and exit status 2, with nothing recorded; a good decision is recorded and audited."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.identity import mpi

REPO = Path(__file__).resolve().parents[1]
STEWARD = "steward@example.gov"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_silver) -> Lake:
    """The tiny lake with its identity index built (read-only: copy before writing)."""
    lake = Lake(tmp_path_factory.mktemp("steward") / "lake")
    shutil.copytree(tiny_silver.root, lake.root)
    records = pl.from_arrow(delta.read(lake.silver("person_record")))
    mpi.update(lake, records, "setup")
    return lake


@pytest.fixture(scope="module")
def two_ids(indexed) -> tuple[str, str]:
    ids = pl.from_arrow(delta.read(indexed.identity("person_xref"), columns=["unique_id"]))
    left, right = ids.sort("unique_id")["unique_id"][:2].to_list()
    return left, right


def steward(lake_root: Path, left: str, right: str, *, decision: str = "non_match",
            who: str = STEWARD, reason: str = "twins", extra: list[str] | None = None
            ) -> subprocess.CompletedProcess:
    args = ["--left", left, "--right", right, "--decision", decision, "--steward", who,
            "--reason", reason] if extra is None else extra
    env = {**os.environ, "LAKE_ROOT": str(lake_root)}
    return subprocess.run([sys.executable, "-m", "ids_lakehouse", "steward", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def recorded(lake: Lake) -> tuple[int, int]:
    """Rows in identity/steward_decisions and in the audit log."""
    return delta.count(lake.identity("steward_decisions")), delta.count(lake.audit())


def refused(lake: Lake, *args, **kw) -> str:
    """Run the command expecting a refusal; return its one stderr line."""
    before = recorded(lake)
    done = steward(lake.root, *args, **kw)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert recorded(lake) == before
    return lines[0]


def test_an_id_not_in_the_index_is_named_without_personal_data(indexed, two_ids):
    left, right = two_ids
    assert refused(indexed, "hmis:no-such-record", right) == \
        "error: --left hmis:no-such-record is not in the person index"
    assert refused(indexed, left, "medicaid:no-such-record") == \
        "error: --right medicaid:no-such-record is not in the person index"


@pytest.mark.parametrize("bad", ["12345", ":12345", "hmis:", "hmis:   ", "hmis:1\nSmith",
                                 "hmis:" + "9" * 300])
def test_a_malformed_id_is_refused_without_echoing_it(indexed, two_ids, bad):
    line = refused(indexed, two_ids[0], bad)
    assert line == "error: --right is not a unique_id of the form source:record_id"


def test_a_record_against_itself_is_refused(indexed, two_ids):
    assert refused(indexed, two_ids[0], two_ids[0]) == \
        "error: --left and --right are the same record; a decision needs two different " \
        "records"


@pytest.mark.parametrize("who", ["someone", "a@b", "a b@example.gov", "a@@example.gov",
                                 "@example.gov", "a@example.gov ", "a@.gov", "a@example.",
                                 "a@exa mple.gov", ""])
def test_a_malformed_steward_email_is_refused(indexed, two_ids, who):
    assert refused(indexed, *two_ids, who=who) == \
        "error: --steward must be the steward's e-mail address (name@domain.tld, no spaces)"


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_an_empty_reason_is_refused(indexed, two_ids, reason):
    assert refused(indexed, *two_ids, reason=reason) == \
        "error: --reason is empty; say why the records are (not) the same person"


def test_an_overlong_reason_is_refused(indexed, two_ids):
    assert refused(indexed, *two_ids, reason="x" * (mpi.MAX_REASON + 1)) == \
        "error: --reason is 1,001 characters; keep it to 1,000 at most"


def test_an_unknown_decision_or_a_missing_argument_is_one_line(indexed, two_ids):
    assert "invalid choice" in refused(indexed, *two_ids, decision="maybe")
    left, right = two_ids
    line = refused(indexed, left, right, extra=["--left", left, "--right", right,
                                                "--decision", "match", "--steward", STEWARD])
    assert line == "error: the following arguments are required: --reason (see --help)"


def test_a_lake_without_an_identity_index_says_to_build_it(silver_lake, two_ids):
    assert not delta.exists(silver_lake.identity("person_xref"))
    assert refused(silver_lake, *two_ids) == \
        "error: the identity index is not built yet (no person_xref table): run the " \
        "identity asset first"


def test_a_lake_root_that_does_not_exist_is_refused(tmp_path, two_ids):
    missing = Lake(tmp_path / "no-lake-here")
    assert refused(missing, *two_ids) == \
        f"error: no lake at {missing.root}: set LAKE_ROOT to an existing lake"
    assert not missing.root.exists()


def test_a_good_decision_is_recorded_and_audited(indexed, two_ids, tmp_path):
    lake = Lake(tmp_path / "lake")
    shutil.copytree(indexed.root, lake.root)
    left, right = two_ids
    decisions_before, audit_before = recorded(lake)
    done = steward(lake.root, left, right, decision="match", reason="same person")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"recorded: match for {left} / {right}")
    assert recorded(lake) == (decisions_before + 1, audit_before + 1)
    row = mpi.steward_decisions(lake).row(0, named=True)
    assert {row["unique_id_l"], row["unique_id_r"]} == {left, right}
    assert (row["decision"], row["steward"], row["reason"]) == \
        ("match", STEWARD, "same person")


@pytest.mark.parametrize("field,value,said", [
    ("reason", "twins\nsecond line", "--reason holds control characters"),
    ("reason", "\x1b[31mred\x1b[0m", "--reason holds control characters"),
    ("who", "ana\u200b@ids.example.gov", "--steward holds control characters"),
])
def test_control_characters_are_refused(indexed, two_ids, field, value, said):
    assert refused(indexed, *two_ids, **{field: value}).startswith(f"error: {said}")


def test_text_that_is_not_utf8_is_refused_in_one_line(indexed, two_ids):
    """Arguments arrive as bytes from the shell; undecodable ones must not crash."""
    before = recorded(indexed)
    args = [b"--left", two_ids[0].encode(), b"--right", two_ids[1].encode(),
            b"--decision", b"non_match", b"--steward", STEWARD.encode(), b"--reason",
            b"caf\xe9 (latin-1)"]
    done = subprocess.run([sys.executable, "-m", "ids_lakehouse", "steward", *args],
                          cwd=REPO, env={**os.environ, "LAKE_ROOT": str(indexed.root)},
                          capture_output=True, timeout=300)
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert done.stderr.decode() == "error: --reason is not valid UTF-8 text\n"
    assert recorded(indexed) == before


def test_an_unknown_option_is_one_line(indexed, two_ids):
    left, right = two_ids
    line = refused(indexed, left, right, extra=[
        "--left", left, "--right", right, "--decision", "match", "--steward", STEWARD,
        "--reason", "same", "--surprise"])
    assert "unrecognized arguments" in line


@pytest.mark.parametrize("command", ["demo", "instance"])
def test_the_dagster_commands_say_where_they_moved(command, capsys):
    from ids_lakehouse.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command])
    assert exit_.value.code == 2
    assert f"python -m pipelines {command}" in capsys.readouterr().err
