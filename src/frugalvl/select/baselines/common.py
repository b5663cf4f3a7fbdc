"""What every baseline shares (docs/methods/coido_baselines.md#baselines): the inputs read from the select work folder,
the budget K and the quota rule of ``pick``, and the outputs written exactly as ``pick`` writes them.

A baseline produces one of two things:

* a **score** per sample (higher = keep first): the selection is then ``pick``'s own rule applied to
  −score (per-source quotas, or ``--global``): :func:`select_by_score`;
* a **greedy procedure** that takes a pool and a budget (SemDeDup, D2-Pruning, the Self-Filter filter,
  COINCIDE-lite): :func:`select_with_quotas` runs it once per source group with that group's quota
  (or once over every eligible sample with ``--global``).

Outputs (``WORK/baseline-NAME/``): ``selected_ids.npy``, ``selected_ids.txt``, ``report.json``,
``scores.png``, ``score.npy`` (the per-sample value the baseline ranked by, nan where it has none), and
the LLaVA JSON subset at ``--out``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ...errors import UserError
from ...fileio import atomic_path, write_json, write_text
from ...settings import FieldError
from .. import provenance
from ..ranking import PickSettings, count_by, group_quotas, score_histogram, select, target_count
from ..workdir import load_features, load_samples, usable_mask, write_subset

log = logging.getLogger(__name__)
GreedyFn = Callable[[np.ndarray, int], np.ndarray]  # (pool positions, budget) -> chosen positions, in order


@dataclass
class Inputs:
    """A select work folder as the baselines read it."""

    work: Path
    samples: list[dict[str, Any]]
    clip: np.ndarray  # [N, 2D], memory-mapped
    score_names: list[str]
    scaled: np.ndarray  # [N, n_scores] in [-1, 1]
    eligible: np.ndarray  # [N] bool: usable (and not text when --exclude-text)
    sources: np.ndarray  # [N] the `dataset` field (object array)
    k: int  # the budget

    def score(self, name: str) -> np.ndarray:
        """One scaled quality score [N] (``clipscore``, ``imagereward``, ``text_quality``)."""
        if name not in self.score_names:
            have = ", ".join(self.score_names) or "none"
            raise UserError(
                f"{self.work / 'features'} has no {name!r} score (it has {have}): "
                "re-run `frugalvl select features` with it enabled, or choose another difficulty"
            )
        return self.scaled[:, self.score_names.index(name)]


def load_inputs(work: str | Path, settings: PickSettings) -> Inputs:
    """The work folder's samples, features, eligibility and K, checked as ``pick`` checks them."""
    work = Path(work)
    samples = load_samples(work)
    clip, names, scaled = load_features(work)
    if len(clip) != len(samples):
        raise FieldError(
            "force",
            f"{work}: features and prepare/samples.json disagree on N: re-run the features stage with {{force}}",
        )
    eligible = usable_mask(work, samples)
    if settings.exclude_text:
        eligible &= np.array([s["status"] != "text" for s in samples])
    k = target_count(len(samples), settings)
    if not 0 < k <= int(eligible.sum()):
        raise FieldError(
            ("ratio", "count"),
            f"cannot pick {k} samples: {int(eligible.sum())} of {len(samples)} are eligible; lower {{ratio}} or {{count}}",
            PickSettings,
        )
    sources = np.asarray([s["dataset"] for s in samples], dtype=object)
    return Inputs(work, samples, clip, names, scaled, eligible, sources, k)


def unit_rows(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32, read chunk by chunk from a memmap."""
    out = np.empty(x.shape, np.float32)
    for lo in range(0, len(x), chunk):
        part = np.asarray(x[lo : lo + chunk], dtype=np.float32)
        out[lo : lo + chunk] = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    return out


def select_by_score(inputs: Inputs, score: np.ndarray, mode: str) -> tuple[np.ndarray, dict[str, int]]:
    """The highest ``score`` first, with ``pick``'s quota rule (``quota``) or overall (``global``)."""
    r = -np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf)
    return select(r, cast(Sequence[str], inputs.sources), inputs.eligible, inputs.k, mode)


