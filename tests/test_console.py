"""The steward's console on the path its users take: accounts made by the CLI, the real
gateway serving it on 127.0.0.1, the system Chromium (Playwright) clicking through the
pages, and the real pipeline applying a decision taken in the browser. Then the same
server attacked over plain HTTP: forged forms, foreign origins, guessed passwords, stolen
and ended sessions, roles that must not see values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import requests

from ids_lakehouse import delta
from ids_lakehouse.cli import main
from ids_lakehouse.config import Lake
from ids_lakehouse.console import accounts, views
from ids_lakehouse.identity import mpi
from ids_lakehouse.sharing.server import Settings
from tests.test_sharing import OPERATOR, RESEARCH, Gateway, _profile
from tests.ui_helpers import chromium

PASSWORD = "a long test passphrase"
ROLES = ("steward", "engineer", "auditor", "requester")


def email(role: str) -> str:
    return f"{role}@ids.example.gov"


@pytest.fixture
def console(published_copy):
    """The published lake (a private copy) with one account per role, and the gateway
    serving the console on 127.0.0.1."""
    lake = Lake(published_copy.lake)
    for role in ROLES:
        accounts.add(lake, email(role), role, PASSWORD, OPERATOR)
    with Gateway(lake, Settings(token_recheck_s=0)) as gw:
        gw.base = f"http://127.0.0.1:{gw.port}"
        yield lake, gw, published_copy


def sign_in(page, base: str, role: str, then: str = "/console/") -> None:
    page.goto(f"{base}/console/login?next={then}")
    page.fill("input[name=email]", email(role))
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def http_session(base: str, role: str, password: str = PASSWORD) -> requests.Session:
    """Signed in over plain HTTP, as a script (or an attacker with the password) would."""
    s = requests.Session()
    nonce = re.search(r'name="nonce" value="([^"]+)"', s.get(f"{base}/console/login").text)
    assert nonce
    r = s.post(f"{base}/console/login", data={"nonce": nonce[1], "next": "/console/",
                                              "email": email(role), "password": password})
    assert r.status_code == 200 and r.url == f"{base}/console/", r.status_code
    return s


def csrf(s: requests.Session, base: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', s.get(f"{base}/console/").text)
    assert found
    return found[1]


def events(gw: Gateway, kind: str) -> pl.DataFrame:
    return gw.audited().filter(pl.col("kind") == kind)


def land_ragged_delivery(landing: Path) -> str:
    """A new HMIS extract: the last one plus a row with one field too many (quarantined
    at ingest); its file name."""
    last = sorted((landing / "hmis").glob("*.csv"))[-1]
    lines = last.read_bytes().splitlines()      # as delivered (Latin-1)
    ragged = lines[1] + b",an extra field," + b"x" * 50_000   # a hostile row: cut on the page
    new = landing / "hmis" / "hmis_client_2026-02-01.csv"
    new.write_bytes(b"\n".join([*lines, ragged]) + b"\n")
    return new.name


def run_pipeline(built) -> None:
    """What the nightly does: ingest what landed, then rebuild what is stale."""
    from pipelines.definitions import build_definitions
    from pipelines.demo import Outcome, materialize_everything

    outcome = Outcome()
    with built.instance() as instance:
        materialize_everything(build_definitions(), instance, outcome)
    assert not outcome.runs_failed, outcome


@pytest.mark.browser
def test_a_stewards_morning_review_and_quarantine_applied_by_the_next_run(console, tmp_path):
    lake, gw, built = console
    base = gw.base
    pairs = views.review_queue(lake)
    assert pairs, "the published lake has pairs waiting for review"
    pair = pairs[0]
    values = views.records(lake, pair)
    shown = [v for side in values.values() for v in side.values() if len(v) >= 3]
    assert shown, "the pair's records have values to reveal"
    with chromium(tmp_path) as browser:
        page = browser.page
        sign_in(page, base, "steward")
        assert f"{len(pairs)} pair" in page.inner_text("main")
        page.click("text=Review queue")
        page.click(f"a[href='/console/review/{pair.key}']")
        body = page.inner_text("main")
        # Masked by default: the levels in words and weights, no value.
        assert "•••" in body and not any(v in body for v in shown)
        assert pair.levels["last_name"].words in body
        page.click("text=Reveal values")
        revealed = page.inner_text("main")
        assert all(v in revealed for v in shown)
        page.check("input[value=match]")
        page.fill("textarea[name=reason]", "same birth certificate number on file")
        page.click("text=Record decision")
        assert "Decision recorded (same person)" in page.inner_text("main")
        assert f"/console/review/{pair.key}" not in page.content()
        page.click("text=Decisions")
        assert "waiting for the next identity run" in page.inner_text("main")

    reveal = events(gw, "console_reveal").row(0, named=True)
    assert (reveal["actor"], json.loads(reveal["details"])["left"]) == (email("steward"),
                                                                        pair.left)
    decided = events(gw, "steward_decision").row(-1, named=True)
    assert (decided["actor"], decided["via"]) == (email("steward"), "console")
    # Nothing the steward saw is in the audit log: ids, rules and counts only.
    log = gw.audited().select(pl.col("message") + pl.col("details")).to_series().str.join(" ")
    assert not any(v in log[0] for v in shown if not v.isdigit())

    delivered = land_ragged_delivery(built.landing)
    run_pipeline(built)
    from dagster import AssetKey

    with built.instance() as instance:      # the quarantine is an asset too
        event = instance.get_latest_materialization_event(AssetKey(["quarantine", "hmis"]))
    assert event is not None and event.asset_materialization.metadata[
        "rows_quarantined"].value == 1
    xref = dict(delta.frame(lake.identity("person_xref"),
                            columns=["unique_id", "person_id"]).iter_rows())
    assert xref[pair.left] == xref[pair.right]

    with chromium(tmp_path / "again") as browser:
        page = browser.page
        sign_in(page, base, "steward", "/console/decisions")
        assert "applied: one person" in page.inner_text("main")
        page.click("text=Quarantine")
        body = page.inner_text("main")
        assert delivered in body and "ingest" in body
        page.click(f"tr:has-text('{delivered}') >> text=rows")
        rows = page.inner_text("main")
        assert "an extra field" in rows and "Quarantined rows: hmis" in rows
        assert "(cut)" in rows and len(page.content()) < 20_000
    opened = events(gw, "console_quarantine_rows").row(0, named=True)
    assert opened["actor"] == email("steward") and opened["source"] == "hmis"
    assert json.loads(opened["details"])["rows_shown"] == 1
    assert json.loads(opened["details"])["shown"][0][0] == "ingest"     # which rows, by number


@pytest.mark.browser
def test_each_role_sees_its_pages_and_only_a_steward_sees_values(console, tmp_path):
    lake, gw, _ = console
    base = gw.base
    pair = views.review_queue(lake)[0]
    shown = [v for side in views.records(lake, pair).values() for v in side.values()
             if len(v) >= 3]
    menus = {"steward": {"Review queue", "Quarantine", "Releases", "Catalog", "Requests"},
             "engineer": {"Quarantine", "Catalog", "Requests"},
             "auditor": {"Review queue", "Quarantine", "Releases", "Catalog", "Requests"},
             "requester": {"Catalog", "Requests"}}
    everything = {"Review queue", "Quarantine", "Releases", "Catalog", "Requests"}
    with chromium(tmp_path) as browser:
        page = browser.page
        for role in ("engineer", "auditor", "requester"):
            sign_in(page, base, role)
            header = page.inner_text("header")
            assert {m for m in everything if m in header} == menus[role], role
            page.goto(f"{base}/console/review/{pair.key}")
            body = page.inner_text("main")
            assert not any(v in body for v in shown), role
            # The agencies' record ids are direct identifiers too.
            assert pair.left not in body and pair.right not in body, role
            if role == "auditor":
                assert "•••" in body and page.locator("text=Reveal values").count() == 0
                assert page.locator("text=Record decision").count() == 0
            else:
                assert f"{role} account cannot open this page" in body
            page.click("text=Sign out")
            page.wait_for_url(f"{base}/console/login")
    # The steward's forms, posted by the others with their own valid CSRF token: refused.
    for role in ("engineer", "auditor", "requester"):
        s = http_session(base, role)
        token = csrf(s, base)
        for action, form in (("reveal", {}), ("decide", {"decision": "match",
                                                           "reason": "x"})):
            r = s.post(f"{base}/console/review/{pair.key}/{action}",
                       data={"csrf": token, **form})
            assert r.status_code == 403 and not any(v in r.text for v in shown), (role, action)
    assert events(gw, "console_reveal").height == 0
    assert events(gw, "steward_decision").height == 0


@pytest.mark.browser
def test_catalog_search_lineage_and_the_releases_ledger(console, tmp_path):
    import delta_sharing

    lake, gw, _ = console
    base = gw.base
    profile = _profile(tmp_path, gw, RESEARCH)
    client = delta_sharing.SharingClient(str(profile))
    table = client.list_all_tables()[0]
    delta_sharing.load_as_pandas(f"{profile}#{table.share}.{table.schema}.{table.name}")
    with chromium(tmp_path) as browser:
        page = browser.page
        sign_in(page, base, "steward", "/console/catalog")
        page.fill("input[name=q]", "county_fips")
        page.click("text=Search")
        found = page.inner_text("main")
        assert "silver/person_record" in found and "bronze/medicaid" not in found
        page.click("a[href='/console/catalog/gold/research_person']")
        columns = page.inner_text("main")
        assert "quasi_identifier" in columns and "HIPAA" in columns     # through lineage
        svg = page.locator("svg.lineage")
        assert svg.count() == 1
        page.click("svg.lineage a >> nth=0")
        assert re.search(r"/console/catalog/(silver|identity)/\w+$", page.url)
        assert "Columns" in page.inner_text("main")
        page.goto(f"{base}/console/catalog/silver/person_record")
        quality = page.inner_text("main")
        assert re.search(r"last run .*: (passed|failed), \d+ expectations evaluated", quality)
        assert "hmis" in quality and "Share of delivered values" in quality
        page.goto(f"{base}/console/releases")
        ledger = page.inner_text("main")
    agreement = gw.audited().filter(pl.col("kind") == "release_created")
    assert agreement.height and RESEARCH in ledger
    assert "privacy" in ledger or "@" in ledger      # the approver's address
    # What the partner fetched, by token, table and version.
    assert f"agreement {RESEARCH}, {table.name} v" in ledger
    # The DCAT export names where each mart can be had, and those addresses answer.
    s = http_session(base, "requester")
    dcat = s.get(f"{base}/console/catalog.json").json()
    mart = next(d for d in dcat["dataset"] if d["identifier"] == f"ids-lakehouse/gold/"
                f"{table.name}")
    shared = [x for x in mart["distribution"] if x["format"] == "Delta Sharing"]
    assert shared and shared[0]["accessURL"].startswith(base)
    token = json.loads(profile.read_text())["bearerToken"]
    assert requests.get(shared[0]["accessURL"] + "/version", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page_url = next(x for x in mart["distribution"] if x["format"] == "HTML")["accessURL"]
    assert s.get(page_url).status_code == 200


def test_forms_need_the_sessions_token_and_the_consoles_origin(console):
    lake, gw, _ = console
    base = gw.base
    pair = views.review_queue(lake)[0]
    s = http_session(base, "steward")
    token = csrf(s, base)
    url = f"{base}/console/review/{pair.key}/reveal"
    assert s.post(url, data={}).status_code == 403
    assert s.post(url, data={"csrf": "forged"}).status_code == 403
    assert s.post(url, data={"csrf": token},
                  headers={"Origin": "http://evil.example"}).status_code == 403
    assert s.post(url, data={"csrf": token, "x": "1"} | {"csrf2": ""},
                  headers={"Origin": base}).status_code == 200
    assert s.post(url, data=[("csrf", token), ("csrf", token)]).status_code == 400
    assert s.post(url, data={"csrf": token, "pad": "x" * 20_000}).status_code == 413
    # Without a session: a POST is refused, a page sends to sign-in.
    anon = requests.Session()
    assert anon.post(url, data={"csrf": token}).status_code == 401
    r = anon.get(f"{base}/console/review", allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert events(gw, "console_reveal").height == 1


def test_cookies_headers_and_redirects_are_safe(console):
    _, gw, _ = console
    base = gw.base
    for evil in ("https://evil.example/", "//evil.example/", "/console//evil.example",
                 "/\\evil.example"):
        s = requests.Session()
        nonce = re.search(r'name="nonce" value="([^"]+)"', s.get(f"{base}/console/login").text)[1]
        r = s.post(f"{base}/console/login", allow_redirects=False,
                   data={"nonce": nonce, "next": evil, "email": email("auditor"),
                         "password": PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/console/", evil
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    home = s.get(f"{base}/console/")
    csp = home.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert home.headers["cache-control"] == "no-store"
    # A sign-in form posted without its own nonce cookie (from another site): refused.
    other = requests.Session()
    r = other.post(f"{base}/console/login", data={"nonce": nonce, "email": email("auditor"),
                                                 "password": PASSWORD})
    assert r.status_code == 403 and "idsl_console" not in other.cookies


def test_guessing_passwords_is_throttled_and_said_once(console):
    _, gw, _ = console
    base = gw.base
    s = requests.Session()
    nonce = re.search(r'name="nonce" value="([^"]+)"', s.get(f"{base}/console/login").text)[1]

    def attempt(password: str) -> int:
        return s.post(f"{base}/console/login", allow_redirects=False,
                      data={"nonce": nonce, "email": email("steward"),
                            "password": password}).status_code

    allowed = accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS
    assert [attempt(f"wrong guess {i:04d}") for i in range(allowed)] == [401] * allowed
    assert attempt(PASSWORD) == 429         # the right one too, until the window passes
    refused = gw.audited().filter(pl.col("kind").str.starts_with("console_sign_in"))
    assert refused.height == allowed + 1
    assert not refused["details"].str.contains("wrong guess").any()
    # An unknown address costs the same work and is refused the same way.
    r = s.post(f"{base}/console/login", data={"nonce": nonce, "email": "nobody@x.example",
                                             "password": PASSWORD})
    assert r.status_code in (401, 429) and "Wrong e-mail address or password" in r.text \
        or "Too many" in r.text


def test_a_stolen_cookie_dies_with_sign_out_and_with_its_account(console):
    lake, gw, _ = console
    base = gw.base
    s = http_session(base, "auditor")
    stolen = s.cookies.get("idsl_console")
    thief = requests.Session()
    thief.cookies.set("idsl_console", stolen)
    assert thief.get(f"{base}/console/releases").status_code == 200
    s.post(f"{base}/console/logout", data={"csrf": csrf(s, base)})
    r = thief.get(f"{base}/console/releases", allow_redirects=False)
    assert r.status_code == 303
    s = http_session(base, "engineer")
    thief.cookies.set("idsl_console", s.cookies.get("idsl_console"))
    assert thief.get(f"{base}/console/quarantine").status_code == 200
    assert main(["console-user", "disable", "--email", email("engineer"),
                 "--operator", OPERATOR]) == 0
    assert thief.get(f"{base}/console/quarantine", allow_redirects=False).status_code == 303
    r = requests.Session()
    nonce = re.search(r'name="nonce" value="([^"]+)"', r.get(f"{base}/console/login").text)[1]
    assert r.post(f"{base}/console/login", data={"nonce": nonce, "email": email("engineer"),
                                                 "password": PASSWORD}).status_code == 401
    assert events(gw, "console_account_disabled").height == 1


def test_accounts_are_made_by_the_cli_with_a_real_password(console, capsys, monkeypatch):
    import io

    lake, _, _ = console
    for password, said in (("short", "shorter than 12"), ("x" * 2000, "longer than"),
                           ("tab\tinside the password", "control characters")):
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        assert main(["console-user", "add", "--email", "new@ids.example.gov", "--role",
                     "auditor", "--operator", OPERATOR, "--password-stdin"]) == 2
        assert said in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["console-user", "add", "--email", email("steward").upper(), "--role",
                 "auditor", "--operator", OPERATOR, "--password-stdin"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["console-user", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(email(r) in listed for r in ROLES) and PASSWORD not in listed
    stored = accounts.path(lake).read_bytes()
    assert PASSWORD.encode() not in stored
    assert oct(accounts.path(lake).stat().st_mode & 0o777) == "0o600"


@pytest.mark.browser
def test_a_request_filed_answered_by_the_policy_and_approved_by_a_steward(console, tmp_path):
    import datetime as dt

    from ids_lakehouse import data_requests
    from ids_lakehouse.agreements import load_agreement

    lake, gw, _ = console
    base = gw.base
    # An old request nobody decided: overdue on every list.
    old = data_requests.file(lake, "someone@uni.example.edu", data_requests.parse_request({
        "title": "Old request", "purpose": "research", "recipient_organisation": "U",
        "recipient_contact": "a@uni.example.edu", "legal_basis": "FERPA", "justification":
        "x", "start": "2027-01-01", "end": "2027-06-30", "sources": ["schools"],
        "columns": {"research_person": ["sex"]}}),
        now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=45))
    with chromium(tmp_path) as browser:
        page = browser.page
        sign_in(page, base, "requester", "/console/requests")
        assert "Old request" not in page.inner_text("main")      # not theirs
        page.click("text=File a new request")
        page.fill("input[name=title]", "Homeless students and Medicaid")
        page.select_option("select[name=purpose]", "research")
        page.fill("input[name=recipient_organisation]", "State University")
        page.fill("input[name=recipient_contact]", "pi@uni.example.edu")
        page.fill("input[name=legal_basis]", "FERPA studies exception; HIPAA DUA")
        page.fill("textarea[name=justification]", "Health coverage of homeless students")
        page.fill("input[name=start]", "2027-01-01")
        page.fill("input[name=end]", "2027-12-31")
        for source in ("schools", "medicaid"):
            page.check(f"input[name=source][value={source}]")
        for column in ("research_person.birth_year", "research_participation.program"):
            page.check(f"input[name=column][value='{column}']")
        page.click("text=File the request")
        answer = page.inner_text("main")
        assert "The policy's answer: waiting for a steward" in answer
        assert "regime:HIPAA" in answer and "research_participation.program" in answer
        rid = int(re.search(r"/console/requests/(\d+)$", page.url)[1])
        assert page.locator("text=Record decision").count() == 0
        page.goto(f"{base}/console/requests/{old.id}")
        assert "no such request" in page.inner_text("main")
        page.click("text=Sign out")

        sign_in(page, base, "steward", "/console/requests")
        listed = page.inner_text("main")
        assert "Homeless students and Medicaid" in listed and "overdue" in listed
        page.click(f"a[href='/console/requests/{rid}']")
        page.check("input[value=approved]")
        page.fill("textarea[name=reason]", "Agreement template B applies")
        page.click("text=Record decision")
        assert "approved by a steward" in page.inner_text("main")
        with page.expect_download() as download:
            page.click("text=Download the draft agreement")
        saved = tmp_path / f"{download.value.suggested_filename}"
        download.value.save_as(saved)
    text = saved.read_text()
    agreement_id = re.search(r"^id: (\S+)$", text, re.M)[1]
    agreement = load_agreement(saved.rename(tmp_path / f"{agreement_id}.yaml"))
    assert agreement.approver == email("steward") and agreement.purpose == "research"
    assert agreement.release == {"research_participation": ["program"],
                                 "research_person": ["birth_year"]}
    decided = events(gw, "data_request_decided")
    assert decided["actor"].to_list() == [email("steward")]



def test_values_are_shown_only_once_their_showing_is_on_record(console, monkeypatch):
    """Red team: with the audit log unwritable, a reveal still showed the values (the event
    was only spooled). The event is now committed first, or nothing is shown."""
    lake, gw, built = console
    base = gw.base
    pair = views.review_queue(lake)[0]
    shown = [v for side in views.records(lake, pair).values() for v in side.values()
             if len(v) >= 3]
    s = http_session(base, "steward")
    token = csrf(s, base)
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", "not-the-key-that-signed-this-log-" + "1" * 8)
    r = s.post(f"{base}/console/review/{pair.key}/reveal", data={"csrf": token})
    assert r.status_code == 503 and not any(v in r.text for v in shown)
    assert "audit log cannot be written" in r.text
    # Filing a request (here by the steward), too, is refused whole: a 503, nothing kept.
    from ids_lakehouse import data_requests

    r = s.post(f"{base}/console/requests", data=[
        ("csrf", token), ("title", "Coverage"), ("purpose", "research"),
        ("recipient_organisation", "U"), ("recipient_contact", "a@uni.example.edu"),
        ("legal_basis", "FERPA"), ("justification", "coverage"), ("start", "2027-01-01"),
        ("end", "2027-06-30"), ("source", "schools"), ("column", "research_person.sex")])
    assert r.status_code == 503 and data_requests.listing(lake) == []


def test_what_the_red_team_found_in_the_pages(console):
    lake, gw, _ = console
    base = gw.base
    pair = views.review_queue(lake)[0]
    s = http_session(base, "steward")
    token = csrf(s, base)
    # A reason carrying identifiers is refused (it would be copied to the audit log).
    for reason in ("same DOB 1990-05-01", "SSN 123-45-6789 on both", "member WA123456789"):
        r = s.post(f"{base}/console/review/{pair.key}/decide",
                   data={"csrf": token, "decision": "match", "reason": reason})
        alert = re.search(r'role="alert">([^<]*)', r.text)
        assert r.status_code == 400 and alert and "describe the evidence" in alert[1]
        assert reason not in alert[1]       # said in words; the form keeps the steward's text
    # A textarea's line breaks are fine: kept as one line.
    assert s.post(f"{base}/console/review/{pair.key}/decide", allow_redirects=False, data={
        "csrf": token, "decision": "non_match",
        "reason": "different mothers\r\non the two birth records"}).status_code == 303
    assert mpi.steward_decisions(lake)["reason"].to_list() == [
        "different mothers on the two birth records"]
    # Only the decisions the console makes are flashed, never the caller's text.
    assert "Decision recorded" not in s.get(f"{base}/console/review?done=CALL+555").text
    # No trailing-slash redirect built on the Host header; no Swagger page from a CDN.
    r = s.get(f"{base}/console/review/", headers={"Host": "evil.example"},
              allow_redirects=False)
    assert r.status_code == 404 and "evil" not in r.headers.get("location", "")
    assert requests.get(f"{base}/docs").status_code == 404
    # A new user's first addresses lead to the console; a browser's icon request is not a
    # refused sharing request in the releases ledger.
    for start in ("/", "/console"):
        r = requests.get(base + start, allow_redirects=False, headers={"Host": "evil.example"})
        assert r.status_code == 303 and r.headers["location"] == "/console/"
    assert requests.get(f"{base}/favicon.ico").status_code == 204
    requests.get(f"{base}/no-such-page")
    assert "unrouted" not in s.get(f"{base}/console/releases").text
    assert requests.get(f"{base}/openapi.json").status_code == 200
    # Dot segments in next= are not followed.
    assert _signed_in_to(base, "/console/../..//evil.example") == "/console/"
    # A signed-in user's requests that no page handled are still theirs in the log.
    auditor = http_session(base, "auditor")
    assert auditor.put(f"{base}/console/review/{pair.key}/reveal").status_code == 405
    assert auditor.head(f"{base}/console/quarantine/hmis").status_code in (404, 405)
    probes = gw.audited().filter((pl.col("kind") == "console_request")
                                 & pl.col("message").str.contains("^(PUT|HEAD) .* 40[45]$"))
    assert probes.height >= 2 and set(probes["actor"]) == {email("auditor")}, \
        probes.select("actor", "message").rows()
    assert set(probes["via"]) == {"console"}


def test_one_attackers_guesses_do_not_lock_the_owner_out_elsewhere(console):
    lake, _, _ = console
    for i in range(accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS):
        assert accounts.sign_in(lake, email("steward"), f"guess {i}", "198.51.100.7") is None
    with pytest.raises(accounts.Throttled):
        accounts.sign_in(lake, email("steward"), PASSWORD, "198.51.100.7")
    assert accounts.sign_in(lake, email("steward"), PASSWORD, "192.0.2.10") is not None
    # Spread over many addresses, guessing one account still stops.
    for i in range(accounts.FAILURES_PER_ACCOUNT - accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS):
        accounts.sign_in(lake, email("auditor"), "guess", f"203.0.113.{i}")
    for i in range(accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS):
        accounts.sign_in(lake, email("auditor"), "guess", "203.0.113.250")
    with pytest.raises(accounts.Throttled):
        accounts.sign_in(lake, email("auditor"), PASSWORD, "192.0.2.99")


def test_a_record_id_with_invisible_characters_can_still_be_decided(console):
    """An agency's record id holding U+202E made its pair impossible to decide in the
    console (ids from the index are not typed: only the CLI's must be printable)."""
    left, right = "medicaid:WA1\u202e23", "hmis:HM9"
    with pytest.raises(mpi.DecisionError, match="--left is not a unique_id"):
        mpi._check_decision_fields(left, right, "match", email("steward"), "twins")
    mpi._check_decision_fields(left, right, "match", email("steward"), "twins", typed=False)
    from ids_lakehouse.console.web import visible

    assert visible(left) == "medicaid:WA1\\u202e23"


def test_auditors_see_every_request_and_file_none(console):
    from ids_lakehouse import data_requests

    lake, gw, _ = console
    base = gw.base
    filed = data_requests.file(lake, email("requester"), data_requests.parse_request({
        "title": "Coverage of homeless students", "purpose": "research",
        "recipient_organisation": "U", "recipient_contact": "a@uni.example.edu",
        "legal_basis": "FERPA", "justification": "coverage", "start": "2027-01-01",
        "end": "2027-06-30", "sources": ["schools"],
        "columns": {"research_person": ["sex"]}}))
    auditor = http_session(base, "auditor")
    listed = auditor.get(f"{base}/console/requests")
    assert listed.status_code == 200 and "Coverage of homeless students" in listed.text
    assert "File a new request" not in listed.text
    assert auditor.get(f"{base}/console/requests/{filed.id}").status_code == 200
    assert auditor.get(f"{base}/console/requests/new").status_code == 403
    assert "an auditor account" in auditor.get(f"{base}/console/requests/new").text
    for rid in ("99999999999999999999999", "9223372036854775808", "0", "-1"):
        assert auditor.get(f"{base}/console/requests/{rid}").status_code in (400, 404), rid
    steward = http_session(base, "steward")
    assert "1 request waiting for a steward" in steward.get(f"{base}/console/").text
    # A percent-encoded dot segment in next= is not followed either.
    assert _signed_in_to(base, "/console/%2e%2e/openapi.json") == "/console/"


def _signed_in_to(base: str, next_page: str) -> str:
    """Where an auditor's sign-in with `next=next_page` sends them."""
    anon = requests.Session()
    nonce = re.search(r'name="nonce" value="([^"]+)"', anon.get(f"{base}/console/login").text)[1]
    r = anon.post(f"{base}/console/login", allow_redirects=False, data={
        "nonce": nonce, "next": next_page, "email": email("auditor"), "password": PASSWORD})
    return str(r.headers["location"])


def test_a_decision_recorded_while_the_index_is_built_waits_for_the_next_build(silver_lake):
    """Review: a build reads the decisions after scoring and commits minutes later; a
    decision recorded in between was shown "applied" (its time was before the commit)
    and the nightly saw nothing stale. Each build now says which decisions it honoured."""
    records = delta.frame(silver_lake.silver("person_record"))
    mpi.update(silver_lake, records, "first")
    ids = delta.frame(silver_lake.identity("person_xref"), columns=["unique_id"])
    left, right = sorted(ids["unique_id"].to_list())[:2]
    result = mpi.build(silver_lake, records, "second")          # reads the decisions ...
    mpi.record_decision(silver_lake, left, right, "non_match", email("steward"),
                        "different mothers")                   # ... one arrives ...
    mpi.write(silver_lake, result, "second")                    # ... the build commits
    assert mpi.applied_decisions_version(silver_lake) == -1
    assert mpi.decisions_version(silver_lake) == 0
    (decision,) = views.decisions(silver_lake)
    assert not decision.applied
    # The nightly (and the steward_decisions sensor) see it as due, whatever the clocks.
    from dagster import DagsterInstance

    from pipelines.resources import LakeResource
    from pipelines.schedules import stale

    resource = LakeResource(lake_root=str(silver_lake.root), landing_root="/nonexistent")
    with DagsterInstance.ephemeral() as instance:
        assert "steward_decisions" in stale(instance, resource)
        mpi.update(silver_lake, records, "third")
        assert "steward_decisions" not in stale(instance, resource)
    assert mpi.applied_decisions_version(silver_lake) == 0
    (decision,) = views.decisions(silver_lake)
    assert decision.applied and decision.same_person is False


def test_concurrent_guesses_cannot_outrun_the_sign_in_limit(console):
    """Review: the limit was checked, then scrypt ran (~50 ms), then the failure was
    counted: concurrent attempts all passed the check."""
    import concurrent.futures as cf

    lake, _, _ = console

    def guess(i: int) -> str:
        try:
            return "refused" if accounts.sign_in(lake, email("auditor"), f"guess {i}",
                                                 "198.51.100.9") is None else "in"
        except accounts.Throttled:
            return "throttled"

    with cf.ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(guess, range(24)))
    assert outcomes.count("refused") == accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS
    assert outcomes.count("throttled") == 24 - accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS
    # A right password takes back the failure it was provisionally counted as.
    assert accounts.sign_in(lake, email("steward"), PASSWORD, "198.51.100.10") is not None
    for i in range(accounts.FAILURES_PER_ACCOUNT_AND_ADDRESS - 1):
        accounts.sign_in(lake, email("steward"), f"guess {i}", "198.51.100.10")
    assert accounts.sign_in(lake, email("steward"), PASSWORD, "198.51.100.10") is not None


