"""Jobs: one ingest job per source (a landed file is one partition of it) and the
downstream refresh (conform, link, publish, release)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from assets.keys import bronze_key
from ids_lakehouse.sources import load_sources

# Runs that write the shared downstream tables carry this tag; the instance profiles allow
# one such run at a time (pipelines/instance/*.yaml), so two refreshes never interleave.
DOWNSTREAM_TAG = {"ids/writes": "downstream"}
DOWNSTREAM = AssetSelection.groups("conform", "identity", "marts", "releases",
                                   "governance").materializable()


def ingest_job_name(source: str) -> str:
    return f"ingest_{source}"


ingest_jobs = {
    source: define_asset_job(ingest_job_name(source), selection=[bronze_key(source)],
                             tags={"ids/source": source},
                             description=f"Ingest one landed {source} file (a partition).")
    for source in load_sources()}

nightly_job = define_asset_job("nightly_refresh", selection=DOWNSTREAM, tags=DOWNSTREAM_TAG,
                               description="Conform, link, publish and release.")