def select_with_quotas(inputs: Inputs, greedy: GreedyFn, mode: str) -> tuple[np.ndarray, dict[str, int]]:
    """Run ``greedy(pool, budget)`` per source group with ``pick``'s quotas, or once with ``global``."""
    pool = np.flatnonzero(inputs.eligible)
    if mode == "global":
        return _checked(greedy(pool, inputs.k), pool, inputs.k), {}
    if mode != "quota":
        raise ValueError(f"unknown selection mode {mode!r}")
    groups = {g: pool[inputs.sources[pool] == g] for g in sorted(set(inputs.sources[pool]))}
    quotas = group_quotas({g: len(v) for g, v in groups.items()}, inputs.k)
    parts = [_checked(greedy(groups[g], quotas[g]), groups[g], quotas[g]) for g in groups if quotas[g]]
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), quotas


def _checked(chosen: np.ndarray, pool: np.ndarray, budget: int) -> np.ndarray:
    chosen = np.asarray(chosen, dtype=np.int64)
    if len(chosen) != budget or len(np.unique(chosen)) != budget or not np.isin(chosen, pool).all():
        raise RuntimeError(f"baseline returned {len(chosen)} picks for a budget of {budget} (a bug)")
    return chosen


def _jsonable(settings: Any) -> Any:
    return asdict(settings) if is_dataclass(settings) and not isinstance(settings, type) else settings


def write_selection(
    inputs: Inputs,
    name: str,
    out: str | Path,
    chosen: np.ndarray,
    quotas: dict[str, int],
    score: np.ndarray,
    pick: PickSettings,
    options: Any,
    extra: dict[str, Any] | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """``pick``'s outputs for a baseline: the LLaVA JSON subset at ``out`` and, under
    ``WORK/baseline-NAME/``, the ids (npy, txt), ``score.npy``, ``scores.png`` and ``report.json``."""
    out = Path(out)
    folder = folder or inputs.work / f"baseline-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    chosen = np.asarray(chosen, dtype=np.int64)
    write_subset(inputs.work, out, chosen, inputs.samples, pick.add_fields)  # in the input's format
    for fname, arr in (("selected_ids.npy", chosen), ("score.npy", np.asarray(score, dtype=np.float32))):
        with atomic_path(folder / fname) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    write_text(folder / "selected_ids.txt", "".join(inputs.samples[i]["id"] + "\n" for i in chosen))
    finite = np.isfinite(score)
    if finite[inputs.eligible].any():
        plot_r = np.where(finite, -np.asarray(score, dtype=np.float64), np.nan)
        ok = inputs.eligible & finite
        score_histogram(folder / "scores.png", np.nan_to_num(plot_r, nan=0.0), ok, chosen[ok[chosen]])
    report = {
        "baseline": name,
        "out": str(out.resolve()),
        "mode": pick.mode,
        "k": int(inputs.k),
        "n_samples": len(inputs.samples),
        "n_eligible": int(inputs.eligible.sum()),
        "n_selected": int(len(chosen)),
        "quotas": quotas,
        "selected_per_source": count_by(inputs.sources[chosen].tolist()),
        "eligible_per_source": count_by(inputs.sources[inputs.eligible].tolist()),
        "pick": _jsonable(pick),
        "options": _jsonable(options),
        "score_note": "score.npy: the value ranked by (higher = kept first; nan = none); scores.png plots -score",
        **(extra or {}),
    }
    write_json(folder / "report.json", report)
    ids = [inputs.samples[i]["id"] for i in chosen]
    provenance.write(folder, inputs.work, ids, {"pick": _jsonable(pick), "options": _jsonable(options)}, [out])
    log.info(
        "baseline %s: %d of %d samples -> %s; ids and report in %s", name, len(chosen), len(inputs.samples), out, folder
    )
    return report


def order_within(chosen: Sequence[int], score: np.ndarray) -> np.ndarray:
    """Chosen positions ordered by score, highest first (ties by position)."""
    picks = np.asarray(chosen, dtype=np.int64)
    return picks[np.lexsort((picks, -np.nan_to_num(score[picks], nan=-np.inf)))]
