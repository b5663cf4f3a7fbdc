"""The layering rule, checked on the source: commands -> methods -> models and I/O -> base.

A module may import modules of its own layer or below, never above: a method never imports the CLI,
``models/`` never imports a method, and no library module imports the test builders in
``frugalvl.testing`` (which may import anything but the CLI). Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalvl"

# first component under frugalvl -> layer (higher imports lower)
LAYERS = {
    "cli": 4,
    "__main__": 4,
    "commands": 4,
    "segment": 3,
    "evaluate": 3,
    "select": 3,
    "train": 3,
    "app": 3,
    "distributed": 3,
    "models": 2,
    "raster": 2,
    "fileio": 2,
    "vocab": 2,
    "windows": 2,
    "presets": 2,
    "vectors": 2,
    "palette": 2,
    "errors": 1,
    "settings": 1,
    "devices": 1,
    "precision": 1,
    "identity": 1,
    "__init__": 1,
}
TESTING = "testing"


def _module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = SRC) -> list[str]:
    """Absolute names of the frugalvl modules ``path`` imports (relative imports resolved)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "frugalvl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "frugalvl":
                found.append(name)
                found += [f"{name}.{a.name}" for a in node.names]  # `from . import methods`
    return found


def _top(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer_of(name: str) -> int | None:
    top = _top(name)
    return LAYERS.get(top) if top is not None else None


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_top_level_module_has_a_layer():
    tops = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SOURCES}
    assert tops - set(LAYERS) - {TESTING} == set()


def violations(path: Path, root: Path = SRC) -> list[str]:
    """What ``path`` imports against the layering rule."""
    own_top = path.relative_to(root).parts[0].removesuffix(".py")
    found = []
    for name in _imports(path, root):
        top = _top(name)
        if top is None or (top not in LAYERS and top != TESTING):
            continue  # `from frugalvl import __version__` and names that are not modules
        if own_top == TESTING:
            if LAYERS.get(top, 0) >= 4:
                found.append(f"{name} (the test builders must not import the CLI)")
        elif top == TESTING:
            found.append(f"{name} (library code must not import the test builders)")
        elif (_layer_of(name) or 99) > LAYERS[own_top]:
            found.append(f"{name} (layer {_layer_of(name)} above layer {LAYERS[own_top]})")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_one_way(path: Path):
    assert violations(path) == [], "imports must go one way: commands -> methods -> models/io -> base"


def test_the_checker_catches_upward_imports(tmp_path: Path):
    root = tmp_path / "frugalvl"
    (root / "models").mkdir(parents=True)
    probe = root / "models" / "probe.py"
    probe.write_text(
        "from ..commands.segment import register\nfrom . import clip\n"
        "def f():\n    from frugalvl.testing.clip import tiny_clip\n    from ..errors import UserError\n"
    )
    assert violations(probe, root) == [
        "frugalvl.commands.segment (layer 4 above layer 2)",
        "frugalvl.commands.segment.register (layer 4 above layer 2)",
        "frugalvl.testing.clip (library code must not import the test builders)",
        "frugalvl.testing.clip.tiny_clip (library code must not import the test builders)",
    ]
