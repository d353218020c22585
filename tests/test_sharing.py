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
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
from ids_lakehouse.sharing import deadline, server, tokens
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
            self.app, host="127.0.0.1", port=self.port, log_level="warning",
            http=deadline.Protocol))            # as `serve` runs it
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


def _released(lake: Lake, mart: str = "research_person") -> tuple[Path, dict[str, Any]]:
    """The research agreement's latest release folder and its manifest entry for `mart`."""
    latest = releases.published(lake, load_agreements()[RESEARCH])[-1]
    entry = next(f for f in json.loads((latest / releases.MANIFEST).read_text())["files"]
                 if f["mart"] == mart)
    return latest, entry


def _file_url(gw: Gateway, token: str, mart: str = "research_person") -> str:
    response = requests.post(
        f"{gw.endpoint}/shares/{RESEARCH}/schemas/research/tables/{mart}/query", json={},
        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200
    return str(json.loads(response.text.splitlines()[2])["file"]["url"])


def _raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with headers sent as given (latin-1 bytes included), nothing added."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("GET", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def _ranges_hold(url: str, data: bytes, sha256: str) -> None:
    """Every form of a single byte range (RFC 9110), and what is not one, against the
    manifest's bytes: the same whether the gateway holds the file or reads it from disk."""
    size, etag = len(data), f'"{sha256}"'
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size
    assert head.headers["accept-ranges"] == "bytes" and head.headers["etag"] == etag
    assert head.content == b""
    for wanted, (start, end) in {"bytes=0-3": (0, 4), "bytes=-8": (size - 8, size),
                                 "bytes=100-": (100, size), "bytes=10-10": (10, 11),
                                 "BYTES = 0-3": (0, 4), f"bytes=5-{size + 50}": (5, size),
                                 f"bytes=-{size + 9}": (0, size)}.items():
        got = requests.get(url, headers={"Range": wanted}, timeout=30)
        assert got.status_code == 206, wanted
        assert got.content == data[start:end], wanted
        assert got.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", wanted
        ranged_head = requests.head(url, headers={"Range": wanted}, timeout=30)
        assert ranged_head.status_code == 206
        assert int(ranged_head.headers["content-length"]) == end - start
    assert got.content[-4:] == b"PAR1"
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        got = requests.get(url, headers={"Range": unsatisfiable}, timeout=30)
        assert got.status_code == 416, unsatisfiable
        assert got.headers["content-range"] == f"bytes */{size}" and got.content == b""
    # Not one range this serves, or a validator that is not the file's: the whole file.
    for headers in ({"Range": "bytes=0-3,10-20"}, {"Range": "bytes=0-0,0-0,0-0"},
                    {"Range": "lines=1-2"}, {"Range": "bytes=9-3"}, {"Range": "bytes=a-b"},
                    {"Range": "bytes=-"}, {"Range": "bytes=\u00b2-3"},
                    {"Range": "bytes=0-\u00b9"}, {"Range": "bytes=-\u00b3"},
                    {"Range": "bytes=" + "9" * 4301 + "-"},
                    {"Range": "bytes=0-3", "If-Range": '"another"'},
                    {"Range": "bytes=0-3", "If-Range": etag.upper()}):
        assert _raw_get(url, headers) == (200, data), headers
    assert requests.get(url, headers={"Range": "bytes=0-3", "If-Range": etag},
                        timeout=30).content == data[:4]


def test_file_urls_serve_byte_ranges_of_the_released_bytes(gateway, tmp_path):
    """The stock client reads a file's footer, then its body, by byte ranges."""
    lake, gw = gateway
    latest, entry = _released(lake)
    _ranges_hold(_file_url(gw, _token(_profile(tmp_path, gw, RESEARCH))),
                 (latest / entry["name"]).read_bytes(), entry["sha256"])
    # Numbers that are not ASCII digits, or too long for one, are a refused URL.
    for bad in ("expires=%C2%B2", "expires=" + "9" * 4301):
        assert _raw_get(f"{gw.endpoint}/files/x/1/y?token_id=a&{bad}&sig=b")[0] == 403


def test_a_file_too_large_to_hold_in_memory_is_read_from_disk(published_copy, tmp_path):
    lake = Lake(published_copy.lake)
    latest, entry = _released(lake)
    data = (latest / entry["name"]).read_bytes()
    with Gateway(lake, Settings(token_recheck_s=0, file_cache_mb=0)) as gw:
        profile = _profile(tmp_path, gw, RESEARCH)
        got = delta_sharing.load_as_pandas(f"{profile}#{RESEARCH}.research.research_person")
        assert pl.from_pandas(got).equals(pl.from_arrow(pq.read_table(latest / entry["name"])))
        _ranges_hold(_file_url(gw, _token(profile)), data, entry["sha256"])


@pytest.mark.parametrize("file_cache_mb", [256, 0], ids=["held", "from-disk"])
def test_a_release_file_altered_after_publication_is_never_served(published_copy,
                                                                  tmp_path, file_cache_mb):
    lake = Lake(published_copy.lake)
    latest, entry = _released(lake)
    path = latest / entry["name"]
    released = path.read_bytes()
    altered = bytearray(released)
    altered[len(altered) // 2] ^= 0xFF          # same size, one byte changed
    path.write_bytes(bytes(altered))
    with Gateway(lake, Settings(token_recheck_s=0, file_cache_mb=file_cache_mb)) as gw:
        profile = _profile(tmp_path, gw, RESEARCH)
        url = _file_url(gw, _token(profile))
        for method in (requests.get, requests.head):
            got = method(url, headers={"Range": "bytes=0-3"}, timeout=30)
            assert got.status_code == 500 and b"PAR1" not in got.content
        assert requests.get(url, timeout=30).status_code == 500
        with pytest.raises(Exception):
            delta_sharing.load_as_pandas(f"{profile}#{RESEARCH}.research.research_person")
        # Another table of the same release is still served.
        good = requests.get(_file_url(gw, _token(profile), "research_participation"),
                            timeout=30)
        assert good.status_code == 200 and good.content[:4] == b"PAR1"
        # A file of another size is refused before it is read.
        path.write_bytes(released + b"\0" * 1000)
        assert requests.get(url, headers={"Range": "bytes=0-3"}, timeout=30).status_code == 500
        # The released bytes back: served again (checked anew).
        path.write_bytes(released)
        assert requests.get(url, timeout=30).content == released
        events = gw.audited()
    refused = events.filter(pl.col("details").str.contains("release file altered"))
    assert refused.height >= 5


def _rchar() -> int:
    """Bytes this process has read (files and sockets): the gateway runs in it."""
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines()
                    if line.startswith("rchar")).split()[1])


