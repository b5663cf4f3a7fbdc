"""``el2n`` and ``perplexity``: keep a band of a reference LLaVA's per-sample values
(docs/methods/coido_baselines.md#baselines).

The values come from :mod:`.reference` (the stage-1 model by default). ``band`` picks which part of the
sorted values is kept, per source group under quotas: ``top`` (the highest: hardest), ``bottom`` (the
lowest: easiest) or ``middle`` (the window centred on the median, the usual choice for perplexity).
"""

from __future__ import annotations

import numpy as np

from ...errors import UserError
from ...settings import FieldError
from .common import Inputs, select_with_quotas
from .settings import BANDS, LossBandSettings

DEFAULT_BAND = {"el2n": "top", "perplexity": "middle"}


def band_pick(values: np.ndarray, budget: int, band: str) -> np.ndarray:
    """Local indices of the ``budget`` values in ``band`` of the sorted order (ties by position)."""
    order = np.lexsort((np.arange(len(values)), values))  # ascending
    if band == "bottom":
        return order[:budget]
    if band == "top":
        return order[::-1][:budget] if budget else order[:0]
    start = (len(values) - budget) // 2
    return order[start : start + budget]


def run_band(inputs: Inputs, values: np.ndarray, band: str, mode: str) -> tuple[np.ndarray, dict[str, int]]:
    """Select ``band`` of ``values`` with pick's quota rule; samples without a value are ranked last."""
    if band not in BANDS:
        raise FieldError("band", f"{band!r} is unknown: choose one of {', '.join(BANDS)}", LossBandSettings)
    if np.isnan(values[inputs.eligible]).any():
        raise UserError(
            "the reference model gave no value for some eligible samples (no answer token): "
            "check the samples' length limit (max_length) and the conversations"
        )

    def greedy(pool: np.ndarray, budget: int) -> np.ndarray:
        return pool[band_pick(values[pool], budget, band)]

    return select_with_quotas(inputs, greedy, mode)


def make_run(stat: str, name: str):
    """The ``run`` of a band baseline on reference statistic ``stat``."""

    def run(inputs: Inputs, settings: LossBandSettings, mode: str):
        from .reference import reference_stats

        band = settings.band or DEFAULT_BAND[name]
        values = reference_stats(inputs, settings.reference, settings.batch_size, settings.device)[stat]
        chosen, quotas = run_band(inputs, values, band, mode)
        return chosen, quotas, values, {"band": band, "statistic": stat}

    return run


run_el2n = make_run("el2n", "el2n")
run_perplexity = make_run("ppl", "perplexity")
