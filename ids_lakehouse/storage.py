"""Where the lake is: a local folder or an object store.

LAKE_ROOT is a local path (the default, `./lake`) or a URL of an object store that both
delta-rs and pyarrow reach: `s3://bucket/prefix` (AWS S3, MinIO, Ceph, moto...),
`gs://bucket/prefix` (Google Cloud Storage) or `abfss://container@account.dfs.core.windows.net/prefix`
(Azure Data Lake Storage). Credentials and endpoints come from the environment only, the
variables each store's SDK reads (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT_URL and, for an endpoint over plain http, AWS_ALLOW_HTTP=true);
they are never logged.

A path in an object-store lake is an `ObjectPath`: the few file operations the lakehouse
needs (read, write, list, delete) through pyarrow's filesystem for that store. There are no
directories, renames, links, modes or locks on an object store, so the code that needs
them checks for an ObjectPath and does what the store offers instead (each place says
what).
Delta commits on S3 are safe between concurrent writers: delta-rs 1.x commits with a
conditional put (If-None-Match), which AWS S3, MinIO and moto honour."""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import shutil
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TypeAlias
from urllib.parse import urlsplit

import polars as pl
import pyarrow.fs as pafs

SCHEMES = ("s3", "gs", "abfss")


class StorageError(RuntimeError):
    pass


def is_url(value: str) -> bool:
    """True if `value` names an object store (scheme://...), not a local path."""
    return "://" in value


def check_url(value: str) -> str:
    """`value` in one spelling (scheme in lower case, no trailing slash), after checking
    that its scheme is one the lake supports and that it names a bucket. One spelling per
    lake: the local folder of its locks and its audit name are derived from it."""
    if "?" in value or "#" in value:
        raise StorageError("LAKE_ROOT holds '?' or '#': a store reads the rest of the key as "
                           "a query or fragment, so every table would land on one key")
    parts = urlsplit(value.rstrip("/"))
    if parts.scheme not in SCHEMES:
        raise StorageError(f"LAKE_ROOT scheme {parts.scheme!r} is not supported: use a local "
                           f"path or one of {', '.join(s + '://' for s in SCHEMES)}")
    if not parts.netloc or parts.query or parts.fragment:
        raise StorageError("LAKE_ROOT must name a bucket (scheme://bucket/prefix) with no "
                           "query or fragment")
    # The root is shown in logs, metadata and errors: a key in it would be shown too.
    if ":" in parts.netloc or ("@" in parts.netloc and parts.scheme != "abfss"):
        raise StorageError("LAKE_ROOT holds credentials or a port: give credentials and "
                           "endpoints in the store's environment variables (AWS_*...)")
    if any(p in (".", "..") for p in parts.path.split("/")) or "%" in parts.path \
            or "\\" in parts.path or "//" in parts.path:
        raise StorageError("LAKE_ROOT's prefix holds '.', '..', an empty segment, a percent "
                           "escape or a backslash: the store would read it as another prefix")
    if parts.scheme in ("s3", "gs") and parts.netloc != parts.netloc.lower():
        raise StorageError("LAKE_ROOT's bucket name has capitals: bucket names are lower "
                           "case")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


@lru_cache(maxsize=8)
def _filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}/")
    return fs


