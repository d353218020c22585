"""A delivery is accepted or rejected as a whole, and conform reads accepted deliveries only:
a rejected re-send, or a file whose ingest died half-way, never replaces a source's silver
rows."""

from __future__ import annotations

import os

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.conform import state
from ids_lakehouse.ingest.bronze import ingest_file
from ids_lakehouse.ingest.delivery import ingest_delivery, ledger
from ids_lakehouse.ingest.landing import landed_file
from ids_lakehouse.sources import load_sources
from tests.test_conform import medicaid_rows


@pytest.fixture
def medicaid():
    return load_sources()["medicaid"]


def _land(tmp_path, name: str, frame: pl.DataFrame, mtime: int):
    folder = tmp_path / "medicaid"
    folder.mkdir(exist_ok=True)
    path = folder / name
    frame.drop([c for c in frame.columns if c.startswith("_")]).write_csv(path)
    os.utime(path, (mtime, mtime))
    return path


def test_a_rejected_resend_never_replaces_the_accepted_snapshot(tmp_path, lake, medicaid):
    jan = _land(tmp_path, "jan.csv", medicaid_rows({}, {}, {}), 1_700_000_000)
    first = ingest_delivery(medicaid, landed_file(tmp_path, medicaid, jan), lake, "r1")
    assert first.accepted
    # February's snapshot lost its required member_id column: rejected as a whole.
    feb = tmp_path / "medicaid" / "feb.csv"
    feb.write_text("first_name,last_name\nZebulon,Quux\n")
    os.utime(feb, (1_700_100_000, 1_700_100_000))
    second = ingest_delivery(medicaid, landed_file(tmp_path, medicaid, feb), lake, "r2")
    assert not second.accepted and second.error.rule == "missing_required_columns"

    decisions = {r["file"]: r for r in ledger(lake).to_pylist()}
    assert decisions["medicaid/jan.csv"]["status"] == "accepted"
    assert decisions["medicaid/jan.csv"]["rows_written"] == 3
    assert decisions["medicaid/feb.csv"]["status"] == "rejected"
    assert decisions["medicaid/feb.csv"]["rule"] == "missing_required_columns"
    assert "Zebulon" not in str(decisions["medicaid/feb.csv"])
    rows = state.bronze_to_conform(lake, medicaid)
    assert set(rows["_file"]) == {"medicaid/jan.csv"} and rows.height == 3


def test_an_ingest_that_died_before_its_decision_is_invisible(tmp_path, lake, medicaid):
    jan = _land(tmp_path, "jan.csv", medicaid_rows({}, {}), 1_700_000_000)
    assert ingest_delivery(medicaid, landed_file(tmp_path, medicaid, jan), lake, "r1").accepted
    # A newer snapshot whose bronze rows were committed by a run that then died.
    feb = _land(tmp_path, "feb.csv", medicaid_rows({}), 1_700_100_000)
    ingest_file(medicaid, landed_file(tmp_path, medicaid, feb), lake, "dead")
    assert delta.count(lake.bronze("medicaid")) == 3         # the rows are in bronze...
    rows = state.bronze_to_conform(lake, medicaid)
    assert set(rows["_file"]) == {"medicaid/jan.csv"}         # ...but nobody reads them
    # The retry decides it; then it is the newest accepted snapshot.
    assert ingest_delivery(medicaid, landed_file(tmp_path, medicaid, feb), lake,
                           "retry").accepted
    rows = state.bronze_to_conform(lake, medicaid)
    assert set(rows["_file"]) == {"medicaid/feb.csv"} and rows.height == 1
    assert delta.count(lake.bronze("medicaid")) == 3         # replaced, not duplicated


def test_a_rejected_delivery_withdraws_the_rows_it_wrote(tmp_path, lake, medicaid,
                                                         monkeypatch):
    from ids_lakehouse.ingest import delivery
    from ids_lakehouse.ingest.reconcile import Reconciliation

    jan = _land(tmp_path, "jan.csv", medicaid_rows({}, {}), 1_700_000_000)
    # The independent count disagrees with what was stored (e.g. a reader bug).
    monkeypatch.setattr(delivery, "reconcile", lambda *a: Reconciliation(5, 2, 2, 0))
    outcome = ingest_delivery(medicaid, landed_file(tmp_path, medicaid, jan), lake, "r1")
    assert not outcome.accepted and outcome.error.rule == "file_reconciles"
    assert delta.count(lake.bronze("medicaid")) == 0
    assert state.bronze_to_conform(lake, medicaid) is None
    assert state.deliveries_to_conform(lake, medicaid) == []
