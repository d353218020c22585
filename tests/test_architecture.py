"""The layering rules (README "Architecture"), read from the code's own imports: the domain
package never imports Dagster, the assets, the pipelines or the contracts; the contracts
only the domain; an asset module no other asset module but the shared leaf `assets.keys`.
The README's picture of the layers is generated from the same imports and must match."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("pipelines", "assets", "schemas", "ids_lakehouse")   # top to bottom
LEAVES = {"assets.keys", "pipelines.resources", "pipelines.check_status"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _code() -> dict[str, set[str]]:
    files = [p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")]
    return {_module(p): _imports(p) for p in files}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_domain_imports_no_dagster_assets_pipelines_or_schemas():
    bad = {m: sorted(i for i in imps if _top(i) in {"assets", "pipelines", "schemas"}
                     or _top(i).startswith("dagster"))
           for m, imps in _code().items() if _top(m) == "ids_lakehouse"}
    assert not {m: i for m, i in bad.items() if i}


def test_the_domain_loads_no_code_by_name():
    """The rules above read import statements, so the domain may not load code any other
    way: no importlib/__import__/exec/eval, and package resources only from data_model."""
    bad = []
    for path in (ROOT / "ids_lakehouse").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else ""
            if name in {"import_module", "__import__", "exec", "eval"}:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
            if name == "files" and node.args and not (
                    isinstance(node.args[0], ast.Constant) and node.args[0].value == "data_model"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} resources.files")
    assert not bad


def test_contracts_import_only_the_domain():
    bad = {m: sorted(i for i in imps if _top(i) in {"assets", "pipelines"}
                     or _top(i).startswith("dagster"))
           for m, imps in _code().items() if _top(m) == "schemas"}
    assert not {m: i for m, i in bad.items() if i}


def test_asset_modules_share_only_the_leaf_modules():
    code = _code()
    bad = {}
    for module, imps in code.items():
        if _top(module) != "assets":
            continue
        wrong = sorted(i for i in imps if _top(i) in {"assets", "pipelines"}
                       and i in code and i not in LEAVES and i != module)
        if wrong:
            bad[module] = wrong
    assert not bad, "an asset module may import, of assets and pipelines, only " \
                    f"{sorted(LEAVES)}: {bad}"
    for leaf in LEAVES:
        up = sorted(i for i in code[leaf] if i in code and _top(i) in {"assets", "pipelines"})
        assert not up, f"{leaf} is a leaf module: it imports {up}"


def test_importing_the_whole_domain_loads_no_dagster():
    """At run time too: importing every domain module (as the service and the CLI do)
    brings in none of Dagster, the assets, the pipelines or the contracts."""
    probe = (
        "import importlib, pkgutil, sys\n"
        "import ids_lakehouse\n"
        "for m in pkgutil.walk_packages(ids_lakehouse.__path__, 'ids_lakehouse.'):\n"
        "    importlib.import_module(m.name)\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'dagster', 'assets', 'pipelines', 'schemas'})\n"
        "print(','.join(loaded))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""


def picture() -> str:
    """The layers and which imports which, as the README shows it (a layer reached only
    through leaf modules is shown with them)."""
    code = _code()
    lines = []
    for layer in LAYERS:
        shown = []
        for other in LAYERS:
            used = {i for m, imps in code.items() if _top(m) == layer for i in imps
                    if i in code and _top(i) == other}
            if other != layer and used:
                leaves = sorted(u.split(".", 1)[1] for u in used if u in LEAVES)
                only_leaves = used <= LEAVES | {other}
                shown.append(f"{other} ({', '.join(leaves)} only)" if only_leaves else other)
        lines.append(f"{layer:<14} -> {', '.join(shown) or '(third-party only)'}")
    return "\n".join(lines)


def test_the_readme_picture_is_the_code():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- layers:begin -->")
    end = readme.index("<!-- layers:end -->")
    shown = readme[start:end].split("```")[1].strip("\n").removeprefix("text\n")
    if os.environ.get("UPDATE_SNAPSHOTS"):
        pytest.skip("run once more without UPDATE_SNAPSHOTS after updating the README")
    assert shown.strip() == picture(), (
        "README 'Architecture' does not match the imports; it should read:\n" + picture())
