"""The code location: every asset, check, sensor and schedule of the lakehouse."""

from __future__ import annotations

import os

from dagster import Definitions, MetadataValue, in_process_executor, map_asset_specs

from assets.conform import conform, silver_expectations
from assets.governance import catalog_files
from assets.identity import identity, steward_decisions
from assets.ingest import bronze_assets
from assets.lake_tables import lake_table_specs
from assets.marts import marts, research_file, warehouse_views
from assets.releases import release_assets
from pipelines.automation import automated, downstream_automation
from pipelines.jobs import ingest_jobs, nightly_job
from pipelines.resources import LakeResource
from pipelines.schedules import nightly_refresh, steward_decisions_sensor
from pipelines.sensors import audit_run_failures, audit_run_successes, landing_sensor


def linked_to_console(assets: list) -> list:
    """With IDS_CONSOLE_URL set (where the steward's console is served), every table's
    asset links to its page in the console's catalog ("console" in its metadata)."""
    from ids_lakehouse.console.catalog import tables

    base = os.environ.get("IDS_CONSOLE_URL", "").rstrip("/")
    if not base:
        return assets
    pages = {t.key for t in tables()}       # the tables the console has a page for
    return list(map_asset_specs(lambda spec: spec.merge_attributes(metadata={
        "console": MetadataValue.url(f"{base}/console/catalog/{spec.key.to_user_string()}")})
        if spec.key.to_user_string() in pages else spec, assets))


def build_definitions() -> Definitions:
    return Definitions(
        assets=linked_to_console([
            *automated([*bronze_assets(), conform, identity, marts, research_file,
                        warehouse_views, *release_assets(), catalog_files]),
            # Written by stewards (the CLI), read by identity: external, never automated.
            steward_decisions,
            # The lake's other tables (quarantine, ledgers, models, audit): reported by the
            # steps that write them.
            *lake_table_specs()]),
        asset_checks=[silver_expectations],
        jobs=[*ingest_jobs.values(), nightly_job],
        schedules=[nightly_refresh],
        sensors=[landing_sensor, downstream_automation, audit_run_failures,
                 audit_run_successes, steward_decisions_sensor],
        resources={"lake": LakeResource.from_env()},
        # One process per run: the layers run one after another anyway, and a step process
        # per asset costs seconds of start-up each. A run whose process dies is retried
        # whole by the instance (run_retries).
        executor=in_process_executor,
    )


defs = build_definitions()
