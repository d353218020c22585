"""pipelines/check_status.py reads a Dagster internal (the latest asset-check execution and
its private status enum) for the release gate: its answers are pinned here, on a real
instance, so a Dagster upgrade that moves either fails in this test, not in a release."""

from __future__ import annotations

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    asset,
    materialize,
)

from pipelines.check_status import latest_check_status

KEY = AssetKey(["gold", "probe"])


def _asset(passes: bool):
    @asset(key=KEY, check_specs=[AssetCheckSpec("gate", asset=KEY, blocking=True),
                                 AssetCheckSpec("never", asset=KEY)])
    def probe():
        yield MaterializeResult()
        yield AssetCheckResult(check_name="gate", passed=passes)

    return probe


def test_latest_check_status_passed_failed_and_never_run():
    gate, never = AssetCheckKey(KEY, "gate"), AssetCheckKey(KEY, "never")
    with DagsterInstance.ephemeral() as instance:
        assert latest_check_status(instance, [gate, never]) == {gate: None, never: None}
        materialize([_asset(True)], instance=instance,
                    selection=[KEY], raise_on_error=False)
        status = latest_check_status(instance, [gate, never])
        assert status[gate] is True
        assert status[never] is None      # planned, never evaluated: not a pass
        materialize([_asset(False)], instance=instance, raise_on_error=False)
        assert latest_check_status(instance, [gate])[gate] is False    # the latest counts
