"""The code location: every asset, check, sensor and schedule of the lakehouse."""

from __future__ import annotations

from dagster import Definitions

from assets.conform import conform, silver_expectations
from assets.governance import catalog_files
from assets.identity import identity
from assets.ingest import bronze_assets
from assets.marts import marts, warehouse_views
from assets.releases import release_assets
from pipelines.resources import LakeResource
from pipelines.schedules import nightly_job, nightly_refresh
from pipelines.sensors import audit_run_failures, landing_sensor


def build_definitions() -> Definitions:
    return Definitions(
        assets=[*bronze_assets(), conform, identity, marts, warehouse_views,
                *release_assets(), catalog_files],
        asset_checks=[silver_expectations],
        jobs=[nightly_job],
        schedules=[nightly_refresh],
        sensors=[landing_sensor, audit_run_failures],
        resources={"lake": LakeResource.from_env()},
    )


defs = build_definitions()
