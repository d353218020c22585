"""The landing zone: `LANDING_ROOT/<source>/<file>`. A landed file is identified by its
content hash, so the same bytes are never ingested twice and a corrected file (new bytes) is
a new delivery."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ids_lakehouse.sources import SourceDefinition

IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
KEY_HASH_CHARS = 12


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The content hash; a symlink is never followed (O_NOFOLLOW)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
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
    """Dagster partition keys may not contain '...' or control characters, and a name that
    is not valid UTF-8 (undecodable bytes, kept by Python as lone surrogates) cannot be
    stored or logged."""
    return "..." not in name and name.isprintable() and _utf8(name)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str) -> str:
    """A landing-zone name as it may be logged: control characters and bytes that are not
    UTF-8 escaped (\\n, \\xff), so a name can neither forge a log line nor break a write."""
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:          # an undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or not ch.isprintable():
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Refusal:
    """Something in the landing zone that is not a delivery the scanner can place."""

    name: str            # path relative to the landing root
    reason: str


@dataclass
class Survey:
    files: list[LandedFile] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


def waiting(name: str) -> bool:
    """Hidden files and files still being written are left alone, silently."""
    return name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES)


def _matches(name: str, pattern: str) -> bool:
    """File patterns match regardless of case: HMIS_2025.CSV is a *.csv."""
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def _refusal(path: Path, defn: SourceDefinition) -> str | None:
    """Why a directory entry of a source folder is not a delivery (None: it is one)."""
    if path.is_symlink():
        return "a symbolic link; deliveries must be regular files (links are never followed)"
    if not stat.S_ISREG(path.lstat().st_mode):
        return "not a regular file"
    if not usable_name(path.name):
        return ("the file name has control characters, bytes that are not UTF-8, or "
                "'...'; rename the file")
    if not _matches(path.name, defn.file_pattern):
        return f"the name does not match the source's file_pattern {defn.file_pattern!r}"
    return None


def landed_file(landing_root: Path, defn: SourceDefinition, path: Path,
                sha256: str | None = None) -> LandedFile:
    path = Path(path)
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(f"[{defn.source}] {path.name} is not a regular file "
                                "(symbolic links are never followed)")
    return LandedFile(source=defn.source, path=path,
                      name=path.relative_to(landing_root).as_posix(),
                      sha256=sha256 or file_sha256(path), size=st.st_size,
                      landed_at=dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc))


def survey(landing_root: Path, sources: dict[str, SourceDefinition],
           known: dict[str, tuple[int, int, str]] | None = None) -> Survey:
    """Every delivery in the landing zone, and everything else there, each with the reason
    it is not one. `known` maps a path to (size, mtime_ns, sha256) from an earlier survey,
    so unchanged files are not hashed again. One unreadable entry is refused alone."""
    known = known or {}
    root = Path(landing_root)
    out = Survey()
    if not root.is_dir():
        return out
    for entry in sorted(root.iterdir()):
        rel = shown(entry.name)
        if waiting(rel) or rel.startswith("_"):
            continue   # _truth and other underscore folders belong to the operators
        defn = sources.get(rel)
        if defn is None or entry.is_symlink() or not entry.is_dir():
            reason = ("a symbolic link; never followed" if entry.is_symlink() else
                      "not inside a source folder" if not entry.is_dir() else
                      "no source definition has this folder's name")
            out.refused.append(Refusal(rel, reason))
            continue
        try:
            children = sorted(entry.iterdir())
        except OSError as exc:
            out.refused.append(Refusal(rel, f"the folder cannot be read "
                                            f"({type(exc).__name__})"))
            continue
        for path in children:
            name = f"{rel}/{shown(path.name)}"
            if waiting(path.name):
                continue
            try:
                refused = _refusal(path, defn)
                if refused is None:
                    st = path.lstat()
                    cached = known.get(str(path))
                    sha = cached[2] if cached and tuple(cached[:2]) == (
                        st.st_size, st.st_mtime_ns) else None
                    out.files.append(landed_file(root, defn, path, sha))
                    continue
            except OSError as exc:
                refused = f"the file cannot be read ({type(exc).__name__})"
            out.refused.append(Refusal(name, refused))
    return out


def scan(landing_root: Path, sources: dict[str, SourceDefinition],
         known: dict[str, tuple[int, int, str]] | None = None) -> list[LandedFile]:
    """Every delivery in the landing zone (see `survey` for what is refused and why)."""
    return survey(landing_root, sources, known).files


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
