"""The command-line face of each segmentation method: its options, its models, its segmenter.

Each module here offers the same four functions, so ``segment``, ``evaluate`` and ``app`` treat the
methods alike: ``add_arguments(group)``, ``settings_from_cli(args)``, ``load_models(args)`` and
``segmenter_from_cli(args, models=None)``. Options are generated from the method's settings
dataclass (:mod:`frugalvl.commands._settings`), so each default is written once, in the library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ...errors import UserError

# method name -> module under frugalvl.commands.methods
METHODS = {
    "segearth-ov": "segearth_ov",
    "segearth-ov3": "segearth_ov3",
}


def method_module(name: str) -> ModuleType:
    """The CLI module of the method ``name``."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return importlib.import_module(f"{__name__}.{METHODS[name]}")
