"""Scoring every sample with the trained scorer, and picking the subset (docs/methods/coido.md#selection, #outputs).

A low raw score r marks an important (hard) sample: training with w = softmax(r) on the loss moves
weight to easy samples, so CoIDO keeps the lowest r. The default selection is faithful: per source
group (``dataset``), quota_g = max(1, ⌊K·n_g/N⌋), the rounding remainder given to (or taken from)
the largest group, the lowest r first within each group. ``--global`` keeps the K lowest r overall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .settings import PickSettings


@torch.no_grad()
def score_all(scorer: torch.nn.Module, inputs: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Raw r for every row of ``inputs`` [N, F], in eval mode (no dropout), no softmax."""
    scorer = scorer.to(device).eval()
    out = []
    for lo in range(0, len(inputs), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(inputs[lo : lo + batch_size], dtype=np.float32)).to(device)
        out.append(scorer(x).float().reshape(-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def target_count(n_total: int, settings: PickSettings) -> int:
    """K: the absolute count, or ⌊ratio · N⌋ (with a guard against float round-off)."""
    if settings.count is not None:
        return int(settings.count)
    return int(math.floor(settings.ratio * n_total + 1e-9))


def group_quotas(group_sizes: dict[str, int], k: int) -> dict[str, int]:
    """quota_g = max(1, ⌊K·n_g/N⌋) capped at n_g; the remainder to (or from) the largest groups."""
    n = sum(group_sizes.values())
    if not 0 <= k <= n:
        raise ValueError(f"cannot pick {k} of {n} samples")
    quotas = {g: min(n_g, max(1, (k * n_g) // n)) if k else 0 for g, n_g in group_sizes.items()}
    order = sorted(group_sizes, key=lambda g: (-group_sizes[g], g))  # largest first, ties by name
    remainder = k - sum(quotas.values())
    for g in order:  # the largest group takes (or gives back) the remainder; the next ones if it is full
        if remainder == 0:
            break
        move = min(remainder, group_sizes[g] - quotas[g]) if remainder > 0 else -min(-remainder, quotas[g])
        quotas[g] += move
        remainder -= move
    return quotas


def lowest_first(r: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidates sorted by r ascending, ties by position (stable)."""
    return candidates[np.lexsort((candidates, r[candidates]))]


def select(
    r: np.ndarray, sources: Sequence[str], eligible: np.ndarray, k: int, mode: str = "quota"
) -> tuple[np.ndarray, dict[str, int]]:
    """Positions of the selected samples, lowest r first, and the quota per source."""
    pool = np.flatnonzero(eligible)
    groups_of = np.asarray(sources, dtype=object)
    if mode == "global":
        chosen = lowest_first(r, pool)[:k]
        return chosen, {}
    if mode != "quota":
        raise ValueError(f"unknown selection mode {mode!r}")
    groups: dict[str, np.ndarray] = {}
    for g in sorted(set(groups_of[pool])):
        groups[g] = pool[groups_of[pool] == g]
    quotas = group_quotas({g: len(v) for g, v in groups.items()}, k)
    chosen = (
        np.concatenate([lowest_first(r, groups[g])[: quotas[g]] for g in groups]) if groups else np.zeros(0, np.int64)
    )
    return lowest_first(r, chosen.astype(np.int64)), quotas


def count_by(values: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))


def score_histogram(path: Path, r: np.ndarray, eligible: np.ndarray, chosen: np.ndarray) -> None:
    """PNG: the distribution of r over the eligible samples, and over the selected ones."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..fileio import atomic_path

    fig = Figure(figsize=(6, 3.5), dpi=110)  # its own Agg canvas: the process's backend is left alone
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    values = r[eligible]
    bins: Any = np.linspace(float(values.min()), float(values.max()) + 1e-9, 50) if len(values) else 10
    ax.hist(values, bins=bins, color="#9db4cf", label=f"all eligible ({len(values)})")
    ax.hist(r[chosen], bins=bins, color="#1f4e79", label=f"selected ({len(chosen)})")
    ax.set_xlabel("scorer output r (low = kept)")
    ax.set_ylabel("samples")
    ax.legend(frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
