"""Loading the declaration files of `data_model/` (model, sources, agreements): a malformed
file fails at load with a message naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class DeclarationError(ValueError):
    pass


def load(path: Path, model: type[M], *, name_key: str | None = None,
         error: type[DeclarationError] = DeclarationError) -> M:
    """Parse `path` as `model`. With `name_key`, that key must equal the file's stem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
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
