"""The code location: every asset, check, sensor and schedule of the lakehouse."""

from __future__ import annotations

from dagster import Definitions

from assets.conform import conform, silver_expectations
from assets.identity import identity
from assets.marts import marts, warehouse_views
from assets.ingest import bronze_assets
from pipelines.resources import LakeResource
from pipelines.sensors import landing_sensor


def build_definitions() -> Definitions:
    return Definitions(
        assets=[*bronze_assets(), conform, identity, marts, warehouse_views],
        asset_checks=[silver_expectations],
        sensors=[landing_sensor],
        resources={"lake": LakeResource.from_env()},
    )


defs = build_definitions()
