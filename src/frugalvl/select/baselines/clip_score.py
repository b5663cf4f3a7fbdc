"""``clip-score``: the highest CLIP score first (image–text cosine, docs/methods/coido_baselines.md#baselines).

Ranked by the scaled score in ``features/scores.json`` (min–max to [−1, 1]; a text-only sample has 0,
the middle of the range, and competes only inside its own source group under the default quotas).
"""

from __future__ import annotations

import numpy as np

from .common import Inputs, select_by_score
from .settings import ClipScoreSettings as ClipScoreSettings


def run(inputs: Inputs, settings: ClipScoreSettings, mode: str) -> tuple[np.ndarray, dict[str, int], np.ndarray, dict]:
    score = inputs.score(settings.score).astype(np.float64)
    chosen, quotas = select_by_score(inputs, score, mode)
    return chosen, quotas, score, {}
