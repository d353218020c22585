"""The sharing gateway on the path a partner uses: a profile issued by the CLI, the real
`delta-sharing` client over real HTTP on 127.0.0.1 against the gateway, the data compared
with the release manifest's hashes; and the gateway refusing what it must, audited, with
no token or value in its log."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
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
        settings.public_url = f"http://127.0.0.1:{self.port}"
        self.lake = lake
        self.app = create_app(lake, settings)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self.port}/delta-sharing"

    def __enter__(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the gateway did not start in 30 s"
            time.sleep(0.05)
        return self

    def audited(self) -> pl.DataFrame:
        """The audit log, once the gateway's spooled events are committed."""
        self.app.state.spool.flush()
        return pl.from_arrow(audit.read(self.lake))

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def gateway(published_copy) -> Iterator[tuple[Lake, Gateway]]:
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(url_ttl_s=60, rate_per_minute=10_000,
                                refusals_per_minute=40, token_recheck_s=0)) as gw:
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
    before = gw.audited().height

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

    events = gw.audited().slice(before)
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


def _query(gw: Gateway, token: str, body: bytes = b"{}", table: str = "research_person",
           **headers: str) -> requests.Response:
    return requests.post(
        f"{gw.endpoint}/shares/{RESEARCH}/schemas/research/tables/{table}/query", data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 **headers}, timeout=30)


def test_payloads_headers_and_urls_the_gateway_does_not_trust(gateway, tmp_path):
    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, RESEARCH))
    assert _query(gw, token, b"[" + b"{}," * 20_000 + b"{}]").status_code == 413
    for body in (b'{"version": NaN}', b'{"version": 0}', b"not json",
                 b'{"timestamp": "2020-01-01T00:00:00Z"}', b'{"startingVersion": 1}'):
        bad = _query(gw, token, body)
        assert bad.status_code == 400, body
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "NaN" not in bad.text and "2020" not in bad.text    # no input echoed
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.putrequest("GET", "/delta-sharing/shares")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Authorization", "Bearer other")
    conn.endheaders()
    assert conn.getresponse().status == 400     # two Authorization headers
    conn.close()
    # File URLs are built on the configured public URL, not on the request's Host.
    forged = _query(gw, token, Host="evil.example")
    url = json.loads(forged.text.splitlines()[2])["file"]["url"]
    assert url.startswith(f"http://127.0.0.1:{gw.port}/")
    assert forged.headers["cache-control"] == "no-store"

    # A download is audited with who, which table and version; a revoked token's URLs die
    # at once (not at their expiry).
    before = gw.audited().height
    assert requests.get(url, timeout=30).status_code == 200
    got = gw.audited().slice(before)
    download = [json.loads(d) for d in got["details"].to_list()
                if json.loads(d).get("endpoint", "").endswith("/files/{share}/{version}/{table}")]
    assert download and download[0]["table"] == "research_person" and download[0]["token_id"]
    token_id = download[0]["token_id"]
    assert main(["share-revoke", "--token-id", token_id, "--operator", OPERATOR]) == 0
    assert requests.get(url, timeout=30).status_code == 403


def test_a_flood_of_refused_requests_is_throttled_and_audited_in_aggregate(gateway):
    lake, gw = gateway
    before = gw.audited().height
    codes = [_get(gw, "/shares", tokens.PREFIX + "Z" * 43).status_code for _ in range(60)]
    assert codes[:40] == [401] * 40 and set(codes[40:]) == {429}
    limited = _get(gw, "/shares", tokens.PREFIX + "Z" * 43)
    assert limited.headers["retry-after"] == "60"
    events = gw.audited().slice(before)
    assert events.filter(pl.col("kind") == "sharing_refused").height == 40
    assert 1 <= events.filter(pl.col("kind") == "sharing_throttled").height <= 2


def test_a_revoked_token_is_refused_within_the_registry_recheck(published_copy, tmp_path):
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(token_recheck_s=1.0)) as gw:
        token = _token(_profile(tmp_path, gw, RESEARCH))
        assert _get(gw, "/shares", token).status_code == 200
        token_id = delta.read(lake.table("sharing", "tokens")).to_pylist()[0]["token_id"]
        assert main(["share-revoke", "--token-id", token_id, "--operator", OPERATOR]) == 0
        revoked = time.monotonic()
        while _get(gw, "/shares", token).status_code == 200:
            assert time.monotonic() - revoked < 1.5, "a revoked token outlived the recheck"
            time.sleep(0.05)


def test_a_gateway_killed_mid_service_loses_no_audit_event(published_copy, tmp_path):
    """Events are spooled and committed in groups; kill -9 between the two, and the next
    gateway to start commits them (once: a flush that committed before dying is not
    committed again)."""
    lake = Lake(published_copy.lake)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"
    env = os.environ | {"IDS_SHARING_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    token = _token(_profile(tmp_path, type("G", (), {"endpoint": endpoint})(), RESEARCH))
    before = audit.read(lake).num_rows
    server = subprocess.Popen([sys.executable, "-m", "ids_lakehouse", "serve", "--host",
                               "127.0.0.1", "--port", str(port)], env=env,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(endpoint + "/shares", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        codes = [requests.get(endpoint + "/shares", timeout=5,
                              headers={"Authorization": f"Bearer {token}"}).status_code
                 for _ in range(30)]
        assert codes == [200] * 30
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    spooled = list(audit.spool_dir(lake).glob("*.jsonl"))
    assert len(spooled) == 1
    assert audit.Spool.recover(lake) + (audit.read(lake).num_rows - before) >= 31
    events = pl.from_arrow(audit.read(lake)).slice(before)
    served = events.filter(pl.col("kind") == "sharing_request")
    assert served.height == 30 and served["event_id"].n_unique() == 30
    assert not list(audit.spool_dir(lake).glob("*.jsonl"))
    assert audit.verify(lake).intact
    assert token not in "".join(events["details"].to_list())
