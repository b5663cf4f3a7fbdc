"""No library message quotes a command-line flag: the library names fields, the CLI shows their options.

An AST scan of every module under ``src/frugalvl`` outside ``commands/`` (the CLI) and ``testing/``
(test helpers) for text that looks like a long option (``--name``) at the start of a string or after a
space, quote or parenthesis. Flagged are string constants and f-string parts, except:

* docstrings (module, class and function): documentation for contributors, not messages;
* strings inside a list, tuple or set literal, or passed to a list's ``append``/``extend``/``insert``:
  argument vectors handed to another program (an ``accelerate launch`` line, a subprocess's
  arguments) or lists of option names, not messages;
* the ``flag=`` argument of :func:`frugalvl.settings.option`: that *is* the option's name, stated once
  beside the field it sets (the command line is generated from it).

A message that must point at a setting raises :class:`frugalvl.settings.FieldError` naming the field
(``{force}`` placeholders included), which the CLI renders with the option's flag.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalvl"
EXCLUDED = ("commands", "testing", "cli.py")  # the command line itself, and test helpers
FLAG = re.compile(r"""(^|[\s"'(`])--[a-z][a-z0-9-]+""")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Strings under a list/tuple/set literal or a list's append/extend/insert, and the ``flag=`` keyword
    of ``option(...)`` calls."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        roots: list[ast.AST] = []
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            roots = list(node.elts)
        elif isinstance(node, ast.Call):
            roots = [k.value for k in node.keywords if k.arg == "flag"]
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("append", "extend", "insert"):
                roots += node.args
        for root in roots:
            ids.update(id(n) for n in ast.walk(root))
    return ids


def flag_messages(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string constant or f-string part in ``source`` that quotes a ``--flag``."""
    tree = ast.parse(source)
    skipped = _docstring_nodes(tree) | _skipped_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if FLAG.search(node.value):
            found.append((node.lineno, node.value))
    return sorted(found)


def library_modules() -> list[Path]:
    return sorted(
        p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in EXCLUDED and "__pycache__" not in p.parts
    )


def test_the_scanner_catches_a_planted_message():
    planted = (
        '"""Docs may name ``--force``."""\n'
        "def f(x):\n"
        '    """So may this docstring: --resume."""\n'
        '    argv = ["accelerate", "launch", "--num_processes", "2"]\n'
        '    argv.append("--multi_gpu")\n'
        '    meta = option(1, "help", flag="--jitters")\n'
        '    raise UserError(f"{x} exists: pass --force to redo it")\n'
        'LOG = "use --tile 512"\n'
        "NOTE = '(--bands)'\n"
        'FINE = "a--b, x --, cuda:0, -w, 1e--3"\n'
    )
    lines = [line for line, _ in flag_messages(planted)]
    assert lines == [7, 8, 9]


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_library_message_quotes_a_cli_flag(path):
    found = flag_messages(path.read_text(encoding="utf-8"))
    assert not found, "\n".join(f"{path.relative_to(SRC)}:{line}: {text!r}" for line, text in found)
