"""Dataset presets: one TOML data file per dataset in ``frugalvl/presets/``.

Each file holds the dataset's name and label convention, and one table per method with the
official per-dataset settings (class list with synonyms, thresholds), e.g. ``[segearth_ov]`` and
``[segearth_ov3]``; ``[dataset]`` describes the benchmark's folder layout for evaluation.
"""

from __future__ import annotations

import logging
import tomllib
from importlib import resources
from typing import Any

from ..errors import UserError
from ..vocab import Strip, Vocabulary

_PACKAGE = "frugalvl.presets"
log = logging.getLogger(__name__)


def list_presets() -> list[str]:
    """Names of all bundled presets."""
    return sorted(p.name[:-5] for p in resources.files(_PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The whole preset ``name`` as a dict (``-`` and ``_`` are interchangeable, case ignored)."""
    key = name.strip().lower().replace("-", "_")
    if key not in list_presets():
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(list_presets())}")
    return tomllib.loads(resources.files(_PACKAGE).joinpath(f"{key}.toml").read_text(encoding="utf-8"))


def method_settings(name: str, method: str, vocabulary: Vocabulary | None = None) -> dict[str, Any]:
    """The ``[method]`` table of a preset (``segearth_ov``, ``segearth_ov3``).

    ``vocabulary``: the user's own classes, used with the preset's thresholds instead of its class list.
    A preset's ``bg_idx`` indexes the preset's classes, so it is kept only where the user's vocabulary
    has that same class at that index; otherwise it becomes 0 (an explicit ``--bg-idx`` still applies).
    """
    preset = load_preset(name)
    table = method.replace("-", "_")
    if table not in preset:
        raise UserError(f"preset {name!r} has no settings for method {method!r}")
    settings = dict(preset[table])
    if vocabulary is not None and settings.get("bg_idx", 0) != 0:
        settings["bg_idx"] = _fitting_bg_idx(name, method, settings, vocabulary)
    return settings


def _fitting_bg_idx(name: str, method: str, settings: dict[str, Any], vocabulary: Vocabulary) -> int:
    """The preset's ``bg_idx`` if it names the same class in ``vocabulary``, else 0."""
    bg = int(settings["bg_idx"])
    own = preset_vocabulary(name, method).names
    if bg < len(vocabulary) and bg < len(own) and vocabulary.names[bg].lower() == own[bg].lower():
        return bg
    log.info(
        "preset %s: its background class %r (index %d) is not in your vocabulary at that index; "
        "low-confidence pixels get class 0 (set bg_idx to choose)",
        name,
        own[bg] if bg < len(own) else bg,
        bg,
    )
    return 0


def preset_vocabulary(name: str, method: str) -> Vocabulary:
    """The class vocabulary a method uses on a dataset, parsed like the official class files."""
    settings = method_settings(name, method)
    # The official class files are parsed differently by the two codes (see vocab.py).
    strip: Strip = "newline" if method.replace("-", "_") == "segearth_ov" else "whitespace"
    return Vocabulary.from_lines(settings["classes"], strip=strip)
