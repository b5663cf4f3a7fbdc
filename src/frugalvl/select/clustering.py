"""The random p% training subset S and its spectral clustering, in one pass (docs/methods/coido.md#clustering).

Clustering features: ``0.7 · CLIP/‖CLIP‖ ‖ 0.3 · z(scores)``, the z-score taken across the sample's
own enabled scores (dropped with fewer than two). Graph: cosine similarity s, distance
d = (1 − s)/2, the k = min(30, n − 1) nearest neighbours (self included, as the official script), affinity
1 − d on those edges, symmetrised by averaging. Spectral clustering (K = 20, discretize, seed 42) over all
of S at once; k-means (10 inits) when it fails. A subset too small for K clusters of two samples or more
(|S| < 2K, a first try on a small set) gets K = ⌊|S|/2⌋, said in one logged line (:func:`clusters_for`).

Two solvers compute the same thing (docs/methods/coido_baselines.md#clustering-at-scale):

* ``exact``: brute-force kNN (torch matmul in row blocks) and scikit-learn's ARPACK shift-invert eigensolver.
  O(n²) search and a sparse LU factorisation: ~10 minutes for 100K points on 2 cores.
* ``fast``: exact kNN up to ``flat_max`` points; above, candidates from a faiss HNSW index over a 128-d PCA
  projection, re-ranked by the exact cosine in the full space; and the LOBPCG eigensolver preconditioned by
  algebraic multigrid (pyamg). Same graph recipe, same discretisation.

``auto`` (default) takes ``exact`` up to ``exact_max`` points and ``fast`` above, or ``exact`` when faiss or
pyamg is not installed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from .settings import SOLVERS, ClusterSettings

log = logging.getLogger(__name__)


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
    clip = np.asarray(clip, dtype=np.float32)
    clip = clip / np.maximum(np.linalg.norm(clip, axis=1, keepdims=True), 1e-12)
    parts = [settings.clip_weight * clip]
    if scores is not None and scores.ndim == 2 and scores.shape[1] >= 2:
        mean = scores.mean(axis=1, keepdims=True)
        std = scores.std(axis=1, keepdims=True)
        parts.append(settings.score_weight * ((scores - mean) / np.maximum(std, 1e-8)).astype(np.float32))
    return np.concatenate(parts, axis=1)


def neighbour_count(k: int, n: int) -> int:
    """Entries kept per row, self included: min(k, n − 1) as the official script (at least 1)."""
    return max(1, min(k, n - 1))


def _affinity_from_knn(sims: np.ndarray, idx: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric sparse 1 − (1 − s)/2 from per-row neighbours (self in column 0); idx < 0 = no neighbour."""
    rows = np.repeat(np.arange(n), idx.shape[1])
    keep = idx.ravel() >= 0
    vals = 1.0 - (1.0 - sims.ravel().astype(np.float64)) / 2.0
    a = sp.csr_matrix((vals[keep], (rows[keep], idx.ravel()[keep])), shape=(n, n))
    return ((a + a.T) / 2.0).tocsr()


