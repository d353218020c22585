"""The Dagster instance: DAGSTER_HOME with the embedded (SQLite) default configuration,
unless a dagster.yaml is already there (e.g. the PostgreSQL production profile).

IDS_DAGSTER_PROFILE=postgres (or `ensure_instance("postgres")`) copies the production
profile instead; it reads its connection from DAGSTER_PG_* environment variables.
`kubernetes` is that profile with each run launched as a Kubernetes Job (dagster-k8s)."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from ids_lakehouse import config

PROFILES = {"embedded": "instance/dagster.yaml",
            "postgres": "instance/dagster.postgres.yaml",
            "kubernetes": "instance/dagster.kubernetes.yaml"}
PROFILE_ENV = "IDS_DAGSTER_PROFILE"


def profile_template(profile: str) -> Path:
    if profile not in PROFILES:
        raise ValueError(f"unknown Dagster instance profile {profile!r} "
                         f"(expected one of {', '.join(PROFILES)})")
    return Path(str(resources.files("pipelines").joinpath(PROFILES[profile])))


def ensure_instance(profile: str | None = None) -> Path:
    """Make DAGSTER_HOME exist and hold a dagster.yaml; an existing one is never replaced."""
    profile = profile or os.environ.get(PROFILE_ENV) or "embedded"
    template = profile_template(profile)
    home = config.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(template, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
