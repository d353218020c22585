"""The data-request policy (data_model/requests.yaml) on requests it was not written for:
each rule, the same answer for the same request, the SLA, and a steward's approval
drafting an agreement that loads like any other."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from ids_lakehouse import audit
from ids_lakehouse.agreements import load_agreement
from ids_lakehouse.config import Lake
from ids_lakehouse.data_requests import (
    DataRequest,
    RequestError,
    decide,
    evaluate,
    file,
    listing,
    load_request_policy,
    parse_request,
)

TODAY = dt.date(2026, 11, 30)
BASE = {"title": "Housing and school outcomes", "purpose": "research",
        "recipient_organisation": "State University", "recipient_contact": "pi@uni.example.edu",
        "legal_basis": "FERPA studies exception", "justification": "attendance and housing",
        "start": "2027-01-01", "end": "2027-12-31", "sources": ["hmis", "schools"],
        "columns": {"research_person": ["birth_year", "sex"]}}


def request(**change) -> DataRequest:
    return parse_request(BASE | change)


def rules(evaluation) -> set[tuple[str, str]]:
    return {(f.rule, f.need) for f in evaluation.findings}


def test_published_aggregates_are_granted_as_open_data():
    e = evaluate(request(purpose="indicators", columns={"indicators": ["persons", "year"]}),
                 TODAY)
    assert e.outcome == "granted_aggregate" and rules(e) == {("aggregate", "open")}


def test_person_level_research_data_needs_a_steward_and_says_why():
    e = evaluate(request(columns={"research_person": ["birth_year", "zip3"],
                                  "research_participation": ["program"]}), TODAY)
    assert e.outcome == "needs_steward"
    assert ("classification", "steward") in rules(e) and ("regime:HIPAA", "steward") in rules(e)
    said = " ".join(f.message for f in e.findings)
    assert "research_person.zip3" in said and "research_participation.program" in said


@pytest.mark.parametrize("change,rule", [
    ({"columns": {"person_xref": ["person_id"]}}, "marts_only"),
    ({"columns": {"contact_directory": ["phone"]}}, "purpose"),
    ({"purpose": "operations", "columns": {"research_person": ["sex"]}}, "purpose"),
    ({"columns": {"research_person": ["ssn"]}}, "known_columns"),
    ({"columns": {"research_person": []}}, "known_columns"),
    ({"start": "2026-01-01", "end": "2026-06-30"}, "period"),
    ({"start": "2027-06-01", "end": "2027-01-01"}, "period"),
    ({"start": "2027-01-01", "end": "2031-01-01"}, "period"),
    ({"sources": ["hmis", "irs"]}, "sources"),
])
def test_what_no_steward_may_waive_is_refused_naming_the_rule(change, rule):
    e = evaluate(request(**change), TODAY)
    assert e.outcome == "refused" and (rule, "refused") in rules(e)


def test_direct_identifiers_leave_only_for_operations(monkeypatch):
    from ids_lakehouse.marts.declaration import load_marts

    ops = request(purpose="operations", columns={"contact_directory": ["phone", "city"]},
                  sources=["travellers"])
    assert evaluate(ops, TODAY).outcome == "needs_steward"
    # The same columns under another purpose are refused by the purpose rule; a direct
    # identifier declared in a research mart would be refused by its own rule.
    marts = load_marts()
    column = marts.marts["research_person"].columns["sex"].model_copy(
        update={"classification": "direct_identifier"})
    patched = marts.model_copy(update={"marts": marts.marts | {"research_person": marts.marts[
        "research_person"].model_copy(update={"columns": marts.marts["research_person"]
                                              .columns | {"sex": column}})}})
    monkeypatch.setattr("ids_lakehouse.data_requests.load_marts", lambda: patched)
    assert ("direct_identifiers", "refused") in rules(evaluate(request(), TODAY))


def test_a_regime_the_policy_refuses_is_refused_whoever_asks():
    policy = load_request_policy().model_copy(
        update={"regimes": load_request_policy().regimes | {"HIPAA": "refused"}})
    e = evaluate(request(), TODAY, policy)
    assert e.outcome == "refused" and ("regime:HIPAA", "refused") in rules(e)
    assert load_request_policy().regimes["42_CFR_PART_2"] == "refused"


def test_the_same_request_always_gets_the_same_answer():
    answers = {evaluate(request(columns={"research_participation": ["program", "year"],
                                         "research_person": ["sex", "birth_year"]}),
                        TODAY).as_json() for _ in range(3)}
    reordered = evaluate(request(columns={"research_person": ["birth_year", "sex"],
                                          "research_participation": ["year", "program"]}),
                         TODAY).as_json()
    assert len(answers) == 1 and json.loads(reordered)["findings"] == \
        json.loads(answers.pop())["findings"]


@pytest.mark.parametrize("field,value", [
    ("recipient_contact", "not an address"), ("title", "two\nlines"), ("title", ""),
    ("purpose", "marketing"), ("start", "yesterday"), ("columns", {}), ("sources", []),
    ("title", "x" * 201),
])
def test_a_malformed_request_names_the_field_not_the_value(field, value):
    with pytest.raises(RequestError) as raised:
        parse_request(BASE | {field: value})
    assert field in str(raised.value) and (not isinstance(value, str) or len(value) < 3
                                           or value not in str(raised.value))


def test_filed_decided_audited_and_the_draft_loads_as_an_agreement(published_copy, tmp_path):
    lake = Lake(published_copy.lake)
    now = dt.datetime(2026, 11, 30, 9, tzinfo=dt.timezone.utc)
    filed = file(lake, "pi@uni.example.edu", request(), now=now - dt.timedelta(days=31))
    assert filed.status == "needs_steward"
    assert filed.overdue(now, load_request_policy())
    assert not filed.overdue(now - dt.timedelta(days=2), load_request_policy())
    with pytest.raises(RequestError, match="own request"):
        decide(lake, filed.id, "pi@uni.example.edu", "approved", "mine")
    with pytest.raises(RequestError, match="one line"):
        decide(lake, filed.id, "steward@ids.example.gov", "approved", " ")
    done = decide(lake, filed.id, "steward@ids.example.gov", "approved", "FERPA agreement",
                  now=now)
    assert done.status == "approved" and not done.overdue(now, load_request_policy())
    with pytest.raises(RequestError, match="nothing to decide"):
        decide(lake, filed.id, "steward@ids.example.gov", "denied", "changed my mind")
    assert done.draft is not None
    draft = tmp_path / "agreement.yaml"
    (tmp_path / "agreement.yaml").write_text(done.draft)
    agreement = load_agreement(draft.rename(tmp_path / "dsa-request-1-housing-and-school-"
                                            "outcomes.yaml"))
    assert agreement.approver == "steward@ids.example.gov"
    assert agreement.release == {"research_person": ["birth_year", "sex"]}
    assert set(agreement.data_owners) == {"data-governance@k12.example.gov",
                                          "hmis-lead@commerce.example.gov"}
    refused = file(lake, "pi@uni.example.edu", request(columns={"person_xref": ["person_id"]}))
    assert refused.status == "refused"
    with pytest.raises(RequestError, match="nothing to decide"):
        decide(lake, refused.id, "steward@ids.example.gov", "approved", "override")
    assert [f.id for f in listing(lake, "pi@uni.example.edu")] == [refused.id, filed.id]
    events = pl.from_arrow(audit.read(lake)).filter(
        pl.col("kind").str.starts_with("data_request"))
    assert events["kind"].to_list().count("data_request_filed") == 2
    assert events.filter(pl.col("kind") == "data_request_decided")["actor"].to_list() == \
        ["steward@ids.example.gov"]


def test_red_team_round_2_holds():
    """What a second attack found: a person-level mart's harmless column granted as open
    data; names that were free text (an SSN as an agency) filed and audited; a period
    starting in year 9999; legal citations refused as dates."""
    ops = evaluate(request(purpose="operations", sources=["travellers"],
                           columns={"contact_directory": ["source"]}), TODAY)
    assert ops.outcome == "needs_steward" and ("person_level", "steward") in rules(ops)
    for change in ({"columns": {"research_person": ["JOHN SMITH 1980-04-12"]}},
                   {"columns": {"987-65-4320": ["first_name"]}},
                   {"sources": ["hmis", "555-12-3456"]},
                   {"title": "follow-up for 123-45-6789"},
                   {"justification": "born April 12, 1980"},
                   {"justification": "line\u2028separator"},
                   {"legal_basis": "1 2 3 4 5 6 7 8 9"}):
        with pytest.raises(RequestError) as raised:
            parse_request(BASE | change)
        said = str(raised.value)
        assert "1980" not in said and "4320" not in said and "3456" not in said
    fine = request(legal_basis="Under 42 U.S.C. 1320d-6 and RCW 43.70.050",
                   justification="Per 45 CFR 164.512(b); FERPA 34 CFR 99.31(a)(6)")
    assert evaluate(fine, TODAY).outcome == "needs_steward"
    far = evaluate(request(start="2030-01-01", end="2030-12-31"), TODAY)
    assert far.outcome == "refused" and ("period", "refused") in rules(far)


def test_a_flood_of_requests_stops_and_an_ended_period_is_not_approved(published_copy):
    from ids_lakehouse.data_requests import TooMany

    lake = Lake(published_copy.lake)
    limit = load_request_policy().max_requests_per_day
    now = dt.datetime(2026, 11, 30, 9, tzinfo=dt.timezone.utc)
    filed = [file(lake, "flood@uni.example.edu", request(), now=now) for _ in range(limit)]
    with pytest.raises(TooMany):
        file(lake, "flood@uni.example.edu", request(), now=now)
    file(lake, "other@uni.example.edu", request(), now=now)     # others are not held up
    # Waiting requests come first, the oldest first.
    waiting = [f.id for f in listing(lake) if f.status == "needs_steward"]
    assert waiting == sorted(waiting) and listing(lake)[0].id == filed[0].id
    later = now + dt.timedelta(days=800)
    with pytest.raises(RequestError, match="period has ended"):
        decide(lake, filed[0].id, "steward@ids.example.gov", "approved", "too late", now=later)
    assert decide(lake, filed[0].id, "steward@ids.example.gov", "denied", "period over",
                  now=later).status == "denied"
