"""Lazy exports for package ``__init__`` files: a name is imported from its module when first used.

A package lists its main names once; importing the package then stays cheap (no torch) until one of
them is asked for::

    __all__, __getattr__ = lazy_exports(__name__, {"SegEarthOV": "segearth_ov"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``__all__`` and a module ``__getattr__`` for ``package``: ``exports`` maps each exported name to
    the module (relative to ``package``) that defines it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{exports[name]}", package), name)

    return sorted(exports), __getattr__
