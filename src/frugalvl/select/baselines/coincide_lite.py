"""``coincide-lite``: COINCIDE's cluster-wise budget and prototypes on CoIDO's CLIP features
(docs/methods/coido_baselines.md#baselines).

COINCIDE embeds samples with a TinyLLaVA-2B; the lite version uses the L2-normalised CLIP features.

1. Spherical k-means (``clusters``, default ⌈N/66⌉, i.e. 10,000 for 665K as COINCIDE).
2. Transferability t_c = mean cosine of centroid c to the other centroids, those above 0.9 excluded.
   Density d_c = mean Gaussian kernel exp(−‖x_i − x_j‖²/σ²) over the pairs of distinct members (σ = 1;
   1 for a singleton).
3. Budget share p_c = softmax_c(t_c / d_c / T), T = 0.1. Clusters are filled smallest first with
   min(size, round(remaining · p_c / remaining share)); what a cluster cannot use passes on to the next.
4. Within each cluster, greedy MMD prototypes: add the member that most increases
   2/(n·m) Σ_{i∈S, j} k(i, j) − 1/m² Σ_{i, j∈S} k(i, j) (m = |S| after adding).
"""

from __future__ import annotations

import numpy as np

from .common import Inputs, select_with_quotas, unit_rows
from .geometry import spherical_kmeans
from .semdedup import POINTS_PER_CLUSTER
from .settings import CoincideSettings as CoincideSettings


def kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """exp(−‖a − b‖²/σ²) for unit rows (‖a − b‖² = 2 − 2·a·b)."""
    return np.exp(-(2.0 - 2.0 * (a @ b.T)) / sigma**2)


def transferability(cents: np.ndarray, cap: float) -> np.ndarray:
    """Mean cosine of each centroid to the others, those above ``cap`` left out (0 when none is left)."""
    sim = cents @ cents.T
    np.fill_diagonal(sim, np.nan)
    sim[sim > cap] = np.nan
    counted = np.isfinite(sim).sum(axis=1)
    return np.where(counted > 0, np.nansum(sim, axis=1) / np.maximum(counted, 1), 0.0)


def density(x: np.ndarray, sigma: float) -> float:
    """Mean kernel over pairs of distinct rows (1 for a single row)."""
    m = len(x)
    if m < 2:
        return 1.0
    k = kernel(x, x, sigma)
    return float((k.sum() - np.trace(k)) / (m * (m - 1)))


def cluster_budgets(shares: np.ndarray, sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer budgets summing to ``total`` (≤ Σ sizes): smallest clusters first, each min(size, its share of
    what remains); leftovers go to clusters with room, largest share first."""
    budgets = np.zeros(len(sizes), np.int64)
    remaining, mass = total, float(shares.sum())
    for c in np.lexsort((-shares, sizes)):
        want = int(round(remaining * shares[c] / mass)) if mass > 0 else 0
        budgets[c] = min(int(sizes[c]), want, remaining)
        remaining -= budgets[c]
        mass -= shares[c]
    for c in np.argsort(-shares, kind="stable"):
        if remaining <= 0:
            break
        add = min(remaining, int(sizes[c] - budgets[c]))
        budgets[c] += add
        remaining -= add
    return budgets


def mmd_prototypes(x: np.ndarray, budget: int, sigma: float) -> np.ndarray:
    """Local indices of ``budget`` greedy MMD prototypes of the rows of ``x``."""
    n = len(x)
    if budget >= n:
        return np.arange(n)
    k = kernel(x, x, sigma)
    col_mean = k.mean(axis=0)  # (1/n) Σ_j k(i, j)
    chosen: list[int] = []
    within = np.zeros(n)  # Σ_{s∈S} k(i, s)
    self_sum = 0.0  # Σ_{i,j∈S} k(i, j)
    free = np.ones(n, bool)
    for _ in range(budget):
        m = len(chosen) + 1
        fit = 2.0 / m * (col_mean[chosen].sum() + col_mean)  # 2/(n m) Σ_{i∈S+c} Σ_j k(i, j)
        spread = (self_sum + 2.0 * within + np.diag(k)) / m**2
        gain = np.where(free, fit - spread, -np.inf)
        i = int(np.argmax(gain))
        chosen.append(i)
        free[i] = False
        self_sum += 2.0 * within[i] + k[i, i]
        within += k[:, i]
    return np.asarray(chosen, dtype=np.int64)


def coincide_select(x: np.ndarray, budget: int, settings: CoincideSettings) -> tuple[np.ndarray, dict]:
    """Local indices of ``budget`` rows of unit features ``x``, and the cluster statistics."""
    n_clusters = settings.clusters or max(1, -(-len(x) // POINTS_PER_CLUSTER))
    labels, cents = spherical_kmeans(x, n_clusters, settings.seed, settings.iters)
    names = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in names]
    t = transferability(cents[names], settings.transfer_cap)
    d = np.array([density(x[m], settings.sigma) for m in members])
    logits = t / np.maximum(d, 1e-12) / settings.temperature
    shares = np.exp(logits - logits.max())
    budgets = cluster_budgets(shares / shares.sum(), np.array([len(m) for m in members]), budget)
    picks = [m[mmd_prototypes(x[m], int(b), settings.sigma)] for m, b in zip(members, budgets) if b]
    chosen = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    return chosen, {"clusters": int(len(names))}


def run(inputs: Inputs, settings: CoincideSettings, mode: str):
    stats: dict = {}

    def greedy(pool: np.ndarray, budget: int) -> np.ndarray:
        chosen, info = coincide_select(unit_rows(inputs.clip[pool]), budget, settings)
        stats.setdefault("clusters_per_run", []).append(info["clusters"])
        return pool[chosen]

    chosen, quotas = select_with_quotas(inputs, greedy, mode)
    score = np.full(len(inputs.samples), np.nan)
    score[chosen] = np.linspace(1.0, 0.0, len(chosen)) if len(chosen) else score[chosen]
    return chosen, quotas, score, {**stats, "score_note": "no per-sample score: score.npy ranks the picks in order"}
