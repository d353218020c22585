"""Access zones (`data_model/zones.yaml`): where each layer of the lake lives and who may
read it. The lake root holds one directory per zone; a zone's root carries the zone's
directory mode, so another OS account cannot even list a restricted zone, and `enforce`
gives every file and directory beneath it the zone's exact modes (and group).

Processes that write the lake run with umask 077 (`prepare`): whatever is created is
private until `enforce` widens it to its zone's modes, so a new kind of file is never
readable by accident."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ids_lakehouse.declarations import DeclarationError, parse
from ids_lakehouse.storage import LakePath, ObjectPath

ZoneName = Literal["restricted", "internal", "published"]
ZONES: tuple[ZoneName, ...] = ("restricted", "internal", "published")


class Zone(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    directory_mode: str = Field(pattern=r"^[0-7]{4}$")
    file_mode: str = Field(pattern=r"^[0-7]{4}$")
    group_env: str | None = None

    @property
    def dir_bits(self) -> int:
        return int(self.directory_mode, 8)

    @property
    def file_bits(self) -> int:
        return int(self.file_mode, 8)


class ZonesDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: dict[ZoneName, Zone]
    placement: dict[str, ZoneName]

    @model_validator(mode="after")
    def _complete(self) -> ZonesDeclaration:
        missing = sorted(set(ZONES) - set(self.zones))
        if missing:
            raise ValueError(f"zones {missing} are not declared")
        bad = sorted(p for p in self.placement if p.count("/") > 1 or not p.strip("/"))
        if bad:
            raise ValueError(f"placement keys {bad} must be 'layer' or 'layer/name'")
        return self


class ZoneError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def declaration() -> ZonesDeclaration:
    path = Path(str(resources.files("data_model").joinpath("zones.yaml")))
    try:
        return ZonesDeclaration.model_validate(parse(path.read_text()))
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"key '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        raise DeclarationError(f"{path}: {problems}") from None


def zone_of(layer: str, name: str | None = None) -> ZoneName:
    """The zone of a layer, or of one table of it (the most specific placement wins; a
    mart's own zone, declared in data_model/marts.yaml, is its table's placement)."""
    placement = declaration().placement | _mart_placement()
    if name is not None and f"{layer}/{name}" in placement:
        return placement[f"{layer}/{name}"]
    if layer not in placement:
        raise ZoneError(f"layer {layer!r} has no zone: declare it under 'placement' in "
                        "data_model/zones.yaml")
    return placement[layer]


@lru_cache(maxsize=1)
def _mart_placement() -> dict[str, ZoneName]:
    from ids_lakehouse.marts.declaration import load_marts

    return {f"gold/{n}": m.zone for n, m in load_marts().marts.items() if m.zone}


def group_id(zone: Zone) -> int | None:
    """The zone's OS group from its environment variable; None when unset."""
    name = os.environ.get(zone.group_env, "").strip() if zone.group_env else ""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ZoneError(f"{zone.group_env}={name!r} is not a group on this machine") from None


LEGACY_LAYERS = ("bronze", "quarantine", "silver", "identity", "gold")
ROOT_MODE = 0o755


def no_links(root: LakePath, path: LakePath) -> LakePath:
    """`path`, after checking that no directory between the lake's root and it is a
    symbolic link: the lakehouse never writes through one (a planted link would send
    restricted data, or mode changes, out of the lake). An object store has no links."""
    if isinstance(path, ObjectPath) or isinstance(root, ObjectPath):
        return path
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise ZoneError(f"{current} is a symbolic link inside the lake; the lakehouse "
                            "does not write through links. Remove it (and find who put it "
                            "there)")
    return path


def prepare(root: LakePath) -> None:
    """Before a process writes the lake: private umask, and each zone's root in place with
    its modes (a real directory, not a link). Refuses a lake in the layout that predates
    zones (layers at the top). On an object store the zones are prefixes whose access the
    store's policies grant (README: "The lake on object storage"): only the umask, for
    local files such as the spill."""
    os.umask(0o077)
    if isinstance(root, ObjectPath):
        return
    legacy = [layer for layer in LEGACY_LAYERS if (root / layer).is_dir()]
    if legacy:
        raise ZoneError(f"LAKE_ROOT={root} holds layers at its top ({', '.join(legacy)}): "
                        "the layout before access zones. Rebuild it (`make clean demo` removes "
                        "the lake, landing zone and Dagster instance first) or move each "
                        "layer under its zone directory as data_model/zones.yaml places it")
    assert isinstance(root, Path)
    root.mkdir(parents=True, exist_ok=True)
    _apply(root, ROOT_MODE, None)   # traversable: each zone's own directory guards it
    for name, zone in declaration().zones.items():
        folder = no_links(root, root / name)
        assert isinstance(folder, Path)
        folder.mkdir(exist_ok=True)
        _apply(folder, zone.dir_bits, group_id(zone))


