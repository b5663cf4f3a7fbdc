"""The layering rule, checked on the source: commands -> front ends -> methods -> models and I/O -> base.

A module may import modules of its own layer or below, never above: a method never imports the CLI or
a front end (the app, the Ray engines),
``models/`` never imports a method, and no library module imports the test builders in
``frugalvl.testing`` (which may import anything but the CLI). Imports inside functions count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalvl"

# first component under frugalvl -> layer (higher imports lower)
LAYERS = {
    "cli": 5,
    "__main__": 5,
    "commands": 5,
    "app": 4,
    "distributed": 4,
    "segment": 3,
    "change": 3,
    "evaluate": 3,
    "select": 3,
    "train": 3,
    "pointcloud": 3,
    "models": 2,
    "raster": 2,
    "areas": 2,
    "stretch": 2,
    "fileio": 2,
    "vocab": 2,
    "windows": 2,
    "presets": 2,
    "vectors": 2,
    "palette": 2,
    "orientation": 2,
    "sources": 2,
    "errors": 1,
    "settings": 1,
    "devices": 1,
    "precision": 1,
    "identity": 1,
    "lazy": 1,
    "progress": 1,
    "urlfetch": 1,
    "cpu_pool": 1,
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
            if LAYERS.get(top, 0) >= LAYERS["commands"]:
                found.append(f"{name} (the test builders must not import the CLI)")
        elif top == TESTING:
            found.append(f"{name} (library code must not import the test builders)")
        elif (_layer_of(name) or 99) > LAYERS[own_top]:
            found.append(f"{name} (layer {_layer_of(name)} above layer {LAYERS[own_top]})")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_one_way(path: Path):
    assert violations(path) == [], "imports must go one way: commands -> front ends -> methods -> models/io -> base"


def test_the_checker_catches_upward_imports(tmp_path: Path):
    root = tmp_path / "frugalvl"
    (root / "models").mkdir(parents=True)
    probe = root / "models" / "probe.py"
    probe.write_text(
        "from ..commands.segment import register\nfrom . import clip\n"
        "def f():\n    from frugalvl.testing.clip import tiny_clip\n    from ..errors import UserError\n"
    )
    assert violations(probe, root) == [
        "frugalvl.commands.segment (layer 5 above layer 2)",
        "frugalvl.commands.segment.register (layer 5 above layer 2)",
        "frugalvl.testing.clip (library code must not import the test builders)",
        "frugalvl.testing.clip.tiny_clip (library code must not import the test builders)",
    ]


def test_the_checker_catches_a_method_importing_a_front_end(tmp_path: Path):
    root = tmp_path / "frugalvl"
    (root / "segment").mkdir(parents=True)
    probe = root / "segment" / "probe.py"
    probe.write_text(
        "from ..app.engine import ModelHub\nfrom .methods import METHODS\n"
        "def f():\n    from frugalvl.distributed import ray_segment\n    from ..evaluate import runner\n"
    )
    assert violations(probe, root) == [
        "frugalvl.app.engine (layer 4 above layer 3)",
        "frugalvl.app.engine.ModelHub (layer 4 above layer 3)",
        "frugalvl.distributed (layer 4 above layer 3)",
        "frugalvl.distributed.ray_segment (layer 4 above layer 3)",
    ]
    # and a front end may not import the CLI
    (root / "app").mkdir()
    front = root / "app" / "probe.py"
    front.write_text("from ..segment.methods import METHODS\nfrom ..commands.methods import method_module\n")
    assert violations(front, root) == [
        "frugalvl.commands.methods (layer 5 above layer 4)",
        "frugalvl.commands.methods.method_module (layer 5 above layer 4)",
    ]


# ---------------------------------------------------------------------------------------------
# No import cycles: the graph of which module imports which, from the source
# ---------------------------------------------------------------------------------------------


def _known_modules(root: Path = SRC) -> tuple[set[str], set[str]]:
    """Every module under ``root`` and the subset that are packages (``__init__.py``)."""
    paths = sorted(root.rglob("*.py"))
    return {_module_name(p, root) for p in paths}, {_module_name(p, root) for p in paths if p.name == "__init__.py"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, imports inside functions included, except the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _from_base(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """The absolute module a ``from X import ...`` reads from (relative levels resolved)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _nearest_module(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return None


def import_targets(path: Path, root: Path = SRC, known: set[str] | None = None) -> set[str]:
    """The modules of the project that ``path`` imports at run time (``from P import m`` is an edge to
    module ``P.m`` when it is one, else to ``P``); importing a module's parent packages is not counted."""
    known = _known_modules(root)[0] if known is None else known
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(t for a in node.names if (t := _nearest_module(a.name, known)))
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, path, root)
            for a in node.names:
                target = f"{base}.{a.name}" if f"{base}.{a.name}" in known else _nearest_module(base, known)
                if target:
                    targets.add(target)
        elif isinstance(node, ast.Call) and (name := _imported_by_call(node, path, root)):
            targets.update(t for t in [_nearest_module(name, known)] if t)
    targets.discard(_module_name(path, root))
    return targets