def _more_versions(lake: Lake, n: int) -> list[int]:
    """n more versions, copies of the latest, each renamed into place as a publish does."""
    latest, _ = _released(lake)
    first = int(latest.name[1:])
    for v in range(first + 1, first + 1 + n):
        staging = latest.parent / f".staging-v{v:04d}"
        shutil.copytree(latest, staging)
        os.replace(staging, latest.parent / f"v{v:04d}")
    return list(range(first, first + 1 + n))


def _versioned_url(gw: Gateway, token: str, version: int) -> str:
    response = requests.post(
        f"{gw.endpoint}/shares/{RESEARCH}/schemas/research/tables/research_person/query",
        json={"version": version}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return str(json.loads(response.text.splitlines()[2])["file"]["url"])


def test_files_are_checked_once_and_ranges_never_cost_a_whole_file(published_copy,
                                                                   tmp_path):
    """A file is read whole once, to check it; afterwards a range costs its own bytes,
    even for files the memory no longer holds (60 versions, 1 MiB of memory), and
    concurrent first reads share one check."""
    lake = Lake(published_copy.lake)
    versions = _more_versions(lake, 59)
    _, entry = _released(lake)
    size = entry["bytes"]
    assert 60 * size > 1.2 * 2**20         # more than the memory holds
    with Gateway(lake, Settings(token_recheck_s=0, file_cache_mb=1,
                                rate_per_minute=100_000)) as gw:
        token = _token(_profile(tmp_path, gw, RESEARCH))
        urls = {v: _versioned_url(gw, token, v) for v in versions}
        before = _rchar()
        for _ in range(3):
            for v in versions:
                assert _raw_get(urls[v], {"Range": "bytes=-8"})[0] == 206
        read = _rchar() - before
        assert read < 1.3 * len(versions) * size, read     # each checked once, then 8 bytes

        fresh = _more_versions(lake, 1)[-1]
        url = _versioned_url(gw, token, fresh)
        barrier, codes = threading.Barrier(12), []

        def first_read() -> None:
            barrier.wait()
            codes.append(_raw_get(url, {"Range": "bytes=-8"})[0])

        before = _rchar()
        readers = [threading.Thread(target=first_read) for _ in range(12)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        assert codes == [206] * 12
        assert _rchar() - before < 1.5 * size


def test_file_urls_count_against_the_tokens_rate_and_refusals_against_the_address(
        published_copy, tmp_path):
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(token_recheck_s=0, rate_per_minute=5,
                                refusals_per_minute=3)) as gw:
        url = _file_url(gw, _token(_profile(tmp_path, gw, RESEARCH)))
        codes = [_raw_get(url)[0] for _ in range(8)]
        assert codes[:4] == [200] * 4 and codes[-1] == 429      # the query was the first
        bad = url.replace("sig=", "sig=0")
        assert [_raw_get(bad)[0] for _ in range(6)][-1] == 429


def test_a_url_names_the_bytes_it_was_issued_for(published_copy, tmp_path):
    """A version withdrawn and published again under the same number with other bytes:
    a URL issued for the old bytes is refused, a new one serves the new bytes. A folder
    set aside under another name is not a version."""
    lake = Lake(published_copy.lake)
    latest, entry = _released(lake, "research_participation")
    _, person = _released(lake)
    with Gateway(lake, Settings(token_recheck_s=0)) as gw:
        token = _token(_profile(tmp_path, gw, RESEARCH))
        old_url = _file_url(gw, token, "research_participation")
        assert requests.get(old_url, timeout=30).status_code == 200
        staging = latest.parent / f".staging-{latest.name}"
        shutil.copytree(latest, staging)
        shutil.rmtree(latest)
        other = (staging / person["name"]).read_bytes()
        (staging / entry["name"]).write_bytes(other)
        manifest = json.loads((staging / releases.MANIFEST).read_text())
        for f in manifest["files"]:
            if f["mart"] == "research_participation":
                f.update(bytes=len(other), sha256=hashlib.sha256(other).hexdigest())
        (staging / releases.MANIFEST).write_text(json.dumps(manifest))
        os.replace(staging, latest)
        assert requests.get(old_url, timeout=30).status_code == 403
        assert requests.get(_file_url(gw, token, "research_participation"),
                            timeout=30).content == other

        version = int(latest.name[1:])
        newest = latest.parent / f"v{version + 1:04d}"
        shutil.copytree(latest, newest)
        os.rename(newest, newest.with_name(newest.name + ".withdrawn"))
        path = f"/shares/{RESEARCH}/schemas/research/tables/research_person/version"
        answer = _get(gw, path, token)
        assert answer.status_code == 200
        assert answer.headers["delta-table-version"] == str(version)


def test_a_release_published_while_the_gateway_serves_is_read_at_once(gateway, tmp_path):
    """The gateway lists an agreement's versions again only when its release folder
    changes: a version renamed into place is the latest at the next request."""
    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, RESEARCH))
    agreement = load_agreements()[RESEARCH]
    path = f"/shares/{RESEARCH}/schemas/research/tables/research_person/version"
    for _ in range(3):      # listed, and held
        first = _get(gw, path, token).headers["delta-table-version"]
    latest = releases.published(lake, agreement)[-1]
    staging = latest.parent / f".staging-v{int(first) + 1:04d}"
    shutil.copytree(latest, staging)
    os.replace(staging, latest.parent / f"v{int(first) + 1:04d}")
    assert _get(gw, path, token).headers["delta-table-version"] == str(int(first) + 1)
    url = _file_url(gw, token)
    assert f"/{int(first) + 1}/research_person" in url
    _, entry = _released(lake)
    assert requests.get(url, timeout=30).content == (latest / entry["name"]).read_bytes()


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
    for body in (b'{"version": NaN}', b'{"version": 0}', b"not json", b'{"version": true}',
                 b'{"version": 1, "version": 2}',
                 b'{"timestamp": "2020-01-01T00:00:00Z"}', b'{"startingVersion": 1}'):
        bad = _query(gw, token, body)
        assert bad.status_code == 400, body
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "NaN" not in bad.text and "2020" not in bad.text    # no input echoed
    for option in ("timestamp", "startingTimestamp"):
        assert _get(gw, f"/shares/{RESEARCH}/schemas/research/tables/research_person/version"
                    f"?{option}=2020-01-01T00:00:00Z", token).status_code == 400
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