def test_rows_quarantined_per_day_are_summed_over_deliveries_and_stages():
    import datetime as dt

    day = dt.datetime.now(dt.timezone.utc)
    found = [views.Delivery("hmis", f"f{i}", f"{i}" * 64, day, "accepted", None, None, 10,
                            8, n, [("conform", "dob", "dob", n)]) for i, n in ((1, 2), (2, 3))]
    assert views.quarantine_by_day(found) == [(day.date(), "hmis", 5)]


def test_a_filed_request_reads_back_under_stricter_validators(published_copy, monkeypatch):
    """Review: stored requests were validated again on every read; a validator made
    stricter later would have made every list and page fail (and quote the text)."""
    from ids_lakehouse import data_requests

    lake = Lake(published_copy.lake)
    filed = data_requests.file(lake, "pi@uni.example.edu", data_requests.parse_request({
        "title": "Coverage", "purpose": "research", "recipient_organisation": "U",
        "recipient_contact": "a@uni.example.edu", "legal_basis": "FERPA",
        "justification": "coverage of students", "start": "2027-01-01", "end": "2027-06-30",
        "sources": ["schools"], "columns": {"research_person": ["sex"]}}))
    monkeypatch.setattr("ids_lakehouse.deid.scanner.TEXT_PATTERNS",
                        {"anything": r"coverage"})
    with pytest.raises(data_requests.RequestError):
        data_requests.parse_request({"justification": "coverage"})
    (again,) = data_requests.listing(lake)
    assert again.id == filed.id and again.request.justification == "coverage of students"
    assert again.request.end.year == 2027
