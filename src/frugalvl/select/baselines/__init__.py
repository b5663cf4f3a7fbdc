"""Baselines under CoIDO's budget (docs/methods/coido_baselines.md#baselines): same work folder, same K and quotas, same
outputs as ``pick`` (docs/methods/coido_baselines.md).

    from frugalvl.select.baselines import run_baseline
    run_baseline("semdedup", "work", "semdedup_20.json", PickSettings(ratio=0.2))

Each baseline is a module with a frozen settings dataclass (the published defaults) and
``run(inputs, settings, mode) -> (chosen, quotas, score, extra)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..settings import PickSettings
from . import settings as settings_module


@dataclass(frozen=True)
class Baseline:
    name: str
    summary: str
    module: str  # module under frugalvl.select.baselines
    run: str  # function name in it
    settings: str  # settings class name in it


REGISTRY: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("random", "seeded uniform draw", "random_pick", "run", "RandomSettings"),
        Baseline("clip-score", "highest CLIP score first", "clip_score", "run", "ClipScoreSettings"),
        Baseline(
            "semdedup",
            "semantic deduplication, one item kept per duplicate group, eps solved for K",
            "semdedup",
            "run",
            "SemDedupSettings",
        ),
        Baseline(
            "d2-pruning", "kNN message passing on a difficulty (k=5, gamma=0.4)", "d2_pruning", "run", "D2Settings"
        ),
        Baseline(
            "self-filter",
            "L_I-only scorer + greedy nearest-neighbour filter (gamma=1, k=10)",
            "self_filter",
            "run",
            "SelfFilterSettings",
        ),
        Baseline("el2n", "EL2N of a reference LLaVA, a band kept", "loss_band", "run_el2n", "LossBandSettings"),
        Baseline(
            "perplexity",
            "perplexity of a reference LLaVA, a band kept",
            "loss_band",
            "run_perplexity",
            "LossBandSettings",
        ),
        Baseline(
            "coincide-lite",
            "spherical k-means, transferability/density budgets, MMD prototypes",
            "coincide_lite",
            "run",
            "CoincideSettings",
        ),
    )
}


def _parts(name: str) -> tuple[Callable, type]:
    import importlib

    if name not in REGISTRY:
        raise UserError(f"unknown baseline {name!r}: choose one of {', '.join(REGISTRY)}")
    b = REGISTRY[name]
    module = importlib.import_module(f"{__name__}.{b.module}")
    return getattr(module, b.run), getattr(module, b.settings)


def settings_class(name: str) -> type:
    """The settings dataclass of baseline ``name`` (without loading the baseline itself)."""
    if name not in REGISTRY:
        raise UserError(f"unknown baseline {name!r}: choose one of {', '.join(REGISTRY)}")
    return getattr(settings_module, REGISTRY[name].settings)


def settings_classes() -> dict[str, type]:
    """Every baseline's settings dataclass, by baseline name."""
    return {name: settings_class(name) for name in REGISTRY}


def make_settings(name: str, options: dict[str, Any]) -> Any:
    """Settings of ``name`` from ``options`` (keys not in its dataclass, or None, are ignored)."""
    cls = settings_class(name)
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in known and v is not None})


REUSABLE = ("random", "clip-score", "el2n", "perplexity")  # selection = pick's rule on a stored score


def _from_score(name: str, inputs: Any, settings: Any, values: Any, mode: str) -> tuple[Any, dict[str, int], dict]:
    """The selection of a score baseline from its stored values (no model pass)."""
    from .common import select_by_score
    from .loss_band import DEFAULT_BAND, run_band

    if name in ("el2n", "perplexity"):
        band = settings.band or DEFAULT_BAND[name]
        chosen, quotas = run_band(inputs, values, band, mode)
        return chosen, quotas, {"band": band, "statistic": "el2n" if name == "el2n" else "ppl"}
    chosen, quotas = select_by_score(inputs, values, mode)
    return chosen, quotas, {}


def run_baseline(
    name: str,
    work: str | Path,
    out: str | Path,
    pick: PickSettings = PickSettings(),
    settings: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Select with baseline ``name`` under ``pick``'s budget and quotas; write pick's outputs under
    ``WORK/baseline-NAME/`` and the subset at ``out`` (never an input or a file no selection wrote,
    unless ``overwrite``); return the report.

    The baseline's score becomes its column of ``WORK/scores.parquet``; a score baseline whose column
    was made with the same settings is selected from it, without its model pass."""
    from .. import scores_table
    from ..workdir import check_subset_output
    from .common import load_inputs, write_selection

    check_subset_output(work, out, overwrite)
    run, cls = _parts(name)
    settings = cls() if settings is None else settings
    inputs = load_inputs(work, pick)
    key = {"settings": asdict(settings), "exclude_text": pick.exclude_text}
    stored = scores_table.baseline_column(work, name, key) if name in REUSABLE else None
    if stored is not None:
        chosen, quotas, extra = _from_score(name, inputs, settings, stored, pick.mode)
        score, extra = stored, {**extra, "score_from": scores_table.TABLE}
    else:
        chosen, quotas, score, extra = run(inputs, settings, pick.mode)
    report = write_selection(inputs, name, out, chosen, quotas, score, pick, settings, extra)
    scores_table.refresh(work, baseline=(name, score, key))
    return report


__all__ = ["REGISTRY", "make_settings", "run_baseline", "settings_class", "settings_classes"]
