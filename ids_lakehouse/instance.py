"""The Dagster instance: DAGSTER_HOME with the embedded (SQLite) default configuration,
unless a dagster.yaml is already there (e.g. the PostgreSQL production profile)."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from ids_lakehouse import config


def ensure_instance() -> Path:
    home = config.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        template = resources.files("pipelines").joinpath("instance/dagster.yaml")
        shutil.copyfile(str(template), target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
