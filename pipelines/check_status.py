"""The one place the lakehouse reads Dagster internals: the latest execution of asset
checks, which the release gate needs and Dagster 1.13 exposes only through the event-log
storage and a private status enum. tests/test_check_status.py pins its behaviour, so a
Dagster upgrade that moves either fails there, not in a release."""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetCheckKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as Status,
)


def latest_check_status(instance: DagsterInstance, keys: Iterable[AssetCheckKey]
                        ) -> dict[AssetCheckKey, bool | None]:
    """Per check: True if its latest execution passed, False if it failed (or its step
    failed), None if it never ran or is only planned."""
    keys = list(keys)
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    out: dict[AssetCheckKey, bool | None] = {}
    for key in keys:
        record = latest.get(key)
        done = record is not None and record.status != Status.PLANNED
        out[key] = record.status == Status.SUCCEEDED if record is not None and done else None
    return out
