"""Presets of the 2D -> 3D label transfer (the label-3d command's presets): one TOML file per point-cloud benchmark.

Each file holds the class list (with synonyms), class names, vote weights and colours, the
segmentation thresholds of the official run per method, and how the benchmark's ground-truth classes
map to the preset's classes (``[truth]``). They sit apart from the image presets, which every
segmentation method and the app list.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from ...errors import UserError

_PACKAGE = "frugalvl.presets.points"


def list_points_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(_PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_points_preset(name: str) -> dict[str, Any]:
    """The point-cloud preset ``name`` as a dict (``-``/``_`` and case ignored)."""
    key = name.strip().lower().replace("-", "_")
    if key not in list_points_presets():
        raise UserError(f"unknown point-cloud preset {name!r}: choose one of {', '.join(list_points_presets())}")
    return tomllib.loads(resources.files(_PACKAGE).joinpath(f"{key}.toml").read_text(encoding="utf-8"))
