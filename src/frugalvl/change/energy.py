"""The pixel verdict ("semantic level", docs/methods/segearth_ov3_change.md#pixel-verdict).

Per foreground class c (every class but ``bg_idx``) and per pixel, the change energy is

    E_c = M_c · Δ_c · D

* Δ_c = max over c's prompts q of |F¹_q − F²_q| (per-prompt differences, then the synonym max);
* M_c = max over c's prompts of max(F¹_q, F²_q);
* D = (1 − cos)/2, the dissimilarity of the two dates' SAM 3 features (the stride-14 FPN map, resized
  bilinearly to the image size), computed as 1 − (0.5·cos + 0.5) in the features' own precision.

A pixel is on for c when E_c exceeds max(t_c, 0.01), where t_c is Otsu's threshold of the whole map E_c,
or 0 when E_c spans no more than 1e-4. The verdict is "on for any foreground class". The products and
comparisons run in float32, in the official order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .otsu import otsu_threshold
from .settings import ENERGY_FLOOR, RANGE_GUARD


def feature_change(before: torch.Tensor, after: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """D = 1 − (0.5·cos + 0.5) per pixel (``H×W``) for two ``[D, h, w]`` feature maps, each resized to ``size``."""
    a = F.interpolate(before[None], size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(after[None], size=size, mode="bilinear", align_corners=False)
    cos = F.cosine_similarity(a, b, dim=1, eps=1e-8)[0]
    return 1 - (0.5 * cos + 0.5)


def class_energies(
    before: torch.Tensor, after: torch.Tensor, dissimilarity: torch.Tensor, query_to_class: Sequence[int], bg_idx: int
) -> dict[int, torch.Tensor]:
    """``{class: E_c}`` (``H×W`` float32) for every class other than ``bg_idx`` that has prompts, in class
    order, from the per-prompt scores ``[Q, H, W]`` of both dates."""
    index = torch.as_tensor(list(query_to_class), device=before.device)
    out = {}
    for c in sorted(set(int(i) for i in query_to_class)):
        if c == bg_idx:
            continue
        rows = (index == c).nonzero()[:, 0]
        delta = (before[rows] - after[rows]).abs().amax(0)
        peak = torch.maximum(before[rows], after[rows]).amax(0)
        out[c] = (peak * delta * dissimilarity).float()
    return out


@dataclass(frozen=True)
class PixelVerdict:
    on: np.ndarray  # H×W bool: on for any foreground class
    thresholds: dict[int, float]  # class -> the effective threshold max(t_c, 0.01)


def threshold(energy: np.ndarray) -> np.float32:
    """The effective threshold of one class's energy map: max(Otsu or 0, 0.01)."""
    energy = np.asarray(energy, dtype=np.float32)
    span = energy.max() - energy.min()
    otsu = otsu_threshold(energy) if span > np.float32(RANGE_GUARD) else np.float32(0)
    return max(otsu, np.float32(ENERGY_FLOOR))


def pixel_verdict(energies: dict[int, torch.Tensor]) -> PixelVerdict:
    """Pixels whose energy exceeds their class's threshold, for any class."""
    on: np.ndarray | None = None
    thresholds = {}
    for c, energy in energies.items():
        values = energy.detach().cpu().numpy().astype(np.float32, copy=False)
        tau = threshold(values)
        thresholds[c] = float(tau)
        hit = values > tau
        on = hit if on is None else on | hit
    if on is None:  # a vocabulary with only the background class
        raise ValueError("change detection needs at least one class besides bg_idx")
    return PixelVerdict(on, thresholds)
