"""From landing to published without a person: Dagster declarative automation refreshes
every asset downstream of bronze after an accepted delivery. The condition is applied here,
in one place, to every downstream asset; the nightly schedule is the backstop (and the one
that applies steward decisions when no file arrived)."""

from __future__ import annotations

from dagster import (
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    map_asset_specs,
)

from pipelines.jobs import DOWNSTREAM, DOWNSTREAM_TAG
from pipelines.sensors import interval

# Refresh when something the asset depends on was updated (an accepted delivery, or an
# upstream layer refreshed in this same request) and nothing it depends on is still being
# written. Unlike Dagster's `eager`, a rejected delivery (a file partition that stays
# unmaterialized) does not hold back every later delivery, and nothing runs before the
# first delivery.
REFRESH = (AutomationCondition.any_deps_updated().since_last_handled()
           & ~AutomationCondition.any_deps_in_progress()
           & ~AutomationCondition.in_progress()).with_label("refresh_after_delivery")

GROUPS = ("conform", "identity", "marts", "releases")


def automated(assets: list) -> list:
    """The assets, with REFRESH on every one downstream of bronze."""
    return list(map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=REFRESH)
        if spec.group_name in GROUPS else spec, assets))


downstream_automation = AutomationConditionSensorDefinition(
    "downstream_automation", target=DOWNSTREAM, run_tags=DOWNSTREAM_TAG,
    emit_backfills=False, default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=interval("IDS_AUTOMATION_INTERVAL_S", 30),
    description="Refreshes conform, identity, marts and releases after accepted deliveries.")