class ObjectPath:
    """A key (or key prefix) in an object store, named by its URL. `str()` is the URL,
    which delta-rs takes as a table location."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    # naming ------------------------------------------------------------------------
    def __truediv__(self, part: str | PurePosixPath) -> ObjectPath:
        part = str(part)
        if not part or part.startswith("/") or "//" in part or "?" in part or "#" in part \
                or any(p in (".", "..") for p in part.split("/")):
            raise StorageError("a lake path part must be relative, stay inside the lake and "
                               "hold no empty segment, '?' or '#'")
        return ObjectPath(f"{self.url}/{part}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(posixpath.dirname(self.url))

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        prefix = other.url + "/"
        if not self.url.startswith(prefix):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.url[len(prefix):])

    # the store ---------------------------------------------------------------------
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        # Split by hand: a URL parser would take '?' or '#' in a key as a query/fragment.
        scheme, rest = self.url.split("://", 1)
        bucket = rest.split("/", 1)[0]
        return _filesystem(scheme, bucket), rest

    def filesystem(self) -> pafs.SubTreeFileSystem:
        """pyarrow's filesystem rooted here (for datasets and Parquet files)."""
        fs, key = self._fs()
        return pafs.SubTreeFileSystem(key, fs)

    def _info(self) -> pafs.FileInfo:
        fs, key = self._fs()
        return fs.get_file_info(key)

    def exists(self) -> bool:
        return bool(self._info().type != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        return bool(self._info().type == pafs.FileType.Directory)

    def is_file(self) -> bool:
        return bool(self._info().type == pafs.FileType.File)

    def is_symlink(self) -> bool:
        return False            # an object store has no links

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """A no-op: a prefix exists once a key under it does."""

    def read_bytes(self) -> bytes:
        fs, key = self._fs()
        with fs.open_input_stream(key) as f:
            data: bytes = f.read()
        return data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: readers see the old object or the new one, never a part."""
        fs, key = self._fs()
        with fs.open_output_stream(key) as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        fs, key = self._fs()
        try:
            fs.delete_file(key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        fs, key = self._fs()
        if self.is_dir():
            fs.delete_dir(key)

    def iterdir(self) -> Iterator[ObjectPath]:
        fs, key = self._fs()
        for info in fs.get_file_info(pafs.FileSelector(key, allow_not_found=True)):
            # Listed keys are the store's own: taken as they are (a stray key named '..'
            # put there by someone else must not stop the listing).
            yield ObjectPath(f"{self.url}/{posixpath.basename(info.path)}")

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Keys under here whose path relative to here matches `pattern` (fnmatch; a
        pattern starting with `**/` matches at any depth)."""
        fs, key = self._fs()
        deep = pattern.startswith("**/")
        tail = pattern[3:] if deep else pattern
        selector = pafs.FileSelector(key, recursive=deep or "/" in pattern,
                                     allow_not_found=True)
        for info in fs.get_file_info(selector):
            rel = info.path[len(key) + 1:]
            if fnmatch.fnmatchcase(posixpath.basename(rel) if deep else rel, tail):
                yield ObjectPath(f"{self.url}/{rel}")


LakePath: TypeAlias = Path | ObjectPath


def lake_path(value: str | Path | ObjectPath) -> LakePath:
    """A lake location from its text: an ObjectPath for a URL, else a local Path."""
    if isinstance(value, (Path, ObjectPath)):
        return value
    return ObjectPath(value) if is_url(value) else Path(value)


def write_parquet(frame: pl.DataFrame, path: LakePath) -> None:
    """A Parquet file at `path` (one PUT on an object store)."""
    if isinstance(path, Path):
        frame.write_parquet(path)
        return
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    path.write_bytes(buffer.getvalue())


def read_parquet(path: LakePath) -> pl.DataFrame:
    if isinstance(path, Path):
        return pl.read_parquet(path)
    return pl.read_parquet(io.BytesIO(path.read_bytes()))


def write_text_atomic(path: LakePath, text: str) -> None:
    """`text` at `path`, replacing what was there at once: a rename on a local disk, one
    PUT on an object store."""
    if isinstance(path, ObjectPath):
        path.write_text(text)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def upload_tree(local: Path, dest: ObjectPath) -> int:
    """Copy every file under `local` to the same relative key under `dest`; returns the
    number of files."""
    files = [p for p in sorted(local.rglob("*")) if p.is_file() and not p.is_symlink()]
    for p in files:
        (dest / p.relative_to(local).as_posix()).write_bytes(p.read_bytes())
    return len(files)


def rmtree(path: LakePath) -> None:
    if isinstance(path, ObjectPath):
        path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def local_only(path: LakePath, what: str) -> Path:
    """`path`, which `what` (a service that serves files by their local names and
    times) can only use on a local disk."""
    if isinstance(path, ObjectPath):
        raise StorageError(f"{what} serves a lake on a local disk; LAKE_ROOT is an object "
                           "store (README: \"The lake on object storage\" says what runs there)")
    return path


def mtime(path: LakePath) -> float:
    """When the file was last written (seconds since the epoch)."""
    if isinstance(path, Path):
        return path.stat().st_mtime
    fs, key = path._fs()
    when = fs.get_file_info(key).mtime
    if when is None:
        raise FileNotFoundError(str(path))
    return float(when.timestamp())
