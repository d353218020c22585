"""Runtime configuration, read from the environment with documented defaults.

| variable            | default            | meaning                                      |
|---------------------|--------------------|----------------------------------------------|
| LAKE_ROOT           | ./lake             | root of every Delta table: a local folder or |
|                     |                    | an object store (s3://bucket/prefix, see     |
|                     |                    | ids_lakehouse/storage.py)                    |
| LANDING_ROOT        | ./landing          | where agencies drop extracts, one dir/source |
| DAGSTER_HOME        | ./.dagster_home    | Dagster instance (SQLite by default)         |
| IDS_PSEUDONYM_KEY   | (none)             | secret for keyed pseudonyms; never printed   |
| IDS_DUCKDB_MEMORY   | 3GiB               | memory DuckDB may use for record linkage     |
|                     |                    | before it spills to disk (LAKE_ROOT/_spill)  |
| IDS_LINKAGE_CHUNKS  | auto               | DuckDB scores pairs part x part (n x n runs) |
|                     |                    | at a time: `auto` is one part per 1,000,000  |
|                     |                    | records, or a whole number n                 |
| IDS_LAKE_LOCAL      | DAGSTER_HOME/      | for a lake on an object store: the local     |
|                     | lake-local/<hash>  | folder of its locks, linkage spill, warehouse|
|                     |                    | file and the services' SQLite files          |
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ids_lakehouse.storage import LakePath, ObjectPath, check_url, is_url

DEMO_KEY_FILE = Path(".ids_secrets") / "pseudonym.key"


@dataclass(frozen=True)
class Lake:
    """The lake layout is a public contract: `root/<zone>/<layer>/<name>`, one Delta table
    per directory, each layer in the access zone data_model/zones.yaml places it in."""

    root: LakePath

    @property
    def remote(self) -> bool:
        """The lake is on an object store (no directories, links, modes or flock)."""
        return isinstance(self.root, ObjectPath)

    def place(self, layer: str, name: str | None = None) -> LakePath:
        from ids_lakehouse.zones import no_links, zone_of

        base = self.root / zone_of(layer, name) / layer
        return no_links(self.root, base if name is None else base / name)

    def table(self, layer: str, name: str) -> LakePath:
        return self.place(layer, name)

    def bronze(self, source: str) -> LakePath:
        return self.table("bronze", source)

    def quarantine(self, source: str) -> LakePath:
        return self.table("quarantine", source)

    def silver(self, entity: str) -> LakePath:
        return self.table("silver", entity)

    def identity(self, name: str) -> LakePath:
        return self.table("identity", name)

    def gold(self, mart: str) -> LakePath:
        return self.table("gold", mart)

    def disclosure(self, name: str) -> LakePath:
        """Tables only the platform reads: disclosure-control state and registers (true
        counts of protected cells, the held-back basis)."""
        return self.table("disclosure", name)

    def audit(self, log: str = "events") -> LakePath:
        return self.table("audit", log)

    def models(self, kind: str) -> LakePath:
        return self.place("models", kind)

    def spill(self) -> Path:
        return self.local("_spill")

    def locks(self) -> Path:
        return self.local("_locks")

    def local(self, layer: str, name: str | None = None) -> Path:
        """What needs a local disk (scratch space, locks, the services' SQLite files):
        inside a local lake; for a lake on an object store, at the same place under its
        local folder (`local_state`), which is then machine-local state."""
        place = self.place(layer, name)
        if isinstance(place, Path):
            return place
        assert isinstance(self.root, ObjectPath)
        return local_state(self.root) / place.relative_to(self.root)

    def releases(self, agreement_id: str, purpose: str) -> LakePath:
        """An agreement's releases: identified (operations) ones stay restricted."""
        from ids_lakehouse.zones import no_links, zone_of

        return no_links(self.root, self.root / zone_of("releases", purpose) / "releases" /
                        agreement_id)

    def docs(self, kind: str) -> LakePath:
        """Generated documentation: `data_docs` (validation results), `catalog`."""
        return self.place(kind)


def lake_root() -> LakePath:
    value = os.environ.get("LAKE_ROOT", "lake").strip()
    if is_url(value):
        return ObjectPath(check_url(value))
    root = Path(value).resolve()
    # Delta's object store reads a path as a URL: "%41" is "A", "%2e%2e" is "..". A lake
    # there would write and read other directories than the one named.
    if re.search(r"%[0-9A-Fa-f]{2}|\\", str(root)):
        raise ValueError("LAKE_ROOT holds a percent escape (% and two hex digits) or a "
                         "backslash, which Delta tables read as another path: choose a "
                         "folder name without them")
    return root


def local_state(root: ObjectPath) -> Path:
    """The local folder of a lake on an object store: its locks (which serialise the
    processes of this machine; Delta's own commits are safe between machines) and the
    linkage engine's spill. IDS_LAKE_LOCAL, else one folder per LAKE_ROOT under
    DAGSTER_HOME. Created private (0700): the spill holds record comparisons."""
    import hashlib

    value = os.environ.get("IDS_LAKE_LOCAL", "").strip()
    folder = (Path(value).resolve() if value else
              dagster_home() / "lake-local" / hashlib.sha256(root.url.encode()).hexdigest()[:16])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def landing_root() -> Path:
    return Path(os.environ.get("LANDING_ROOT", "landing")).resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", ".dagster_home")).resolve()


def lake() -> Lake:
    return Lake(lake_root())


def duckdb_config(spill: Path) -> dict[str, str]:
    """DuckDB settings for the linkage engine. Beyond the memory limit DuckDB spills to
    `spill`; the spill holds record comparisons (personal data), so callers put it inside
    the lake (LAKE_ROOT/_spill) rather than in a shared temporary directory. DuckDB deletes
    its files when done."""
    limit = os.environ.get("IDS_DUCKDB_MEMORY", "3GiB").strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", limit, flags=re.IGNORECASE):
        raise ValueError(f"IDS_DUCKDB_MEMORY={limit!r} is not a memory size: write it like "
                         "3GiB, 4096MiB or 8GB")
    spill.mkdir(parents=True, exist_ok=True)
    return {"memory_limit": limit, "temp_directory": str(spill)}


# Records per part of a DuckDB prediction (`linkage_chunks`). Blocking on the date of
# birth makes a population's candidate pairs grow with its square: at 5,000,000 people
# the comparison vectors of one whole prediction filled 8 GiB of memory and 70 GB of spill.
# At 914,942 records (AMD EPYC, 2 cores) 2 x 2 parts took 122-134 s at 2.6 GiB, one part
# 103-114 s at 4.0 GiB: below a million records the whole is scored at once.
CHUNK_RECORDS = 1_000_000


def linkage_chunks(records: int) -> int:
    """How many parts a DuckDB prediction over `records` records is scored in, one after
    the other (IDS_LINKAGE_CHUNKS: `auto` or a whole number); the pairs are the same."""
    raw = os.environ.get("IDS_LINKAGE_CHUNKS", "auto").strip().lower()
    if raw == "auto":
        return max(1, -(-records // CHUNK_RECORDS))
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ValueError(f"IDS_LINKAGE_CHUNKS={raw!r} is not `auto` or a whole number "
                         "from 1 to 1000")
    return int(raw)


class MissingSecretError(RuntimeError):
    pass


def pseudonym_key() -> bytes:
    """The pseudonymisation secret, from the environment only."""
    value = os.environ.get("IDS_PSEUDONYM_KEY", "")
    if len(value) < 32:
        raise MissingSecretError(
            "IDS_PSEUDONYM_KEY is unset or shorter than 32 characters; set it in the "
            "environment (the demo generates a throwaway one in .ids_secrets/)."
        )
    return value.encode()


def ensure_demo_key(path: Path = DEMO_KEY_FILE) -> None:
    """For the demo only: use IDS_PSEUDONYM_KEY if set, else a random key kept in a
    git-ignored file. The key is never printed."""
    if os.environ.get("IDS_PSEUDONYM_KEY"):
        return
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    os.environ["IDS_PSEUDONYM_KEY"] = path.read_text().strip()
