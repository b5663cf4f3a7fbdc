"""``d2-pruning``: message passing on a kNN graph of the CLIP features (docs/methods/coido_baselines.md#baselines,
D2-Pruning).

* Graph: each sample's k = 5 nearest other samples by cosine; edge distance d = ‖a − b‖² between the
  unit features (2 − 2·cos, as a faiss L2 search reports it).
* Node score: the difficulty, min–max scaled to [0, 1] over the pool: ``clipscore`` (the scaled CLIP
  score), ``ce`` (the mean answer-token cross-entropy of a reference LLaVA, default the stage-1 model) or
  ``r`` (−r of the trained CoIDO scorer: low r = hard).
* Forward message passing: s_i ← s_i + Σ_{j ∈ kNN(i)} exp(−γ·d_ij)·s_j (a density-weighted difficulty).
* Greedy selection with reverse message passing: take the highest s_i, then s_j ← s_j − exp(−γ·d_ij)·s_i
  for its neighbours j; γ = 0.4 for both passes.

Under quotas the graph and the greedy pass are built per source group.
"""

from __future__ import annotations

import numpy as np

from ...settings import FieldError
from .common import Inputs, select_with_quotas, unit_rows
from .geometry import knn, penalised_greedy, unit_interval
from .settings import DIFFICULTIES, D2Settings


def difficulty(inputs: Inputs, settings: D2Settings) -> np.ndarray:
    """Difficulty [N] (higher = harder; nan where not computed)."""
    if settings.difficulty == "clipscore":
        return inputs.score("clipscore").astype(np.float64)
    if settings.difficulty == "r":
        path = inputs.work / "score" / "r.npy"
        if not path.is_file():
            raise FieldError(
                "difficulty",
                f"{path} is missing: run `frugalvl select score` first, or use {{difficulty}} clipscore",
                D2Settings,
            )
        return -np.load(path).astype(np.float64)
    if settings.difficulty == "ce":
        from .reference import reference_stats

        return reference_stats(inputs, settings.reference, settings.batch_size, settings.device)["ce"]
    raise FieldError(
        "difficulty", f"{settings.difficulty!r} is unknown: choose one of {', '.join(DIFFICULTIES)}", D2Settings
    )


def d2_select(x: np.ndarray, score: np.ndarray, budget: int, k: int = 5, gamma: float = 0.4) -> np.ndarray:
    """Local indices of ``budget`` rows of unit features ``x`` chosen by D2 message passing on ``score``."""
    nbr, sim = knn(x, k)
    weight = np.exp(-gamma * (2.0 - 2.0 * sim.astype(np.float64)))
    s = unit_interval(score)
    s = s + (weight * s[nbr]).sum(axis=1) if nbr.shape[1] else s  # forward pass
    return penalised_greedy(s, nbr, weight, budget)  # reverse passes


def run(inputs: Inputs, settings: D2Settings, mode: str) -> tuple[np.ndarray, dict[str, int], np.ndarray, dict]:
    diff = difficulty(inputs, settings)

    def greedy(pool: np.ndarray, budget: int) -> np.ndarray:
        x = unit_rows(inputs.clip[pool])
        return pool[d2_select(x, np.nan_to_num(diff[pool]), budget, settings.k, settings.gamma)]

    chosen, quotas = select_with_quotas(inputs, greedy, mode)
    return chosen, quotas, diff, {"difficulty": settings.difficulty}
