"""The marts and the research file read the linked people once per set of table versions
(two steps of one run share a process); a change to any input table is read again."""

from __future__ import annotations

import polars as pl

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.marts import people, publish


def test_golden_persons_are_computed_once_per_version_of_their_inputs(published_copy,
                                                                       monkeypatch):
    lake = Lake(published_copy.lake)
    calls = []
    real = people.golden_persons

    def counted(records, xref):
        calls.append(records.height)
        return real(records, xref)

    monkeypatch.setattr(people, "golden_persons", counted)
    publish._LAST_PEOPLE.clear()
    who = {"run_id": "test"}
    publish.publish_marts(lake, who)
    publish.publish_research(lake, who)
    assert len(calls) == 1

    # A record changes (a new version of person_record): read and computed again, and
    # the directory shows the change.
    path = lake.silver("person_record")
    records = delta.frame(path)
    person = delta.frame(lake.identity("person_xref")).filter(
        pl.col("source") == records["source"][0],
        pl.col("source_record_id") == records["source_record_id"][0])["person_id"][0]
    changed = records.with_columns(pl.when(pl.int_range(pl.len()) == 0)
                                   .then(pl.lit("+13605550199")).otherwise(pl.col("phone"))
                                   .alias("phone"))
    delta.overwrite(path, changed.to_arrow())
    publish.publish_marts(lake, who)
    assert len(calls) == 2
    directory = delta.frame(lake.gold("contact_directory"))
    assert "+13605550199" in directory.filter(pl.col("person_id") == person)["phone"].to_list()

    # The same version number on a table rebuilt in its place is another table.
    version = delta.table(path).version()
    publish.publish_research(lake, who)
    assert len(calls) == 2
    import shutil

    shutil.rmtree(path)
    for _ in range(version + 1):
        delta.overwrite(path, records.to_arrow())
    assert delta.table(path).version() == version
    publish.publish_research(lake, who)
    assert len(calls) == 3
