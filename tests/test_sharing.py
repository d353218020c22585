"""The sharing gateway on the path a partner uses: a profile issued by the CLI, the real
`delta-sharing` client over real HTTP on 127.0.0.1 against the gateway, the data compared
with the release manifest's hashes; and the gateway refusing what it must, audited, with
no token or value in its log."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import delta_sharing
import polars as pl
import pyarrow.parquet as pq
import pytest
import requests
import uvicorn

from ids_lakehouse import audit, delta, releases
from ids_lakehouse.agreements import load_agreements
from ids_lakehouse.cli import main
from ids_lakehouse.config import Lake
from ids_lakehouse.sharing import tokens
from ids_lakehouse.sharing.server import Settings, create_app

RESEARCH = "dsa-housing-education-research"
INDICATORS = "dsa-public-indicators"
OPERATOR = "data-steward@ids.example.gov"


class Gateway:
    def __init__(self, lake: Lake, settings: Settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(lake, settings), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self.port}/delta-sharing"

    def __enter__(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the gateway did not start in 30 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def gateway(published_copy) -> Iterator[tuple[Lake, Gateway]]:
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(url_ttl_s=60, rate_per_minute=10_000)) as gw:
        yield lake, gw


def _profile(tmp_path: Path, gw: Gateway, agreement: str, name: str = "p") -> Path:
    out = tmp_path / f"{name}.share"
    assert main(["share-profile", "--agreement", agreement, "--out", str(out),
                 "--operator", OPERATOR, "--endpoint", gw.endpoint]) == 0
    return out


def _token(profile: Path) -> str:
    return str(json.loads(profile.read_text())["bearerToken"])


def test_a_partner_reads_a_release_with_the_stock_client(gateway, tmp_path):
    lake, gw = gateway
    agreement = load_agreements()[RESEARCH]
    profile = _profile(tmp_path, gw, RESEARCH)
    assert profile.stat().st_mode & 0o777 == 0o600
    client = delta_sharing.SharingClient(str(profile))
    listed = {(t.share, t.schema, t.name) for t in client.list_all_tables()}
    assert listed == {(RESEARCH, "research", m) for m in agreement.release}

    latest = releases.published(lake, agreement)[-1]
    manifest = json.loads((latest / releases.MANIFEST).read_text())
    for entry in manifest["files"]:
        url = f"{profile}#{RESEARCH}.research.{entry['mart']}"
        got = pl.from_pandas(delta_sharing.load_as_pandas(url))
        want = pl.from_arrow(pq.read_table(latest / entry["name"]))
        assert got.height == entry["rows"] and got.equals(want)
        # The bytes the gateway hands out are the manifest's.
        response = requests.post(
            f"{gw.endpoint}/shares/{RESEARCH}/schemas/research/tables/{entry['mart']}/query",
            json={}, headers={"Authorization": f"Bearer {_token(profile)}"}, timeout=30)
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert response.headers["delta-table-version"] == str(int(latest.name[1:]))
        data = requests.get(lines[2]["file"]["url"], timeout=30).content
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == lines[2]["file"]["id"]


def _get(gw: Gateway, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(gw.endpoint + path, headers=headers, timeout=30)


def test_the_gateway_refuses_what_it_must_and_audits_it(gateway, tmp_path):
    lake, gw = gateway
    research = _token(_profile(tmp_path, gw, RESEARCH, "r"))
    public = _token(_profile(tmp_path, gw, INDICATORS, "i"))
    before = audit.read(lake).num_rows

    assert _get(gw, "/shares").status_code == 401                          # no token
    assert _get(gw, "/shares", "not-a-token").status_code == 401           # malformed
    assert _get(gw, "/shares", tokens.PREFIX + "x" * 43).status_code == 401  # unknown
    refused = _get(gw, f"/shares/{INDICATORS}/schemas", research)          # another share
    assert refused.status_code == 404
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 404
    for path in (f"/shares/..%2F{RESEARCH}/schemas", f"/shares/{RESEARCH}/schemas/..%2F..",
                 f"/shares/{RESEARCH}/schemas/research/tables/..%2F..%2Fmanifest.json/version",
                 f"/shares/{RESEARCH}/schemas/research/tables/indicators/version",
                 "/shares/%27%20OR%201%3D1--/schemas"):
        assert _get(gw, path, research).status_code == 404, path
    assert _get(gw, "/shares", public).json()["items"] == [{"name": INDICATORS,
                                                            "id": INDICATORS}]

    # A file URL is the credential for one file, for a while: tampered, it is refused.
    query = requests.post(
        f"{gw.endpoint}/shares/{RESEARCH}/schemas/research/tables/research_person/query",
        json={}, headers={"Authorization": f"Bearer {research}"}, timeout=30)
    url = json.loads(query.text.splitlines()[2])["file"]["url"]
    assert requests.get(url, timeout=30).status_code == 200
    for bad in (url.replace("research_person", "research_participation"),
                url.replace("sig=", "sig=0"), url.split("?")[0]):
        assert requests.get(bad, timeout=30).status_code == 403, bad

    events = pl.from_arrow(audit.read(lake)).slice(before)
    refusals = events.filter(pl.col("kind") == "sharing_refused")
    assert refusals.height >= 10
    text = "".join(events["message"].to_list() + events["details"].to_list())
    assert research not in text and public not in text and "x" * 43 not in text
    assert "unknown token" in text and "malformed token" in text


def test_revoked_and_expired_tokens_and_ended_agreements_read_nothing(gateway, tmp_path):
    lake, gw = gateway
    profile = _profile(tmp_path, gw, RESEARCH)
    token = _token(profile)
    assert _get(gw, "/shares", token).status_code == 200
    issued = delta.read(lake.table("sharing", "tokens")).to_pylist()
    assert [r["token_sha256"] for r in issued] == [tokens.digest(token)]   # only a hash
    token_id = issued[0]["token_id"]
    assert main(["share-revoke", "--token-id", token_id, "--operator", OPERATOR]) == 0
    assert _get(gw, "/shares", token).status_code == 401
    with pytest.raises(Exception, match="401"):
        delta_sharing.SharingClient(str(profile)).list_all_tables()

    # Issued long ago: expired now (its lifetime never outlasts the agreement either).
    agreement = load_agreements()[RESEARCH]
    then = dt.datetime.combine(agreement.effective, dt.time(9), tzinfo=dt.timezone.utc)
    old, _, expires = tokens.issue(lake, RESEARCH, OPERATOR, days=1, now=then)
    assert expires <= then + dt.timedelta(days=1)
    assert _get(gw, "/shares", old).status_code == 401
    _, _, capped = tokens.issue(lake, RESEARCH, OPERATOR, days=100_000)
    assert capped.date() == agreement.expires


def test_a_profile_is_never_issued_for_an_unknown_agreement_or_overwritten(gateway, tmp_path,
                                                                          capsys):
    _, gw = gateway
    out = tmp_path / "x.share"
    assert main(["share-profile", "--agreement", "no-such", "--out", str(out),
                 "--operator", OPERATOR]) == 2
    assert "no agreement" in capsys.readouterr().err and not out.exists()
    _profile(tmp_path, gw, RESEARCH, "x")
    assert main(["share-profile", "--agreement", RESEARCH, "--out", str(out),
                 "--operator", OPERATOR]) == 2
    assert "never overwritten" in capsys.readouterr().err
