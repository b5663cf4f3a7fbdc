"""``random``: a seeded uniform draw under the same budget and quotas as ``pick``
(docs/methods/coido_baselines.md#baselines)."""

from __future__ import annotations

import numpy as np

from .common import Inputs, select_by_score
from .settings import RandomSettings as RandomSettings


def run(inputs: Inputs, settings: RandomSettings, mode: str) -> tuple[np.ndarray, dict[str, int], np.ndarray, dict]:
    """Each sample gets a seeded uniform key; the highest keys are kept (per source, or overall)."""
    score = np.random.default_rng(settings.seed).random(len(inputs.samples))
    chosen, quotas = select_by_score(inputs, score, mode)
    return chosen, quotas, score, {}
