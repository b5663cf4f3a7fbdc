"""The random p% training subset S and its spectral clustering, in one pass (spec/coido.md §1.1, §1.5).

Clustering features: ``0.7 · CLIP/‖CLIP‖ ‖ 0.3 · z(scores)``, the z-score taken across the sample's
own enabled scores (dropped with fewer than two). Graph: cosine similarity s, distance
d = (1 − s)/2, the k = 30 nearest neighbours (self included), affinity 1 − d on those edges,
symmetrised by averaging. Spectral clustering (K = 20, discretize, seed 42) over all of S at once;
k-means (10 inits) when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class ClusterSettings:
    ratio: float = 0.2          # p: fraction of the usable samples drawn into S
    seed: int = 42              # the draw's seed
    n_clusters: int = 20        # K
    knn: int = 30               # neighbours per point, self included
    clip_weight: float = 0.7
    score_weight: float = 0.3
    random_state: int = 42      # the clusterer's seed
    block: int = 4096           # rows per similarity block (memory ~ block × |S| floats)
    device: str = "cpu"         # where the kNN search runs (cuda: seconds for |S| = 133K)


def draw_subset(usable: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Sorted positions of a uniform random ``ratio`` of the usable samples (at least one)."""
    pool = np.flatnonzero(usable)
    if not 0 < ratio <= 1:
        raise ValueError(f"subset ratio must be in (0, 1], got {ratio}")
    size = max(1, int(round(ratio * len(pool))))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=size, replace=False)).astype(np.int64)


def cluster_features(clip: np.ndarray, scores: np.ndarray | None, settings: ClusterSettings) -> np.ndarray:
    """Rows ``0.7 · clip/‖clip‖ ‖ 0.3 · z`` with z the per-sample z-score of its scores."""
    clip = clip.astype(np.float32)
    clip = clip / np.maximum(np.linalg.norm(clip, axis=1, keepdims=True), 1e-12)
    parts = [settings.clip_weight * clip]
    if scores is not None and scores.ndim == 2 and scores.shape[1] >= 2:
        mean = scores.mean(axis=1, keepdims=True)
        std = scores.std(axis=1, keepdims=True)
        parts.append(settings.score_weight * ((scores - mean) / np.maximum(std, 1e-8)).astype(np.float32))
    return np.concatenate(parts, axis=1)


def knn_affinity(x: np.ndarray, k: int, block: int = 4096, device: str = "cpu") -> sp.csr_matrix:
    """Sparse symmetric affinity 1 − (1 − cos)/2 on each point's k nearest neighbours (self included)."""
    import torch

    n = len(x)
    k = min(k, n)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    xt = xt / xt.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows, cols, vals = [], [], []
    for lo in range(0, n, block):
        sim = xt[lo:lo + block] @ xt.T
        rows_here = torch.arange(sim.shape[0], device=sim.device)
        sim[rows_here, rows_here + lo] = 2.0   # self first, always kept
        top, idx = (t.cpu() for t in sim.topk(k, dim=1))
        top[:, 0] = 1.0
        rows.append(np.repeat(np.arange(lo, lo + sim.shape[0]), k))
        cols.append(idx.numpy().ravel())
        vals.append((1.0 - (1.0 - top.numpy().ravel()) / 2.0).astype(np.float64))
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return ((a + a.T) / 2.0).tocsr()


def spectral_labels(affinity: sp.csr_matrix, features: np.ndarray, settings: ClusterSettings) -> tuple[np.ndarray, str]:
    """Labels from spectral clustering on the affinity; k-means on the features when that fails."""
    import warnings

    from sklearn.cluster import KMeans, SpectralClustering

    n_clusters = min(settings.n_clusters, affinity.shape[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "graph is not fully connected"
            model = SpectralClustering(n_clusters=n_clusters, affinity="precomputed", assign_labels="discretize",
                                       random_state=settings.random_state)
            return model.fit_predict(affinity).astype(np.int64), "spectral"
    except Exception as exc:  # noqa: BLE001 - the documented fallback
        labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=settings.random_state).fit_predict(features)
        return labels.astype(np.int64), f"kmeans (spectral failed: {type(exc).__name__}: {exc})"


def subset_and_clusters(clip: np.ndarray, scores: np.ndarray | None, usable: np.ndarray,
                        settings: ClusterSettings) -> dict[str, Any]:
    """Draw S, cluster it: ``indices`` [|S|], ``labels`` [|S|], ``clusterer``."""
    indices = draw_subset(usable, settings.ratio, settings.seed)
    feats = cluster_features(clip[indices], None if scores is None else scores[indices], settings)
    labels, clusterer = spectral_labels(knn_affinity(feats, settings.knn, settings.block, settings.device), feats, settings)
    return {"indices": indices, "labels": labels, "clusterer": clusterer,
            "recipe": f"{settings.clip_weight}*clip/|clip| ++ {settings.score_weight}*zscore(scores)"
                      + ("" if scores is not None and scores.shape[1] >= 2 else " (score part dropped: fewer than 2 scores)")}


def centroids(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm mean feature per label, and the labels in that order."""
    names = np.unique(labels)
    c = np.stack([features[labels == k].mean(axis=0) for k in names])
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), names


def assign_nearest(features: np.ndarray, cents: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Each row's label by the most cosine-similar centroid (used for reports on all N)."""
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return names[np.argmax(f @ cents.T, axis=1)]