def serve(port: int, env: dict[str, str], *options: str) -> subprocess.Popen[bytes]:
    """`python -m ids_lakehouse serve` on 127.0.0.1:`port` in its own process group, once
    it answers (the caller kills the group)."""
    server = subprocess.Popen([sys.executable, "-m", "ids_lakehouse", "serve", "--host",
                               "127.0.0.1", "--port", str(port), *options], env=env,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/delta-sharing/shares", timeout=1)
            return server
        except requests.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                os.killpg(server.pid, signal.SIGKILL)
                raise AssertionError("the gateway did not start") from None
            time.sleep(0.1)


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
    server = serve(port, env)
    try:
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


# -- operations lookups ------------------------------------------------------------------

OPERATIONS = "dsa-traveller-followup"


def _lookup(gw: Gateway, token: str | None, body: Any, **headers: str) -> requests.Response:
    data = body if isinstance(body, bytes) or not isinstance(body, dict) else \
        json.dumps(body).encode()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"http://127.0.0.1:{gw.port}/v1/lookups", data=data, timeout=60,
                         headers={"Content-Type": "application/json", **auth, **headers})


def _people(lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Silver person records with their person_id; the latest operations release."""
    records = delta.frame(lake.silver("person_record")).join(
        delta.frame(lake.identity("person_xref"), columns=["source", "source_record_id",
                                                           "person_id"]),
        on=["source", "source_record_id"])
    latest = releases.published(lake, load_agreements()[OPERATIONS])[-1]
    released = pl.read_parquet(latest / "contact_directory.parquet")
    outside = records.filter(~pl.col("person_id").is_in(released["person_id"].implode()))
    return records, released, outside


def _as_known(row: dict[str, Any], ref: str, **changes: Any) -> dict[str, Any]:
    person = {"ref": ref, "first_name": row["first_name"], "last_name": row["last_name"],
              "dob": row["dob"].isoformat(), "phone": row["phone"], "zip": row["zip"]}
    return {k: v for k, v in (person | changes).items() if v is not None}


def test_an_operations_user_looks_people_up(gateway, tmp_path):
    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, OPERATIONS))
    records, released, outside = _people(lake)
    travellers = records.filter(pl.col("source") == "travellers",
                                pl.col("person_id").is_in(released["person_id"].implode()),
                                pl.col("dob").is_not_null(), pl.col("first_name").is_not_null(),
                                pl.col("last_name").is_not_null())
    other = outside.filter(pl.col("dob").is_not_null(), pl.col("first_name").is_not_null())
    assert travellers.height >= 5 and other.height >= 5
    people = [_as_known(r, f"t{i}") for i, r in enumerate(travellers.head(5).iter_rows(named=True))]
    # A typo in a name is no match (a stem looks the same); day and month of birth
    # transposed is a referral.
    typo = travellers.filter(pl.col("first_name").str.len_chars() >= 7).row(0, named=True)
    people.append(_as_known(typo, "typo", first_name=typo["first_name"][:-1] + "X",
                            phone=None))
    swap = travellers.filter(pl.col("dob").dt.day() <= 12,
                             pl.col("dob").dt.day() != pl.col("dob").dt.month()).row(0, named=True)
    people.append(_as_known(swap, "swap", dob=swap["dob"].replace(
        day=swap["dob"].month, month=swap["dob"].day).isoformat()))
    # Known to the index, but not a traveller: never answerable.
    people += [_as_known(r, f"o{i}") for i, r in enumerate(other.head(5).iter_rows(named=True))]
    people.append({"ref": "nobody", "first_name": "Zebulon", "last_name": "Quackenbush",
                   "dob": "1950-02-03", "ssn": "123-45-678"})
    people.append({"ref": "blank", "first_name": "--", "last_name": "Smith",
                   "dob": "1980-01-01"})
    got = _lookup(gw, token, {"people": people})
    assert got.status_code == 200, got.text
    answer = got.json()
    results = {r["ref"]: r for r in answer["results"]}
    assert [r["ref"] for r in answer["results"]] == [p["ref"] for p in people]
    rows = {r["person_id"]: r for r in released.iter_rows(named=True)}
    fields = set(load_agreements()[OPERATIONS].permitted["contact_directory"])
    for i, row in enumerate(travellers.head(5).iter_rows(named=True)):
        r = results[f"t{i}"]
        assert r["outcome"] == "match", r
        assert r["person"]["person_id"] == row["person_id"]
        assert set(r["person"]) == fields
        want = rows[row["person_id"]]
        assert all(r["person"][k] == (want[k].isoformat() if hasattr(want[k], "isoformat")
                                      else want[k]) for k in fields)
        assert set(r) == {"ref", "outcome", "person"}     # no score, no comparison levels
    assert results["typo"]["outcome"] == "no_match"
    assert results["swap"] == {"ref": "swap", "outcome": "refer_for_review"}
    for i in range(5):
        assert set(results[f"o{i}"]) == {"ref", "outcome"}
        assert results[f"o{i}"]["outcome"] == "no_match"
    assert results["nobody"] == {"ref": "nobody", "outcome": "no_match",
                                 "unused": {"ssn": "not_permitted"}}
    assert results["blank"] == {"ref": "blank", "outcome": "invalid",
                                "problems": {"first_name": "unusable"}}
    assert answer["release_version"] >= 1 and answer["model_version"] >= 1

    # Audited: who, the counts of each outcome; never a reference, name or value.
    events = gw.audited().filter(pl.col("details").str.contains("/v1/lookups"))
    event = json.loads(events.filter(pl.col("kind") == "sharing_request")["details"][-1])
    assert event["endpoint"] == "/v1/lookups" and event["agreement"] == OPERATIONS
    assert (event["outcomes"]["match"], event["outcomes"]["refer_for_review"],
            event["outcomes"]["no_match"], event["outcomes"]["invalid"]) == (5, 1, 7, 1)
    text = "".join(events["message"].to_list() + events["details"].to_list())
    for p in people:
        assert f'"{p["ref"]}"' not in text
        assert p["last_name"] not in text and p["dob"] not in text
    assert token not in text


def test_lookups_refuse_what_they_must(gateway, tmp_path):
    lake, gw = gateway
    operations = _token(_profile(tmp_path, gw, OPERATIONS, "o"))
    research = _token(_profile(tmp_path, gw, RESEARCH, "r"))
    one = {"people": [{"ref": "a", "first_name": "Ann", "last_name": "Lee",
                       "dob": "1990-01-01"}]}
    before = gw.audited().height
    assert _lookup(gw, None, one).status_code == 401
    assert _lookup(gw, "idsl_" + "x" * 43, one).status_code == 401
    forbidden = _lookup(gw, research, one)               # a research token
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"].startswith("application/problem+json")
    # Wildcards, partial searches and malformed people are refused, naming the field only.
    for person, field in (({"ref": "a", "last_name": "Lee", "dob": "1990-01-01"},
                           "people.0.first_name"),
                          ({"ref": "a", "first_name": "A*", "last_name": "%",
                            "dob": "1990-13-01"}, "people.0.dob"),
                          ({"ref": "a b", "first_name": "Ann", "last_name": "Lee",
                            "dob": "1990-01-01"}, "people.0.ref"),
                          ({"ref": "a", "first_name": "Ann", "last_name": "Lee",
                            "dob": "1990-01-01T00:00:00"}, "people.0.dob"),
                          ({"ref": "a", "first_name": "Ann", "last_name": "Lee",
                            "dob": "1990-01-01", "SSN 531-77-2211 X": 1},
                           "people.0.(a field not accepted)")):
        bad = _lookup(gw, operations, {"people": [person]})
        assert bad.status_code == 400 and field in bad.json()["detail"], bad.text
        assert "1990" not in bad.text and "Lee" not in bad.text
    assert _lookup(gw, operations, {"people": []}).status_code == 400
    twice = _lookup(gw, operations, {"people": one["people"] * 2})     # the same ref twice
    assert twice.status_code == 400 and "unique" in twice.json()["detail"]
    repeated = _lookup(gw, operations, b'{"people": [{"ref": "a", "first_name": "Ann", '
                       b'"first_name": "Bob", "last_name": "Lee", "dob": "1990-01-01"}]}')
    assert repeated.status_code == 400 and "repeated" in repeated.json()["detail"]
    assert "531-77" not in _lookup(gw, operations, {"people": one["people"],
                                                    "SSN 531-77-2211": 1}).text
    assert _lookup(gw, operations, b"{not json").status_code == 400
    many = [one["people"][0] | {"ref": f"r{i}"} for i in range(101)]
    assert _lookup(gw, operations, {"people": many}).status_code == 413
    assert _lookup(gw, operations, b" " * 300_000).status_code == 413

    def chunked() -> Iterator[bytes]:
        yield b'{"people": ['
        for _ in range(5_000):
            yield json.dumps(one["people"][0]).encode() + b","
        yield b"{}]}"

    assert _lookup(gw, operations, chunked()).status_code == 413  # no Content-Length
    # Hostile strings are names like any other: no error, no match, nothing echoed.
    hostile = [{"ref": f"h{i}", "first_name": s, "last_name": s, "dob": "1990-01-01"}
               for i, s in enumerate(["'; DROP TABLE person_xref; --", "../../etc/passwd",
                                      "\u202eevil", "%00", "ROBERT\u200b", "x" * 100])]
    got = _lookup(gw, operations, {"people": hostile})
    assert got.status_code == 200
    assert {r["outcome"] for r in got.json()["results"]} <= {"no_match", "invalid"}
    events = gw.audited().slice(before)
    refused = events.filter(pl.col("kind") == "sharing_refused")
    assert refused.height >= 10
    text = "".join(events["details"].to_list())
    assert operations not in text and research not in text and "DROP TABLE" not in text
    # The documentation of the API is served by the app.
    spec = requests.get(f"http://127.0.0.1:{gw.port}/openapi.json", timeout=30).json()
    assert "/v1/lookups" in spec["paths"]


def test_concurrent_lookups_each_get_their_own_answers(gateway, tmp_path):
    """Requests waiting together are answered in one batch; each gets its own people's
    answers, in its order."""
    import concurrent.futures as cf

    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, OPERATIONS))
    records, released, _ = _people(lake)
    travellers = records.filter(pl.col("source") == "travellers", pl.col("dob").is_not_null(),
                                pl.col("person_id").is_in(released["person_id"].implode()))
    rows = list(travellers.iter_rows(named=True))[:10]
    assert len(rows) >= 5
    nobody = {"first_name": "Zebulon", "last_name": "Quackenbush", "dob": "1950-02-03"}

    def ask(i: int) -> tuple[int, list[dict[str, Any]]]:
        row = rows[i % len(rows)]
        people = [_as_known(row, f"q{i}a"), {"ref": f"q{i}b", **nobody}]
        got = _lookup(gw, token, {"people": people})
        assert got.status_code == 200, got.text
        return i, got.json()["results"]

    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(48)))
    for i, results in answers:
        assert [r["ref"] for r in results] == [f"q{i}a", f"q{i}b"]
        assert results[0]["person"]["person_id"] == rows[i % len(rows)]["person_id"]
        assert results[1]["outcome"] == "no_match"


def test_lookups_are_limited_in_people_not_requests(published_copy, tmp_path):
    """Guessing names and dates of birth costs one lookup per guess, however batched."""
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(lookups_per_minute=150, token_recheck_s=0)) as gw:
        token = _token(_profile(tmp_path, gw, OPERATIONS))
        guesses = [{"ref": f"g{i}", "first_name": "Ann", "last_name": "Lee",
                    "dob": f"19{50 + i // 12:02d}-{i % 12 + 1:02d}-01"} for i in range(100)]
        assert _lookup(gw, token, {"people": guesses}).status_code == 200
        limited = _lookup(gw, token, {"people": guesses})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
        assert _lookup(gw, token, {"people": guesses[:50]}).status_code == 200
        assert _lookup(gw, token, {"people": guesses[:1]}).status_code == 429
        # Another token of the same agreement shares the allowance.
        other = _token(_profile(tmp_path, gw, OPERATIONS, "other"))
        assert _lookup(gw, other, {"people": guesses[:1]}).status_code == 429
        events = gw.audited()
        throttled = events.filter(pl.col("kind") == "sharing_throttled")
        assert throttled.height == 2          # one per token, each naming it
        assert {json.loads(d)["token_id"] for d in throttled["details"]} == set(
            delta.read(lake.table("sharing", "tokens")).column("token_id").to_pylist())


def test_an_agreements_allowance_is_shared_by_every_worker(published_copy, tmp_path):
    """`serve --workers 2`: two processes, one allowance per agreement. Per-process counts
    would have let up to twice the limit through, depending on which worker answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    token = _token(_profile(tmp_path, type("G", (), {"endpoint": url + "/delta-sharing"})(),
                            OPERATIONS))
    env = os.environ | {"IDS_SHARING_PUBLIC_URL": url, "IDS_LOOKUP_PEOPLE_PER_MINUTE": "40"}
    server = serve(port, env, "--workers", "2")
    try:
        person = {"people": [{"ref": "a", "first_name": "Ann", "last_name": "Lee",
                              "dob": "1950-01-01"}]}
        codes: list[int] = []

        def ask() -> None:
            for _ in range(15):
                codes.append(requests.post(url + "/v1/lookups", json=person, timeout=60,
                                           headers={"Authorization": f"Bearer {token}"}
                                           ).status_code)
        threads = [threading.Thread(target=ask) for _ in range(6)]   # both workers busy
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes.count(200) == 40 and codes.count(429) == 50
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_lookups_confirm_only_what_the_partner_already_knows(gateway, tmp_path):
    """After the attack on the first version: answers depended on, and showed through
    their scores and comparison levels, other agencies' records (a traveller's Medicaid
    SSN, a sex only schools recorded); stems, initials, a decade or a birth year got a
    match or a referral, so a name was enough to harvest contact details."""
    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, OPERATIONS))
    records, released, _ = _people(lake)
    ids = released["person_id"].implode()
    travellers = records.filter(pl.col("source") == "travellers", pl.col("person_id").is_in(ids),
                                pl.col("dob").is_not_null(),
                                pl.col("first_name").str.len_chars() >= 5,
                                pl.col("last_name").str.len_chars() >= 5)
    elsewhere = records.filter(pl.col("source") != "travellers",
                               pl.col("person_id").is_in(ids))
    both = travellers.join(elsewhere.select("person_id", pl.col("ssn").alias("other_ssn"),
                                            pl.col("sex").alias("other_sex")),
                           on="person_id").unique("person_id")
    assert both.height >= 3
    for row in both.iter_rows(named=True):
        plain = _as_known(row, "p")
        variants = [plain | {"ref": "m", "sex": "M"}, plain | {"ref": "f", "sex": "F"}]
        if row["other_ssn"]:
            variants.append(plain | {"ref": "s", "ssn": row["other_ssn"]})
        got = _lookup(gw, token, {"people": [plain, *variants]}).json()["results"]
        # Other agencies' records decide nothing and show through nothing.
        assert all({k: v for k, v in r.items() if k not in ("ref", "unused")} ==
                   {k: v for k, v in got[0].items() if k != "ref"} for r in got), got
        assert all(r["unused"] in ({"sex": "not_permitted"}, {"ssn": "not_permitted"})
                   for r in got[1:]), got
        assert got[0]["outcome"] == "match"

    row = travellers.row(0, named=True)
    dob = row["dob"]
    first, last = row["first_name"], row["last_name"]
    # A field the agreement does not let the partner see (middle name, sex, SSN, street)
    # is not used: right or wrong, the answer is the same.
    plain = _as_known(row, "plain")
    probes = [plain | {"ref": "mid-a", "middle_name": "A"},
              plain | {"ref": "mid-z", "middle_name": "Z"},
              plain | {"ref": "street", "street": "1 NOWHERE RD"}]
    got = _lookup(gw, token, {"people": [plain, *probes]}).json()["results"]
    assert [r["outcome"] for r in got] == ["match"] * 4
    assert all(r["unused"] == {f: "not_permitted"} for r, f in
               zip(got[1:], ["middle_name", "middle_name", "street"], strict=True))
    loose = [
        _as_known(row, "swapped-stems", first_name=last[:4], last_name=first[:4]),
        _as_known(row, "swapped", first_name=last, last_name=first),
        _as_known(row, "stem4", last_name=last[:4]),
        _as_known(row, "given4", first_name=first[:4]),
        _as_known(row, "initials", first_name=row["first_name"][:2]),
        _as_known(row, "stem", last_name=row["last_name"][:3] + "*"),
        _as_known(row, "decade", dob=dob.replace(year=dob.year // 10 * 10 + (
            1 if dob.year % 10 == 0 else 0)).isoformat()),
        _as_known(row, "year", dob=dob.replace(month=1 if dob.month > 6 else 12,
                                               day=15).isoformat()),
        {"ref": "name-only", "first_name": row["first_name"], "last_name": row["last_name"],
         "dob": "1900-01-01"},
    ]
    got = {r["ref"]: r["outcome"] for r in
           _lookup(gw, token, {"people": loose}).json()["results"]}
    assert got == {p["ref"]: "no_match" for p in loose}, got


