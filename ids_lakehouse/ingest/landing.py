"""The landing zone: `LANDING_ROOT/<source>/<file>`. A landed file is identified by its
content hash, so the same bytes are never ingested twice and a corrected file (new bytes) is
a new delivery."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ids_lakehouse.sources import SourceDefinition

IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
KEY_HASH_CHARS = 12


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class LandedFile:
    source: str
    path: Path
    name: str        # path relative to the landing root, e.g. "hmis/hmis_2025.csv"
    sha256: str
    size: int
    landed_at: dt.datetime  # the file's modification time: when the agency delivered it

    @property
    def partition_key(self) -> str:
        return partition_key(self.path.name, self.sha256)


def partition_key(file_name: str, sha256: str) -> str:
    """One partition per delivered file version: readable name plus a content-hash prefix."""
    return f"{file_name}@{sha256[:KEY_HASH_CHARS]}"


def parse_partition_key(key: str) -> tuple[str, str]:
    name, _, digest = key.rpartition("@")
    if not name or len(digest) != KEY_HASH_CHARS:
        raise ValueError(f"not a landed-file partition key: {key!r}")
    return name, digest


def usable_name(name: str) -> bool:
    """Dagster partition keys may not contain '...' or control characters."""
    return "..." not in name and name.isprintable()


def candidate_files(landing_root: Path, defn: SourceDefinition) -> list[Path]:
    folder = Path(landing_root) / defn.source
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(IN_PROGRESS_SUFFIXES)
                  and usable_name(p.name)
                  and fnmatch.fnmatch(p.name, defn.file_pattern))


def landed_file(landing_root: Path, defn: SourceDefinition, path: Path,
                sha256: str | None = None) -> LandedFile:
    path = Path(path)
    st = path.stat()
    return LandedFile(source=defn.source, path=path,
                      name=path.relative_to(landing_root).as_posix(),
                      sha256=sha256 or file_sha256(path), size=st.st_size,
                      landed_at=dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc))


def scan(landing_root: Path, sources: dict[str, SourceDefinition],
         known: dict[str, tuple[int, int, str]] | None = None) -> list[LandedFile]:
    """Every landed file of every source. `known` maps a path to (size, mtime_ns, sha256)
    from an earlier scan, so unchanged files are not hashed again."""
    known = known or {}
    out = []
    for defn in sources.values():
        for path in candidate_files(landing_root, defn):
            st = path.stat()
            cached = known.get(str(path))
            sha = cached[2] if cached and cached[:2] == (st.st_size, st.st_mtime_ns) else None
            out.append(landed_file(landing_root, defn, path, sha))
    return out


def find_landed(landing_root: Path, defn: SourceDefinition, key: str) -> LandedFile:
    """The file a partition key names, checked against its hash."""
    name, digest = parse_partition_key(key)
    path = Path(landing_root) / defn.source / name
    if not path.is_file():
        raise FileNotFoundError(f"[{defn.source}] partition {key}: {path} is no longer in the "
                                "landing zone")
    landed = landed_file(landing_root, defn, path)
    if not landed.sha256.startswith(digest):
        raise FileChangedError(f"[{defn.source}] partition {key}: {landed.name} has changed "
                               "since it was registered; the new version is a new partition")
    return landed


class FileChangedError(RuntimeError):
    pass
