"""Loading the declaration files of `data_model/` (model, sources, marts, agreements,
zones, disclosure policy): a malformed file fails at load with a message naming the file
and the key; a key declared twice in one mapping is refused."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class DeclarationError(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML keeps the last
    one silently: a second block for a mart, or a column declared twice, would win)."""


def _no_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
                   ) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is declared twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _no_duplicates)


def parse(text: str) -> object:
    """A declaration file's YAML (safe: no objects), refusing repeated keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load(path: Path, model: type[M], *, name_key: str | None = None,
         error: type[DeclarationError] = DeclarationError) -> M:
    """Parse `path` as `model`. With `name_key`, that key must equal the file's stem."""
    path = Path(path)
    try:
        raw = parse(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    try:
        declared = model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in e['loc']) or '<root>'}': {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False))
        raise error(f"{path}: {problems}") from None
    if name_key and getattr(declared, name_key) != path.stem:
        raise error(f"{path}: key '{name_key}': {getattr(declared, name_key)!r} must match "
                    "the file name")
    return declared