def test_an_operations_agreement_is_not_a_delta_sharing_table(gateway, tmp_path):
    """Its release (identified contact details of everyone in it) would make the lookup's
    safeguards moot: the share exists, with nothing in it."""
    _, gw = gateway
    profile = _profile(tmp_path, gw, OPERATIONS)
    assert delta_sharing.SharingClient(str(profile)).list_all_tables() == []
    got = requests.post(
        f"{gw.endpoint}/shares/{OPERATIONS}/schemas/operations/tables/contact_directory/query",
        json={}, headers={"Authorization": f"Bearer {_token(profile)}"}, timeout=30)
    assert got.status_code == 404


def test_refused_requests_never_lock_out_a_valid_token(gateway, tmp_path):
    _, gw = gateway
    token = _token(_profile(tmp_path, gw, RESEARCH))
    for _ in range(45):                          # past the refusals allowed per address
        _get(gw, "/shares", tokens.PREFIX + "Q" * 43)
    assert _get(gw, "/shares", tokens.PREFIX + "Q" * 43).status_code == 429
    assert _get(gw, "/shares", token).status_code == 200


def _allow_once(root: str, barrier, results) -> None:
    from ids_lakehouse.sharing import limits as shared

    allowance = shared.SharedLimit(Lake(Path(root)), "lookup_people", 1000)
    barrier.wait()
    try:
        allowance.allow("dsa")
        results.put("ok")
    except Exception as exc:        # what a worker would have answered 500 for
        results.put(type(exc).__name__)