def _apply(path: Path, bits: int, gid: int | None) -> bool:
    st = path.lstat()
    changed = False
    if gid is not None and st.st_gid != gid:
        os.chown(path, -1, gid, follow_symlinks=False)
        changed = True
    if stat.S_IMODE(st.st_mode) != bits:
        os.chmod(path, bits)
        changed = True
    return changed


def _walk(top: Path) -> Iterator[tuple[Path, str]]:
    """(path, kind) under `top`, never following a link: kind is "dir", "file",
    "symlink" (a link, to a file or a directory) or "hard_link" (a file with other names:
    changing its mode would change theirs)."""
    for folder, dirs, names in os.walk(top):
        yield Path(folder), "dir"
        for d in dirs:
            if (Path(folder) / d).is_symlink():
                yield Path(folder) / d, "symlink"
        for n in names:
            path = Path(folder) / n
            if path.is_symlink():
                yield path, "symlink"
            elif path.lstat().st_nlink > 1:
                yield path, "hard_link"
            else:
                yield path, "file"


@dataclass(frozen=True)
class Enforced:
    files: int
    changed: int
    symlinks: tuple[str, ...] = ()     # found, never followed nor changed: investigate
    hard_links: tuple[str, ...] = ()   # files with other names elsewhere: left unchanged

    def warnings(self) -> list[str]:
        out = []
        if self.symlinks:
            out.append(f"{len(self.symlinks)} symbolic links inside the lake (not followed, "
                       f"not changed); investigate: {', '.join(self.symlinks[:5])}")
        if self.hard_links:
            out.append(f"{len(self.hard_links)} hard-linked files inside the lake (modes not "
                       f"changed); investigate: {', '.join(self.hard_links[:5])}")
        return out


def enforce(root: LakePath, under: LakePath | None = None) -> Enforced:
    """Give every directory and file under each zone (or only `under`, a folder inside
    one) its zone's modes and group. Nothing the lakehouse writes is a link: one found is
    never followed or changed, only reported (it may have been planted). On an object
    store there are no modes: the store's policies per zone prefix apply."""
    prepare(root)
    if isinstance(root, ObjectPath) or isinstance(under, ObjectPath):
        return Enforced(0, 0)
    files = changed = 0
    found: dict[str, list[str]] = {"symlink": [], "hard_link": []}
    for name, zone in declaration().zones.items():
        gid = group_id(zone)
        top = Path(root) / name
        if under is not None:
            if not Path(under).is_relative_to(top):
                continue
            top = Path(under)
        for path, kind in _walk(top):
            if kind in found:
                found[kind].append(str(path))
                continue
            files += kind == "file"
            changed += _apply(path, zone.dir_bits if kind == "dir" else zone.file_bits, gid)
    return Enforced(files, changed, tuple(found["symlink"]), tuple(found["hard_link"]))


def enforce_landing(landing: Path) -> None:
    """The landing zone holds raw deliveries: restricted modes on its folders and on the
    files the service account owns (an agency's drop account keeps its own files until
    they are ingested, so a file it owns is left as it is)."""
    zone = declaration().zones[zone_of("landing")]
    if not Path(landing).is_dir():
        return
    for path, kind in _walk(Path(landing)):
        if kind in ("dir", "file"):
            try:
                _apply(path, zone.dir_bits if kind == "dir" else zone.file_bits, None)
            except PermissionError:
                pass


def violations(root: Path) -> list[str]:
    """Every path whose mode differs from its zone's, every link inside the lake, and
    anything at the lake's top that is not a zone."""
    zones = declaration().zones
    out = [f"{child}: outside every zone" for child in sorted(Path(root).iterdir())
           if child.name not in zones]
    for name, zone in zones.items():
        for path, kind in _walk(Path(root) / name):
            if kind == "symlink":
                out.append(f"{path}: a symbolic link inside the lake")
            elif kind == "hard_link":
                out.append(f"{path}: a hard link (the file has other names)")
            else:
                want = zone.directory_mode if kind == "dir" else zone.file_mode
                mode = stat.S_IMODE(path.lstat().st_mode)
                if mode != int(want, 8):
                    out.append(f"{path}: {'directory' if kind == 'dir' else 'file'} mode "
                               f"{mode:04o}, zone {name} wants {want}")
    return out
