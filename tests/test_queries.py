"""Remote statistical queries (`POST /v1/queries`) on the path a researcher uses: a token
issued by the CLI, real HTTP against the gateway on 127.0.0.1, the lake built by the
real pipeline. The answers are compared with exact counts computed here, independently,
from the held-back basis; the attacks the issue names are run against the service and
their outcome asserted in numbers."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import threading
from typing import Any

import polars as pl
import pytest
import requests

from ids_lakehouse import delta, zones
from ids_lakehouse.config import Lake
from ids_lakehouse.deid import cellkey
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.sharing.server import Settings
from tests.test_sharing import INDICATORS, RESEARCH, Gateway, _profile, _token, serve

OPERATIONS = "dsa-traveller-followup"
SIGMA = load_policy().remote_queries.noise_sigma


@pytest.fixture
def gw(published_copy) -> Any:
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(rate_per_minute=100_000, token_recheck_s=0)) as g:
        yield g


def _ask(gw: Gateway, token: str | None, body: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"http://127.0.0.1:{gw.port}/v1/queries", data=data, timeout=60,
                         headers={"Content-Type": "application/json", **auth})


def _person_years(lake: Lake) -> pl.DataFrame:
    """Exact facts, computed here: one row per person and year with the set of programs
    (of the research agreement's sources) and the attributes of the first program's row."""
    basis = delta.frame(lake.disclosure("indicator_basis")).filter(
        pl.col("program").is_in(["MEDICAID", "HMIS", "K12", "K12_MCKINNEY_VENTO"]))
    return (basis.sort("person_id", "year", "program")
            .group_by("person_id", "year", maintain_order=True)
            .agg(pl.col("program"), pl.col("county_fips", "age_band", "sex",
                                               "race_ethnicity").first()))


def _spent(answer: dict[str, Any]) -> float:
    return float(answer["budget"]["rho_spent"])


README_QUERY = {"group_by": ["county_fips", "year"], "programs": {"all": ["HMIS", "MEDICAID"]}}


def test_a_researcher_asks_how_many_were_in_both_hmis_and_medicaid(gw, tmp_path):
    token = _token(_profile(tmp_path, gw, RESEARCH))
    r = _ask(gw, token, README_QUERY)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["columns"] == ["county_fips", "year", "persons"]
    years = sorted({row[1] for row in a["rows"]})
    counties = sorted({row[0] for row in a["rows"]})
    assert len(a["rows"]) == len(years) * len(counties) == a["protection"]["cells"]
    # The grid is public (code lists, program years), not the data's: empty cells too.
    assert len(counties) > 30 and years[0] == 2019
    p = a["protection"]
    assert p["sigma"] == SIGMA and p["contributions_per_person"] == len(years)
    assert p["rho"] == pytest.approx(len(years) / (2 * SIGMA ** 2))
    assert a["budget"] == {"rho_budget": 2.0, "rho_spent": pytest.approx(p["rho"]),
                           "rho_remaining": pytest.approx(2.0 - p["rho"])}
    assert a["provenance"]["dataset"] == "disclosure/indicator_basis"
    assert a["provenance"]["delta_version"] == \
        delta.table(gw.lake.disclosure("indicator_basis")).version()
    # Against exact counts computed here: every published cell is >= 11, null cells are
    # those whose noisy count fell under 11, and the noise is the declared Gaussian's.
    exact = (_person_years(gw.lake)
             .filter(pl.col("program").list.contains("HMIS")
                     & pl.col("program").list.contains("MEDICAID"))
             .group_by("county_fips", "year").len())
    truth = {(c, y): n for c, y, n in exact.iter_rows()}
    assert sum(truth.values()) > 20
    errors = []
    for county, year, persons in a["rows"]:
        true = truth.get((county, year), 0)
        if persons is None:
            assert true < 11 + 6 * SIGMA
        else:
            assert persons >= 11
            errors.append(persons - true)
    assert errors and all(abs(e) <= 6 * SIGMA for e in errors)
    assert p["cells_suppressed"] == sum(row[2] is None for row in a["rows"])
    # Audited: who, the query's shape and what it cost; never a count.
    events = gw.audited().filter(pl.col("details").str.contains("/v1/queries"))
    assert events.height == 1
    details = json.loads(events["details"][0])
    assert details["query"]["shape"]["programs"] == {"all": ["MEDICAID", "HMIS"]}
    assert details["query"]["cells"] == len(a["rows"])
    assert details["query"]["rho"] == pytest.approx(p["rho"])
    assert set(details["query"]) == {"shape", "cells", "cells_suppressed", "rho", "repeat",
                                     "query_id"} and "rows" not in details


def test_a_mean_of_a_declared_measure_and_grouping_by_program(gw, tmp_path):
    token = _token(_profile(tmp_path, gw, RESEARCH))
    r = _ask(gw, token, {"group_by": ["program"], "where": {"year": [2024]},
                         "measure": {"mean": "programs"}})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["columns"] == ["program", "persons", "mean_programs"]
    assert [row[0] for row in a["rows"]] == ["MEDICAID", "HMIS", "K12", "K12_MCKINNEY_VENTO"]
    # A person is counted in each of the programs they were in: 4 cells each, and the
    # sum of the numeric measure is one more noisy vector: rho = 2 * 4 / (2 sigma^2).
    assert a["protection"]["contributions_per_person"] == 4
    assert a["protection"]["rho"] == pytest.approx(4 / SIGMA ** 2)
    # The noise of the sum of (programs - 3.5), the midpoint of the declared [1, 6].
    assert a["protection"]["sigma_centred_sum"] == SIGMA * (6 - 1) / 2
    py = _person_years(gw.lake).filter(pl.col("year") == 2024)
    for program, persons, mean in a["rows"]:
        members = py.filter(pl.col("program").list.contains(program))
        if persons is None:
            continue
        assert abs(persons - members.height) <= 6 * SIGMA
        assert 1 <= mean <= 6
        exact = members["program"].list.len().mean()
        # the centred sum's noise / n in the mean, plus the count's
        assert abs(mean - exact) <= 6 * a["protection"]["sigma_centred_sum"] / persons + 0.5


def test_the_same_query_is_answered_the_same_and_paid_once(gw, tmp_path):
    token = _token(_profile(tmp_path, gw, RESEARCH))
    other = _token(_profile(tmp_path, gw, RESEARCH, "second"))
    body = {"group_by": ["sex"], "where": {"year": [2023], "county_fips": ["001", "003"]}}
    same = {"where": {"county_fips": ["003", "001"], "year": [2023]}, "group_by": ["sex"]}
    answers = [_ask(gw, t, b).json() for t, b in
               [(token, body), (token, body), (other, same), (token, same)]]
    assert all(x["rows"] == answers[0]["rows"] for x in answers)
    assert [x["protection"]["repeat"] for x in answers] == [False, True, True, True]
    assert all(_spent(x) == pytest.approx(1 / (2 * SIGMA ** 2)) for x in answers)
    # Concurrent first askings of a new query: one pays, all get its answer.
    new = {"group_by": ["race_ethnicity"], "where": {"year": [2022]}}
    got: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: got.append(_ask(gw, token, new).json()))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({json.dumps(x["rows"]) for x in got}) == 1
    assert max(_spent(x) for x in got) == pytest.approx(2 / (2 * SIGMA ** 2))


def _unique_cell(lake: Lake) -> dict[str, Any]:
    """A person alone in their (year, county, age band, sex) cell, in a county of at
    least 60 people that year: the target of the attacks."""
    py = _person_years(lake)
    sizes = py.group_by("year", "county_fips").len().filter(pl.col("len") >= 60)
    cells = (py.join(sizes.select("year", "county_fips"), on=["year", "county_fips"])
             .group_by("year", "county_fips", "age_band", "sex")
             .agg(pl.len(), pl.col("race_ethnicity").first())
             .filter(pl.col("len") == 1).sort("year", "county_fips", "age_band", "sex"))
    assert cells.height > 0
    return cells.row(0, named=True)


def test_differencing_and_averaging_are_paid_for_and_stopped_by_the_budget(gw, tmp_path):
    """The tracker: two permitted queries whose populations differ by one person (a
    county-year, and the same without the target's sex in their age band); repeated with
    ever different padding so the noises differ, and averaged. The budget stops it
    long before the average tells whether the person is there."""
    lake = gw.lake
    t = _unique_cell(lake)
    token = _token(_profile(tmp_path, gw, RESEARCH))
    bands = [b for b in load_policy_bands() if b != t["age_band"]]
    other_sex = [s for s in ("F", "M", "U") if s != t["sex"]]
    diffs, answered, refusal = [], 0, None
    for i in range(1, 400):
        # Padding: a different set of the other age bands each time (distinct populations,
        # independent noise), always with the target's band.
        pad = [b for j, b in enumerate(bands) if (i >> j) & 1] + [t["age_band"]]
        base = {"where": {"year": [t["year"]], "county_fips": [t["county_fips"]],
                          "age_band": pad}, "group_by": ["sex"]}
        r1 = _ask(gw, token, base)
        if r1.status_code != 200:
            refusal = r1
            break
        answered += 1
        without = {"where": base["where"] | {"sex": other_sex}, "group_by": ["age_band"]}
        r2 = _ask(gw, token, without)
        if r2.status_code != 200:
            refusal = r2
            break
        answered += 1
        by_sex = {row[0]: row[1] for row in r1.json()["rows"]}
        if all(v is not None for v in by_sex.values()) and \
                all(row[1] is not None for row in r2.json()["rows"]):
            diffs.append(sum(by_sex.values()) - sum(row[1] for row in r2.json()["rows"]))
    assert refusal is not None and refusal.status_code == 403
    assert refusal.json()["errorCode"] == "BUDGET_EXHAUSTED"
    assert "budget" in refusal.json()["detail"]
    # The ledger is restricted like the rest of its zone (and its journal files too).
    assert [v for v in zones.violations(lake.root) if "query_ledger" in v] == []
    # Each query costs rho 1 / (2 sigma^2) or more (the second groups one year by age
    # band: still one cell per person): at most budget / that many answers.
    assert answered <= 2.0 / (1 / (2 * SIGMA ** 2)) + 1
    # What the attacker can know: each difference is the person (0 or 1) plus noise of
    # the sum of ~2 x cells independent Gaussians; the standard error of their average
    # stays far above the 0.5 that would separate "there" from "not there".
    cells_each = 3 + len(load_policy_bands())
    se = SIGMA * math.sqrt(cells_each) / math.sqrt(max(len(diffs), 1))
    assert se > 2.0
    if len(diffs) > 5:
        assert statistics.stdev(diffs) > 5 * SIGMA / 2


def load_policy_bands() -> list[str]:
    """The age bands a query can group by (the indicators' public grid, without ALL)."""
    from ids_lakehouse.marts import indicators
    from ids_lakehouse.model import load_model

    return [b for b in indicators.domain(load_model(), load_policy())["age_band"]
            if b != indicators.ALL]


def test_cell_key_perturbation_alone_would_fall_to_the_same_averaging():
    """Why the queries are not protected by the dashboard's cell-key perturbation: its
    noise is fixed per population, but every padded population is a new one, so the
    same differences averaged pin a single person (the ADR's measurement)."""
    import random

    rng = random.Random(7)
    policy = load_policy()
    ids = pl.Series([f"p{i}" for i in range(5000)])
    keys = cellkey.record_keys(ids, hashlib.sha256(b"test").digest()).to_list()
    target = 4999

    def published(members: list[int]) -> int:
        frame = pl.DataFrame({"persons": [len(members)],
                              "key_sum": [sum(keys[m] for m in members)]})
        value, _ = cellkey.publish(pl.col("persons"), cellkey.cell_key(pl.col("key_sum")),
                                   policy.cell_key_perturbation, 1)
        return int(frame.select(value).item())

    diffs = []
    for _ in range(200):
        pad = rng.sample(range(4999), 300)
        diffs.append(published(pad + [target]) - published(pad))
    estimate = statistics.mean(diffs)
    assert round(estimate) == 1 and abs(estimate - 1) < 0.3


def test_a_query_whose_cells_are_all_small(gw, tmp_path):
    token = _token(_profile(tmp_path, gw, RESEARCH))
    body = {"group_by": ["county_fips", "age_band", "sex", "race_ethnicity"],
            "where": {"year": [2024]}}
    r = _ask(gw, token, body)
    assert r.status_code == 200, r.text
    a = r.json()
    py = _person_years(gw.lake).filter(pl.col("year") == 2024)
    truth = {k[:4]: k[4] for k in py.group_by("county_fips", "age_band", "sex",
                                                "race_ethnicity").len().iter_rows()}
    published_small = [row for row in a["rows"] if row[4] is not None
                       and truth.get(tuple(row[:4]), 0) < 11]
    tiny = [row for row in a["rows"] if truth.get(tuple(row[:4]), 0) <= 2]
    assert len(tiny) > 1000 and max(truth.values()) < 11 + 4 * SIGMA
    assert all(row[4] is None or row[4] >= 11 for row in a["rows"])
    # A cell of 0-2 people shows only when its noise is >= 9 (P = 3.6% at sigma 5): it
    # then says nothing about the people in it (an empty cell shows as often).
    shown_tiny = sum(row[4] is not None for row in tiny) / len(tiny)
    assert shown_tiny < 0.06
    assert len(published_small) < 0.08 * len(a["rows"])


def test_fields_and_agreements_that_are_not_permitted(gw, tmp_path):
    research = _token(_profile(tmp_path, gw, RESEARCH))
    secret = "Zzyzx-7731"
    for body, says in [
        ({"group_by": ["person_id"]}, "group_by.0 is not a field"),
        ({"group_by": ["zip3"]}, "group_by.0 is not a field"),
        ({"group_by": [secret]}, "group_by.0 is not a field"),
        ({"where": {secret: ["x"]}, "group_by": ["year"]}, "a field this agreement may not"),
        ({"where": {"county_fips": [secret]}, "group_by": ["year"]}, "where.county_fips.0"),
        ({"where": {"year": ["2024"]}}, "where.year.0 is not a value"),
        ({"where": {"program": ["HMIS"]}, "group_by": ["year"]}, "choose programs"),
        ({"programs": {"any": ["CHILDCARE_SUBSIDY"]}, "group_by": ["year"]},
         "programs.any.0 is not a program of this agreement"),
        ({"group_by": ["county_fips"]}, "group by year"),
        ({"group_by": ["year"], "sigma": 1.0}, "sigma: at least"),
        ({"group_by": ["year"], "measure": {"mean": secret}}, "measure:"),
        ({"group_by": ["year"], secret: 1}, "(a field not accepted)"),
        ({"group_by": ["year"], "where": {secret: [1.5]}}, "where.(a field)"),
        # Numbers as numbers, text as text: nothing is coerced.
        ({"group_by": ["year"], "sigma": "5"}, "invalid sigma"),
        ({"group_by": ["year"], "sigma": True}, "invalid sigma"),
        ({"where": {"year": [2024.0]}}, "where.(a field).0"),
        ({"where": {"year": [True]}}, "where.(a field).0"),
        (b'{"group_by": ["year"], "group_by": ["sex"]}', "repeated"),
    ]:
        r = _ask(gw, research, body)
        assert r.status_code == 400, (body, r.text)
        assert says in r.json()["detail"], (body, r.json()["detail"])
        assert secret not in r.text
    for agreement in (OPERATIONS, INDICATORS):
        token = _token(_profile(tmp_path, gw, agreement, agreement))
        r = _ask(gw, token, README_QUERY)
        assert r.status_code == 403 and "does not permit statistical queries" in r.text
    assert _ask(gw, None, README_QUERY).status_code == 401
    r = requests.post(f"http://127.0.0.1:{gw.port}/v1/queries?sigma=5", json=README_QUERY,
                      headers={"Authorization": f"Bearer {research}"}, timeout=60)
    assert r.status_code == 400 and "no URL parameters" in r.text
    # Nothing refused was paid for.
    ok = _ask(gw, research, {"group_by": ["year"]}).json()
    assert _spent(ok) == pytest.approx(ok["protection"]["rho"])


def test_the_budget_is_the_agreements_across_tokens_and_restarts(published_copy, tmp_path):
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(token_recheck_s=0)) as gw:
        first = _token(_profile(tmp_path, gw, RESEARCH, "a"))
        a = _ask(gw, first, README_QUERY).json()
    with Gateway(lake, Settings(token_recheck_s=0)) as gw:
        second = _token(_profile(tmp_path, gw, RESEARCH, "b"))
        b = _ask(gw, second, {"group_by": ["year", "sex"]}).json()
        assert _spent(b) == pytest.approx(_spent(a) + b["protection"]["rho"])
        # Spend the rest with 1-year queries (each new: a different noise level), from
        # both tokens; then nothing more is answered, however cheap.
        for i in range(2000):
            r = _ask(gw, (first, second)[i % 2],
                     {"where": {"year": [2019 + i % 7]}, "sigma": 5 + i / 100})
            if r.status_code != 200:
                break
        assert r.status_code == 403 and r.json()["errorCode"] == "BUDGET_EXHAUSTED", r.text
        spent = gw.app.state.queries.spent(RESEARCH)
        assert 2.0 - 1 / (2 * 5 ** 2) < spent <= 2.0 + 1e-9


def test_an_agreement_is_limited_in_cells_answered_not_in_budget(published_copy, tmp_path):
    """Much noise is cheap in budget but not in work: a grid of 7,680 cells at sigma 9,999
    costs rho 5e-9 and a quarter of a second of CPU. The cells per minute of one
    agreement are limited, all its tokens together."""
    lake = Lake(published_copy.lake)
    with Gateway(lake, Settings(token_recheck_s=0, query_cells_per_minute=20_000)) as gw:
        tokens = [_token(_profile(tmp_path, gw, RESEARCH, f"t{i}")) for i in range(2)]
        big = {"group_by": ["county_fips", "age_band", "sex", "race_ethnicity"],
               "where": {"year": [2024]}}
        statuses = [_ask(gw, tokens[i % 2], big | {"sigma": 9999 - i}).status_code
                    for i in range(4)]
        assert statuses == [200, 200, 429, 429]
        # A small query still fits in what is left of the minute.
        assert _ask(gw, tokens[0], {"where": {"year": [2024]}}).status_code == 200
        throttled = gw.audited().filter(pl.col("kind") == "sharing_throttled")
        assert throttled.height >= 1


def test_a_gateway_killed_after_the_spend_leaks_nothing_unpaid(published_copy, tmp_path):
    """kill -9 between the ledger's commit and the answer: the researcher got nothing and
    the budget is spent; asking again gets the paid-for answer, free."""
    import os
    import signal
    import socket

    lake = Lake(published_copy.lake)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    endpoint = url + "/delta-sharing"
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    (crashes / "queries.after_spend").touch()
    env = os.environ | {"IDS_SHARING_PUBLIC_URL": url, "IDS_CRASH_DIR": str(crashes)}
    token = _token(_profile(tmp_path, type("G", (), {"endpoint": endpoint})(), RESEARCH))

    server = serve(port, env)
    try:
        with pytest.raises(requests.ConnectionError):
            requests.post(url + "/v1/queries", json=README_QUERY, timeout=60,
                          headers={"Authorization": f"Bearer {token}"})
        assert server.wait(timeout=30) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    from ids_lakehouse.sharing.queries import LEDGER, Ledger

    paid = Ledger(lake, lake.disclosure(LEDGER)).spent(RESEARCH)
    assert paid == pytest.approx(7 / (2 * SIGMA ** 2))
    server = serve(port, env)
    try:
        again = requests.post(url + "/v1/queries", json=README_QUERY, timeout=60,
                              headers={"Authorization": f"Bearer {token}"}).json()
        assert again["protection"]["repeat"] is True
        assert again["budget"]["rho_spent"] == pytest.approx(paid)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