def test_worker_processes_opening_the_shared_state_at_once_all_get_in(tmp_path):
    """Two workers whose first lookups came together: switching a new SQLite file to
    write-ahead logging takes it without waiting, and one failed with "database is
    locked" (a 500; 13 of 160 attempts in 40 rounds of 4 processes)."""
    import multiprocessing as mp

    outcomes = []
    for i in range(25):
        barrier, results = mp.Barrier(4), mp.Queue()
        procs = [mp.Process(target=_allow_once, args=(str(tmp_path / f"lake{i}"), barrier,
                                                      results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        outcomes += [results.get(timeout=10) for _ in procs]
    assert outcomes == ["ok"] * 100


def test_an_allowance_holds_in_any_60_seconds(tmp_path, monkeypatch):
    """Counted per second, the allowance never lets more than its units through in any
    60 s: units taken late in one second still count 59.x s later."""
    from ids_lakehouse.sharing import limits

    lake = Lake(tmp_path / "lake")
    limit = limits.SharedLimit(lake, "lookup_people", 100)
    clock = [1_000.99]
    monkeypatch.setattr(limits.time, "time", lambda: clock[0])
    assert limit.allow_each("a", [60, 40, 1]) == [True, True, False]
    clock[0] = 1_060.0                  # 59.01 s later: all 100 still count
    assert not limit.allow("a", 1)
    assert limit.allow("b", 100)        # another key has its own
    clock[0] = 1_061.0                  # 60.01 s later: the window has moved on
    assert limit.allow("a", 100) and not limit.allow("a", 1)


def test_an_edited_agreement_applies_at_once_and_a_broken_one_closes_the_gateway(
        published_copy, tmp_path, monkeypatch):
    """Narrowing an agreement's permitted fields narrows the next answer (they were kept
    from the release's first load for as long as the release stood: found by a tester).
    An agreement file that stops validating closes the gateway with 503 problem details,
    and its refusal is audited once, not on every request (each request used to answer
    a plain 500 and commit an audit event)."""
    import shutil

    import yaml

    from ids_lakehouse import agreements

    folder = tmp_path / "agreements"
    shutil.copytree(agreements.agreements_dir(), folder)
    monkeypatch.setattr(agreements, "agreements_dir", lambda: folder)
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(token_recheck_s=0, index_recheck_s=3600)) as gw:
        token = _token(_profile(tmp_path, gw, OPERATIONS))
        records, released, _ = _people(lake)
        row = records.filter(pl.col("source") == "travellers", pl.col("dob").is_not_null(),
                             pl.col("phone").is_not_null(),
                             pl.col("person_id").is_in(released["person_id"].implode())
                             ).row(0, named=True)
        asked = {"people": [_as_known(row, "a")]}
        first = _lookup(gw, token, asked).json()["results"][0]
        assert first["outcome"] == "match" and "phone" in first["person"]

        path = folder / f"{OPERATIONS}.yaml"
        data = yaml.safe_load(path.read_text())
        narrow = ["person_id", "first_name", "last_name", "dob", "city"]
        data["permitted"]["contact_directory"] = narrow
        path.write_text(yaml.safe_dump(data))
        after = _lookup(gw, token, asked).json()["results"][0]
        assert after["outcome"] == "match" and set(after["person"]) <= set(narrow)
        assert after["unused"] == {"phone": "not_permitted", "zip": "not_permitted"}

        before = gw.audited().height
        data["purpose"] = "research"                # no longer a valid declaration
        path.write_text(yaml.safe_dump(data))
        answers = [_lookup(gw, token, asked) for _ in range(4)]
        shares = requests.get(gw.endpoint + "/shares", timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        for got in [*answers, shares]:
            assert got.status_code == 503, got.text
            assert got.headers["content-type"].startswith("application/problem+json")
            assert row["last_name"] not in got.text
        events = gw.audited().slice(before)
        assert events.filter(pl.col("kind") == "agreement_refused").height == 1
        assert events.filter(pl.col("kind") == "sharing_refused").height == 5


# -- what a tester found in session 33 ----------------------------------------------------

def _raw(gw: Gateway, data: bytes, wait_s: float = 0.0, drip: bytes = b"",
         every_s: float = 0.0) -> bytes:
    """Send `data` on a fresh connection (then `drip` a byte every `every_s`), wait, then
    read what comes back until the gateway closes it; AssertionError if it is still open
    5 s later."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as conn:
        conn.sendall(data)
        for byte in drip:
            time.sleep(every_s)
            with suppress(OSError):
                conn.sendall(bytes([byte]))
        time.sleep(wait_s)
        got = b""
        try:
            while chunk := conn.recv(65536):
                got += chunk
        except TimeoutError:
            raise AssertionError(f"the connection is still open: {got[:60]!r}") from None
        return got


def test_clients_that_hang_up_or_dribble_are_refused_not_server_errors(gateway, tmp_path,
                                                                        monkeypatch):
    """A body cut short was a 500 with a ClientDisconnect traceback in the log (any token
    holder could raise them at will); a body or headers sent a byte at a time held a
    connection for as long as the client liked."""
    lake, gw = gateway
    monkeypatch.setattr(server, "BODY_PAUSE_S", 0.5)
    monkeypatch.setattr(deadline, "HEADER_DEADLINE_S", 0.5)
    token = _token(_profile(tmp_path, gw, OPERATIONS, "o"))
    head = (f"POST /v1/lookups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 87\r\n\r\n").encode()
    before = gw.audited().height
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as conn:
        conn.sendall(head + b'{"peo')           # then hangs up
    time.sleep(0.5)
    slow = _raw(gw, head + b'{"peo', wait_s=1.5)  # then pauses past the limit
    assert slow.startswith(b"HTTP/1.1 408"), slow[:40]
    # Headers that never end: closed without an answer, no token needed; nor after an
    # answer, by a lone CRLF (it stopped uvicorn's keep-alive timer) or the rest of a body
    # the answer did not wait for, a byte at a time.
    assert _raw(gw, b"GET /delta-sharing/shares HTTP/1.1\r\nHost: x\r\nX-A: b", 1.5) == b""
    refused = _raw(gw, b"GET /delta-sharing/shares HTTP/1.1\r\nHost: x\r\n\r\n",
                   drip=b"\r\n", every_s=0.3)
    assert refused.startswith(b"HTTP/1.1 401")
    unread = _raw(gw, b"POST /delta-sharing/shares HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 200000\r\n\r\n", drip=b"x" * 8, every_s=0.25)
    assert unread.startswith(b"HTTP/1.1 413")      # and closed, the rest unread
    # A body that never pauses long but never ends either: 408 at the total limit.
    monkeypatch.setattr(server, "BODY_TOTAL_S", 1.0)
    dribbled = _raw(gw, head, drip=b'{"people": []}', every_s=0.2)
    assert dribbled.startswith(b"HTTP/1.1 408"), dribbled[:40]
    events = gw.audited().slice(before)
    details = [json.loads(d) for d in events["details"].to_list()]
    assert sorted(d["status"] for d in details if d.get("endpoint") == "/v1/lookups") == \
        [400, 408, 408]
    assert {d.get("denied") for d in details} >= {"client closed the connection mid-body",
                                                  "request body too slow"}
    assert all(d.get("status", 0) < 500 for d in details)


def test_every_throttled_request_is_counted_under_its_endpoint(published_copy):
    """51 refusals over the limit were audited as 36: a minute's count waited for the next
    refusal (and took its endpoint), and the last minute's was never written."""
    lake = Lake(published_copy.lake)
    before = audit.read(lake).num_rows
    with Gateway(lake, Settings(refusals_per_minute=5)) as gw:
        for path in ("/shares", "/shares/x/schemas"):
            codes = [_get(gw, path, tokens.PREFIX + "Z" * 43).status_code for _ in range(8)]
    # The address's allowance is spent on the first path: every other request is a 429.
    events = pl.from_arrow(audit.read(lake)).slice(before)     # the gateway stopped
    throttled = [json.loads(d) for d in events.filter(pl.col("kind") == "sharing_throttled")
                 ["details"].to_list()]
    assert codes == [429] * 8
    counts: dict[str, int] = {}
    for d in throttled:
        counts[d["endpoint"]] = counts.get(d["endpoint"], 0) + d["count"]
    assert counts == {"/delta-sharing/shares": 3,
                      "/delta-sharing/shares/{share}/schemas": 8}


def test_options_the_gateway_does_not_serve_and_urls_it_did_not_issue(gateway, tmp_path):
    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, RESEARCH))
    table = f"/shares/{RESEARCH}/schemas/research/tables/research_person"
    for option in ("version=0", "timestamp=2020-01-01T00:00:00Z"):     # ignored before
        assert _get(gw, f"{table}/metadata?{option}", token).status_code == 400
    assert _get(gw, f"{table}/metadata", token).status_code == 200
    assert _query(gw, token, b'{"limitHint": "10"}').status_code == 400
    # Options in the URL (?version=2 was answered with version 1) or a response format
    # other than parquet (the stock client's use_delta_format failed on the answer).
    assert requests.post(f"{gw.endpoint}{table}/query?version=2", data=b"{}", timeout=30,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"}).status_code == 400
    assert _query(gw, token, **{"delta-sharing-capabilities": "responseformat=delta"}
                  ).status_code == 400
    answer = _query(gw, token, **{"delta-sharing-capabilities": "responseformat=delta,parquet"})
    assert answer.headers["delta-sharing-capabilities"] == "responseformat=parquet"
    url = json.loads(answer.text.splitlines()[2])["file"]["url"]
    assert requests.get(url, timeout=30).status_code == 200
    # The URL as issued, each parameter once: a leading zero or a second signature is
    # another URL.
    base, query = url.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    for forged in (url.replace(f"expires={params['expires']}", f"expires=0{params['expires']}"),
                   url + "&sig=" + params["sig"], url + "&other=1",
                   url.replace(f"/{RESEARCH}/1/", f"/{RESEARCH}/01/")):
        assert requests.get(forged, timeout=30).status_code == 403, forged
    # A range past the end is clamped to the file (RFC 9110), not the whole file as a 200.
    whole = requests.get(url, timeout=30).content
    for asked in ("bytes=0-99999999999999999999", "bytes=-99999999999999999999"):
        got = requests.get(url, headers={"Range": asked}, timeout=30)
        assert got.status_code == 206 and got.content == whole, asked
        assert got.headers["content-range"] == f"bytes 0-{len(whole) - 1}/{len(whole)}"


def test_lookup_answers_are_never_cached_and_only_json_is_read(gateway, tmp_path):
    lake, gw = gateway
    token = _token(_profile(tmp_path, gw, OPERATIONS, "o"))
    one = {"people": [{"ref": "a", "first_name": "Ann", "last_name": "Lee",
                       "dob": "1990-01-01"}]}
    answered = _lookup(gw, token, one)
    assert answered.status_code == 200 and answered.headers["cache-control"] == "no-store"
    assert _lookup(gw, token, one, **{"Content-Type": "text/plain"}).status_code == 415