def exact_knn(x: np.ndarray, k: int, block: int = 4096, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine kNN (torch matmul in row blocks): ``sims``, ``idx`` [n, k], self first (sim 1)."""
    import torch

    n = len(x)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    xt = xt / xt.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sims, idx = [], []
    for lo in range(0, n, block):
        sim = xt[lo : lo + block] @ xt.T
        rows_here = torch.arange(sim.shape[0], device=sim.device)
        sim[rows_here, rows_here + lo] = 2.0  # self first, always kept
        top, ix = (t.cpu() for t in sim.topk(k, dim=1))
        top[:, 0] = 1.0
        sims.append(top.numpy())
        idx.append(ix.numpy())
    return np.concatenate(sims), np.concatenate(idx).astype(np.int64)


def knn_affinity(x: np.ndarray, k: int, block: int = 4096, device: str = "cpu") -> sp.csr_matrix:
    """Exact kNN graph: affinity 1 − (1 − cos)/2 on each point's min(k, n − 1) nearest (self included)."""
    n = len(x)
    sims, idx = exact_knn(x, neighbour_count(k, n), block, device)
    return _affinity_from_knn(sims, idx, n)


def _self_first(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put each row's own point first (similarity 1); a row whose search missed itself drops its last entry."""
    n, k = idx.shape
    me = np.arange(n)[:, None]
    order = np.argsort(idx == me, axis=1, kind="stable")[:, : k - 1]  # the non-self entries, in order
    others_i = np.take_along_axis(idx, order, axis=1)
    others_s = np.take_along_axis(sims, order, axis=1)
    return (
        np.concatenate([np.ones((n, 1), sims.dtype), others_s], axis=1),
        np.concatenate([me.astype(idx.dtype), others_i], axis=1),
    )


def _row_norms(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    return (
        np.concatenate(
            [
                np.maximum(np.linalg.norm(np.asarray(x[lo : lo + chunk], np.float32), axis=1), 1e-12)
                for lo in range(0, len(x), chunk)
            ]
        )
        if len(x)
        else np.zeros(0, np.float32)
    )


def _pca_basis(x: np.ndarray, norms: np.ndarray, dim: int, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-``dim`` principal directions [D, dim] of the unit rows, from a seeded sample."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))
    s = np.asarray(x[rows], np.float64) / norms[rows, None]
    mean = s.mean(axis=0)
    s -= mean
    _, vecs = np.linalg.eigh(s.T @ s)
    return mean.astype(np.float32), np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32)


def approximate_knn(x: np.ndarray, k: int, settings: ClusterSettings) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN for large n: candidates from a faiss HNSW index over a PCA projection (``pca_dim``), then
    re-ranked by the exact cosine in the full space. ``sims``, ``idx`` [n, k], self first. Reads ``x`` in
    chunks (a memory map works) and holds no second full-width copy of it."""
    import faiss

    n, chunk = len(x), 65536
    norms = _row_norms(x, chunk)
    mean, basis = _pca_basis(x, norms, min(settings.pca_dim, x.shape[1]), settings.pca_sample, settings.random_state)
    low = np.concatenate(
        [
            (np.asarray(x[lo : lo + chunk], np.float32) / norms[lo : lo + chunk, None] - mean) @ basis
            for lo in range(0, n, chunk)
        ]
    )
    index = faiss.IndexHNSWFlat(low.shape[1], settings.hnsw_m)
    index.hnsw.efConstruction = settings.hnsw_ef
    index.add(low)
    cand = min(n, settings.candidates * k)
    index.hnsw.efSearch = max(settings.hnsw_ef, cand)
    _, idx = index.search(low, cand)
    del index, low
    idx = idx.astype(np.int64)
    sims = np.empty(idx.shape, np.float32)
    step = 1024  # gathers step × candidates full rows at a time
    for lo in range(0, n, step):
        rows = np.maximum(idx[lo : lo + step], 0)
        q = np.asarray(x[lo : lo + step], np.float32) / norms[lo : lo + step, None]
        sims[lo : lo + step] = (
            np.einsum("nd,ncd->nc", q, np.asarray(x[rows.ravel()], np.float32).reshape(rows.shape + (x.shape[1],)))
            / norms[rows]
        )
    sims[idx < 0] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return _self_first(np.take_along_axis(sims, top, axis=1), np.take_along_axis(idx, top, axis=1))


def neighbours(x: np.ndarray, k: int, settings: ClusterSettings) -> tuple[np.ndarray, np.ndarray]:
    """The fast solver's kNN: exact up to ``flat_max`` points, :func:`approximate_knn` above."""
    if len(x) <= settings.flat_max:
        return exact_knn(x, k, settings.block, settings.device)
    return approximate_knn(x, k, settings)


def knn_affinity_fast(x: np.ndarray, k: int, settings: ClusterSettings) -> sp.csr_matrix:
    """The same graph as :func:`knn_affinity`, with the neighbours from :func:`neighbours`."""
    n = len(x)
    sims, idx = neighbours(x, neighbour_count(k, n), settings)
    return _affinity_from_knn(sims, idx, n)


def fast_available() -> bool:
    """Whether faiss and pyamg are importable (the ``fast`` solver's dependencies)."""
    try:
        import faiss  # noqa: F401
        import pyamg  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_solver(settings: ClusterSettings, n: int) -> str:
    """``exact`` or ``fast`` for ``n`` points; a FieldError when ``fast`` is asked for but not installed."""
    from ..settings import FieldError

    if settings.solver not in SOLVERS:
        raise FieldError(
            "solver", f"{settings.solver!r} is unknown: choose one of {', '.join(SOLVERS)}", ClusterSettings
        )
    if settings.solver == "exact" or (settings.solver == "auto" and n <= settings.exact_max):
        return "exact"
    if fast_available():
        return "fast"
    if settings.solver == "fast":
        raise FieldError(
            "solver",
            "the fast clustering solver needs faiss and pyamg: pip install faiss-cpu pyamg, or set {solver} exact",
            ClusterSettings,
        )
    log.warning(
        "faiss or pyamg not installed: clustering %d points with the exact solver (slow); "
        "pip install faiss-cpu pyamg for the fast one",
        n,
    )
    return "exact"


def spectral_labels(
    affinity: sp.csr_matrix, features: np.ndarray, settings: ClusterSettings, eigen_solver: str = "arpack"
) -> tuple[np.ndarray, str]:
    """Labels from spectral clustering on the affinity (``arpack``: scikit-learn's exact path; ``amg``:
    :func:`amg_spectral_labels`); k-means on the features when that fails (one logged line naming the error)."""
    import warnings

    from sklearn.cluster import KMeans, SpectralClustering

    n_clusters = min(settings.n_clusters, affinity.shape[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "graph is not fully connected"
            warnings.simplefilter("ignore", RuntimeWarning)  # LOBPCG's "not reaching the requested tolerance"
            if eigen_solver == "amg" and affinity.shape[0] >= 5 * (n_clusters + 1):  # smaller: ARPACK, as sklearn
                return amg_spectral_labels(affinity, settings), "spectral"
            model = SpectralClustering(
                n_clusters=n_clusters,
                affinity="precomputed",
                assign_labels="discretize",
                eigen_solver=eigen_solver,
                random_state=settings.random_state,
            )
            return model.fit_predict(affinity).astype(np.int64), "spectral"
    except Exception as exc:  # noqa: BLE001 - the documented fallback
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
        log.warning(
            "spectral clustering failed (%s); falling back to k-means (%d clusters, 10 inits) on the features",
            why,
            n_clusters,
        )
        labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=settings.random_state).fit_predict(features)
        return labels.astype(np.int64), f"kmeans (spectral failed: {why})"


def amg_spectral_labels(affinity: sp.csr_matrix, settings: ClusterSettings) -> np.ndarray:
    """Spectral clustering as scikit-learn's ``eigen_solver="amg"`` path, with LOBPCG's iteration limit and
    tolerance set here (scikit-learn leaves SciPy's default of 20 iterations, too few for 100K+ points):
    the smallest eigenvectors of the normalised Laplacian (+1e-5·I), preconditioned by a smoothed-aggregation
    multigrid (pyamg), divided by √degree, sign-fixed, then the same ``discretize`` step."""
    from pyamg import smoothed_aggregation_solver
    from scipy.sparse.csgraph import laplacian
    from scipy.sparse.linalg import lobpcg
    from sklearn.cluster._spectral import discretize
    from sklearn.manifold._spectral_embedding import _deterministic_vector_sign_flip

    n = affinity.shape[0]
    k = min(settings.n_clusters, n)
    lap, dd = laplacian(affinity.astype(np.float64), normed=True, return_diag=True)
    lap = (lap + 1e-5 * sp.identity(n)).tocsr()
    precond = smoothed_aggregation_solver(lap).aspreconditioner()
    rng = np.random.RandomState(settings.random_state)
    x0 = rng.standard_normal((n, k + 1))
    x0[:, 0] = dd.ravel()
    _, vecs = lobpcg(lap, x0, M=precond, tol=settings.eigen_tol, largest=False, maxiter=settings.eigen_maxiter)
    embedding = _deterministic_vector_sign_flip((vecs[:, :k] / dd[:, None]).T).T
    return discretize(embedding, random_state=np.random.RandomState(settings.random_state)).astype(np.int64)


def clusters_for(requested: int, n: int) -> int:
    """K for ``n`` points: the ``requested`` K, at most ⌊n/2⌋ (clusters of one sample teach nothing, and the
    eigensolver cannot give n − 1 or more eigenvectors), at least 1."""
    return max(1, min(requested, n // 2))


def cluster_points(feats: np.ndarray, settings: ClusterSettings) -> dict[str, Any]:
    """Spectral labels of ``feats`` with the solver ``settings`` pick; ``labels``, ``clusterer``, ``solver``,
    ``n_clusters`` (distinct labels actually produced) and the stage times."""
    n = len(feats)
    k = clusters_for(settings.n_clusters, n)
    if k != settings.n_clusters:
        log.warning(
            "the clustering subset has %d samples, too few for %d clusters of two or more: using K = %d (|S|/2)",
            n,
            settings.n_clusters,
            k,
        )
        settings = dataclasses.replace(settings, n_clusters=k)
    solver = resolve_solver(settings, n)
    t0 = time.perf_counter()
    if solver == "fast":
        graph = knn_affinity_fast(feats, settings.knn, settings)
    else:
        graph = knn_affinity(feats, settings.knn, settings.block, settings.device)
    t1 = time.perf_counter()
    labels, clusterer = spectral_labels(graph, feats, settings, "amg" if solver == "fast" else "arpack")
    t2 = time.perf_counter()
    n_used = int(len(np.unique(labels)))
    log.info(
        "clustered %d points into %d clusters: %s solver, kNN %.1f s, %s %.1f s",
        n,
        n_used,
        solver,
        t1 - t0,
        clusterer,
        t2 - t1,
    )
    described = f"{clusterer}; {n_used} clusters; {solver} solver"
    return {
        "labels": labels,
        "clusterer": described,
        "method": clusterer.split(" ")[0],
        "solver": solver,
        "n_clusters": n_used,
        "knn_s": t1 - t0,
        "spectral_s": t2 - t1,
    }


def subset_and_clusters(
    clip: np.ndarray, scores: np.ndarray | None, usable: np.ndarray, settings: ClusterSettings
) -> dict[str, Any]:
    """Draw S, cluster it: ``indices`` [|S|], ``labels`` [|S|], ``clusterer``, ``solver``, ``n_clusters``."""
    indices = draw_subset(usable, settings.ratio, settings.seed)
    feats = cluster_features(clip[indices], None if scores is None else scores[indices], settings)
    out = cluster_points(feats, settings)
    dropped = "" if scores is not None and scores.shape[1] >= 2 else " (score part dropped: fewer than 2 scores)"
    return {
        "indices": indices,
        **out,
        "recipe": f"{settings.clip_weight}*clip/|clip| ++ {settings.score_weight}*zscore(scores)" + dropped,
    }


def centroids(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm mean feature per label, and the labels in that order."""
    names = np.unique(labels)
    c = np.stack([features[labels == k].mean(axis=0) for k in names])
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), names


def assign_nearest(features: np.ndarray, cents: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Each row's label by the most cosine-similar centroid (used for reports on all N)."""
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return names[np.argmax(f @ cents.T, axis=1)]
