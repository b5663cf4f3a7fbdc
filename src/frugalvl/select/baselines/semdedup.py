"""``semdedup``: semantic deduplication on the CLIP features (docs/methods/coido_baselines.md#baselines, SemDeDup).

1. Spherical k-means on the L2-normalised CLIP features (``clusters``, default ⌈N/66⌉: 10,000 for 665K as
   in the official 665K runs).
2. In each cluster, members in order of cosine to the centroid (most central first); member j gets
   M_j = its largest cosine to any member before it (−∞ for the first).
3. A sample is a duplicate at threshold ε when M_j > 1 − ε. ε is solved for the budget: keeping the K
   lowest M (per source group under quotas) is exactly the largest ε that keeps K samples.

Each cluster's first (most central) member has no earlier member, so every duplicate group keeps one
item, never zero (the reference code's flaw reported in facebookresearch/SemDeDup#8). Near-duplicates split
across two k-means clusters are not found (the method's own limit).
"""

from __future__ import annotations

import numpy as np

from .common import Inputs, select_by_score, unit_rows
from .geometry import spherical_kmeans
from .settings import SemDedupSettings as SemDedupSettings

POINTS_PER_CLUSTER = 66  # 665K / 10,000


def earlier_max_similarity(x: np.ndarray, block: int = 2048) -> np.ndarray:
    """M_j = max_{i<j} x_i·x_j over rows in the given order (−inf for row 0), in column blocks."""
    m = len(x)
    out = np.full(m, -np.inf)
    for lo in range(1, m, block):
        hi = min(m, lo + block)
        sim = x[:hi] @ x[lo:hi].T  # [hi, hi - lo]
        rows = np.arange(hi)[:, None]
        sim[rows >= np.arange(lo, hi)[None, :]] = -np.inf  # only earlier members count
        out[lo:hi] = sim.max(axis=0)
    return out


def duplicate_scores(x: np.ndarray, labels: np.ndarray, cents: np.ndarray, block: int = 2048) -> np.ndarray:
    """M per row of ``x`` (unit rows) within its cluster, members ordered most central first."""
    m = np.full(len(x), -np.inf)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        central = members[np.lexsort((members, -(x[members] @ cents[labels[members[0]]])))]
        m[central] = earlier_max_similarity(x[central], block)
    return m


def solved_epsilon(kept_m: np.ndarray) -> float:
    """ε of a kept set: 1 − its largest M (2, the widest ε, when no kept sample has an earlier member)."""
    finite = kept_m[np.isfinite(kept_m)]
    return float(1.0 - finite.max()) if len(finite) else 2.0


def run(inputs: Inputs, settings: SemDedupSettings, mode: str) -> tuple[np.ndarray, dict[str, int], np.ndarray, dict]:
    pool = np.flatnonzero(inputs.eligible)
    x = unit_rows(inputs.clip[pool])
    k = settings.clusters or max(1, -(-len(pool) // POINTS_PER_CLUSTER))
    labels, cents = spherical_kmeans(x, k, settings.seed, settings.iters)
    m = np.full(len(inputs.samples), np.nan)
    m[pool] = duplicate_scores(x, labels, cents, settings.block)
    chosen, quotas = select_by_score(inputs, -m, mode)
    extra = {
        "clusters": int(len(np.unique(labels))),
        "epsilon": solved_epsilon(m[chosen]) if mode == "global" else None,
        "epsilon_note": "largest eps with every kept sample at most 1 - eps cosine from an earlier member of "
        "its cluster" + ("" if mode == "global" else " (per source group under quotas)"),
        "epsilon_per_source": None
        if mode == "global"
        else {g: solved_epsilon(m[chosen][inputs.sources[chosen] == g]) for g in sorted(set(inputs.sources[chosen]))},
    }
    return chosen, quotas, -m, extra