def _imported_by_call(node: ast.Call, path: Path, root: Path) -> str | None:
    """The module ``__import__("frugalvl.x")`` or ``importlib.import_module("frugalvl.x")`` names with a
    literal (a relative ``".x"`` resolved against the caller's package), so a cycle cannot hide there."""
    func = node.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if called not in ("__import__", "import_module") or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    name = first.value
    if name.startswith("."):
        level = len(name) - len(name.lstrip("."))
        return _from_base(ast.ImportFrom(module=name.lstrip(".") or None, names=[], level=level), path, root)
    return name


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    known, _ = _known_modules(root)
    return {_module_name(p, root): import_targets(p, root, known) for p in sorted(root.rglob("*.py"))}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle ``[a, b, ..., a]`` per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in (g for g in groups if len(g) > 1):
        start = min(group)
        previous: dict[str, str] = {}
        queue, last = [start], None
        while last is None:  # breadth first: the shortest way back to start inside the group
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    last = v
                    break
                if w not in previous:
                    previous[w] = v
                    queue.append(w)
        path = [last]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append([*reversed(path), start])
    return sorted(cycles)


def test_no_import_cycles():
    cycles = [" -> ".join(c) for c in import_cycles(import_graph())]
    assert cycles == [], "modules must not import each other in a circle (imports inside functions count)"


def test_the_cycle_checker_finds_a_made_up_cycle(tmp_path: Path):
    root = tmp_path / "frugalvl"
    (root / "pkg").mkdir(parents=True)
    for name in ("__init__.py", "pkg/__init__.py"):
        (root / name).write_text("")
    (root / "a.py").write_text("from .pkg.b import run\nfrom . import d\n")
    (root / "pkg" / "b.py").write_text("def run():\n    from ..c import thing\n")  # inside a function
    (root / "c.py").write_text("import frugalvl.a\nthing = 1\n")
    (root / "e.py").write_text('import importlib\nmod = importlib.import_module(".f", __package__)\n')
    (root / "f.py").write_text('x = __import__("frugalvl.e", fromlist=["x"])\n')  # hidden from plain imports
    (root / "d.py").write_text(  # a TYPE_CHECKING-only import is no cycle
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import run\n"
    )
    graph = import_graph(root)
    assert graph["frugalvl.a"] == {"frugalvl.pkg.b", "frugalvl.d"}
    assert graph["frugalvl.d"] == set()
    assert import_cycles(graph) == [
        ["frugalvl.a", "frugalvl.pkg.b", "frugalvl.c", "frugalvl.a"],
        ["frugalvl.e", "frugalvl.f", "frugalvl.e"],
    ]
    (root / "c.py").write_text("thing = 1\n")
    (root / "f.py").write_text("x = 1\n")
    assert import_cycles(import_graph(root)) == []


