"""The lazy exports of the package ``__init__`` files (frugalvl.lazy)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from frugalvl.lazy import lazy_exports

PACKAGES = ["frugalvl.segment", "frugalvl.select", "frugalvl.train", "frugalvl.train.finetune"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_comes_from_its_module(package):
    pkg = importlib.import_module(package)
    assert pkg.__all__ == sorted(pkg.__all__) and pkg.__all__
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        assert obj.__module__.startswith(package + "."), (name, obj.__module__)
        assert getattr(importlib.import_module(obj.__module__), name) is obj


@pytest.mark.parametrize("package", PACKAGES)
def test_unknown_names_raise_attribute_error(package):
    pkg = importlib.import_module(package)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nothing_here'"):
        pkg.nothing_here  # noqa: B018
    assert not hasattr(pkg, "nothing_here")


def test_packages_import_no_torch_until_a_name_is_used():
    code = "import sys, frugalvl.segment, frugalvl.select, frugalvl.train.finetune; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_module_is_imported_on_first_use_only(tmp_path: Path, monkeypatch):
    pkg = tmp_path / "lazyprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from frugalvl.lazy import lazy_exports\n__all__, __getattr__ = lazy_exports(__name__, {'VALUE': 'heavy'})\n"
    )
    (pkg / "heavy.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("lazyprobe")
    assert probe.__all__ == ["VALUE"]
    assert "lazyprobe.heavy" not in sys.modules
    assert probe.VALUE == 42
    assert "lazyprobe.heavy" in sys.modules
    for name in ("lazyprobe", "lazyprobe.heavy"):
        monkeypatch.delitem(sys.modules, name)


def test_lazy_exports_returns_sorted_names():
    names, _ = lazy_exports("somewhere", {"b": "m", "a": "m"})
    assert names == ["a", "b"]


def test_no_package_writes_its_own_lazy_getattr():
    """Lazy exports are written once, in frugalvl.lazy; a package assigns the helper's ``__getattr__``."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "frugalvl"
    own = [
        str(p.relative_to(src))
        for p in sorted(src.rglob("__init__.py"))
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
    ]
    assert own == []
