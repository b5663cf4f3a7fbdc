"""Shared geometry of the feature-space baselines: kNN, spherical k-means, the penalised greedy pass.

All of it works on L2-normalised CLIP features (``features/clip.npy``), cosine similarity s and squared
Euclidean distance d = ‖a − b‖² = 2 − 2s between unit vectors (what a faiss L2 search returns).
"""

from __future__ import annotations

import heapq
import logging

import numpy as np

log = logging.getLogger(__name__)


def knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows by cosine: ``idx`` [n, k'] and ``sim`` [n, k'], k' = min(k, n − 1),
    nearest first. Exact up to 30K rows; above, the clustering stage's HNSW search when faiss is installed."""
    from ..clustering import ClusterSettings, approximate_knn, exact_knn, fast_available

    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    settings = ClusterSettings()
    if n > settings.flat_max and fast_available():
        sims, idx = approximate_knn(x, k + 1, settings)
    else:
        sims, idx = exact_knn(x, k + 1, settings.block)
    return idx[:, 1:].astype(np.int64), sims[:, 1:].astype(np.float32)


def spherical_kmeans(
    x: np.ndarray, k: int, seed: int = 42, iters: int = 20, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Labels [n] and unit centroids [k, D] of spherical k-means (cosine assignment, normalised means),
    initialised from ``k`` distinct seeded rows; a centroid left empty keeps its previous position."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    cents = np.array(x[np.sort(rng.choice(n, size=k, replace=False))], dtype=np.float32)
    labels = np.full(n, -1, np.int64)
    for _ in range(iters):
        new = np.concatenate([np.argmax(x[lo : lo + chunk] @ cents.T, axis=1) for lo in range(0, n, chunk)])
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(cents, dtype=np.float64)
        np.add.at(sums, labels, x)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0
        cents[filled] = (sums[filled] / norms[filled]).astype(np.float32)
    return labels, cents


def penalised_greedy(score: np.ndarray, nbr: np.ndarray, weight: np.ndarray, budget: int) -> np.ndarray:
    """Take the highest score, then lower each of its neighbours j by ``weight[i, j'] · score_i``; repeat
    ``budget`` times (D2-Pruning's reverse message passing; Self-Filter's nearest-neighbour filter).

    ``nbr`` [n, k] local row indices (−1 = none), ``weight`` [n, k]. Returns local indices in pick order.
    A lazy max-heap: an entry whose score changed since it was pushed is pushed again with the new value.
    """
    s = np.asarray(score, dtype=np.float64).copy()
    taken = np.zeros(len(s), bool)
    heap = [(-v, i) for i, v in enumerate(s)]
    heapq.heapify(heap)
    out: list[int] = []
    while len(out) < budget and heap:
        neg, i = heapq.heappop(heap)
        if taken[i]:
            continue
        if -neg != s[i]:
            heapq.heappush(heap, (-s[i], i))
            continue
        taken[i] = True
        out.append(i)
        for j, w in zip(nbr[i], weight[i]):
            if j >= 0 and not taken[j]:
                s[j] -= w * s[i]
    return np.asarray(out, dtype=np.int64)


def unit_interval(values: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1] (all 1 when constant), so a penalty always lowers a neighbour's score."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(np.min(v)), float(np.max(v))
    return np.ones_like(v) if hi <= lo else (v - lo) / (hi - lo)