# ---------------------------------------------------------------------------------------------
# No private names across packages
# ---------------------------------------------------------------------------------------------
#
# A name (or module) with a leading underscore, not a dunder, is private to the package that holds it:
# ``_helper`` in ``segment/scene.py`` may be imported by any module of ``frugalvl.segment`` and of its
# sub-packages, never by ``distributed/`` or ``commands/``; a private module such as
# ``commands/_settings.py`` serves ``commands/`` and ``commands/methods/``. A sub-package's privates
# (``select/baselines/``) are not its parent's. Reading a private attribute of an imported module
# (``scene._helper``) counts as importing it.


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def private_imports(path: Path, root: Path = SRC) -> list[str]:
    """The private names of other packages that ``path`` imports or reads from an imported module."""
    known, packages = _known_modules(root)
    module = _module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    bound: dict[str, str] = {}  # local name -> the project module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names.append(a.name)
                if a.asname and a.name in known:
                    bound[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, path, root)
            for a in node.names:
                names.append(f"{base}.{a.name}")
                if f"{base}.{a.name}" in known:
                    bound[a.asname or a.name] = f"{base}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            names.append(f"{bound[node.value.id]}.{node.attr}")
    found = []
    for name in names:
        parts = name.split(".")
        if parts[0] != root.name:
            continue
        for i, part in enumerate(parts):
            if _is_private(part):
                owner = ".".join(parts[:i])
                scope = owner if owner in packages else owner.rpartition(".")[0]
                if module != scope and not module.startswith(scope + "."):
                    found.append(f"{name} (private to {scope})")
                break
    return sorted(set(found))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_imports_across_packages(path: Path):
    assert private_imports(path) == [], "a _private name serves its own package: make it public or move the code"


def test_the_private_checker_catches_imports_across_packages(tmp_path: Path):
    root = tmp_path / "frugalvl"
    for folder in ("segment", "distributed", "select/baselines"):
        (root / folder).mkdir(parents=True)
    for name in ("__init__.py", "segment/__init__.py", "distributed/__init__.py", "select/__init__.py"):
        (root / name).write_text("")
    (root / "select" / "baselines" / "__init__.py").write_text("")
    (root / "segment" / "scene.py").write_text("def _tile(): ...\n")
    (root / "select" / "workdir.py").write_text("def _read(): ...\n")
    (root / "select" / "baselines" / "common.py").write_text("def _quota(): ...\n")
    probe = root / "distributed" / "ray_segment.py"
    probe.write_text(
        "from ..segment.scene import _tile, __doc__\nfrom ..segment import scene\n"
        "def f():\n    return scene._tile, scene.__name__\n"
    )
    assert private_imports(probe, root) == [
        "frugalvl.segment.scene._tile (private to frugalvl.segment)",
    ]
    sibling = root / "segment" / "pipeline.py"  # the same package: fine
    sibling.write_text("from .scene import _tile\n")
    assert private_imports(sibling, root) == []
    child = root / "select" / "baselines" / "random.py"  # a sub-package may use its parent's privates ...
    child.write_text("from ..workdir import _read\nfrom .common import _quota\n")
    assert private_imports(child, root) == []
    parent = root / "select" / "pipeline.py"  # ... but not the other way round
    parent.write_text("import frugalvl.select.baselines.common as common\nx = common._quota\n")
    assert private_imports(parent, root) == [
        "frugalvl.select.baselines.common._quota (private to frugalvl.select.baselines)"
    ]


MAX_LINES = 500  # one concept per module; past this a module is doing two jobs


def long_modules(root: Path = SRC, limit: int = MAX_LINES) -> list[str]:
    """The modules under ``root`` with more than ``limit`` lines, with their length."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return found


def test_no_module_is_over_500_lines():
    assert long_modules() == []


def test_the_length_checker_finds_a_long_module(tmp_path: Path):
    root = tmp_path / "frugalvl"
    root.mkdir()
    (root / "short.py").write_text("x = 1\n" * 500)
    (root / "long.py").write_text("x = 1\n" * 501)
    assert long_modules(root) == ["frugalvl/long.py: 501 lines"]
