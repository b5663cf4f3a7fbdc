"""The random subset S and the spectral clustering of spec §1.5."""

from __future__ import annotations

import numpy as np
import pytest

from frugalvl.select.clustering import ClusterSettings, cluster_features, draw_subset, knn_affinity, subset_and_clusters


def test_subset_is_seeded_uniform_and_usable_only():
    usable = np.ones(1000, bool)
    usable[::10] = False
    a = draw_subset(usable, 0.2, seed=42)
    assert len(a) == 180 and np.all(np.diff(a) > 0) and usable[a].all()
    np.testing.assert_array_equal(a, draw_subset(usable, 0.2, seed=42))
    assert not np.array_equal(a, draw_subset(usable, 0.2, seed=7))


def test_cluster_features_hand_case():
    clip = np.array([[3.0, 4.0]])
    x = cluster_features(clip, np.array([[1.0, 2.0, 3.0]]), ClusterSettings())
    z = np.array([-1.0, 0.0, 1.0]) / np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(x[0], np.r_[0.7 * np.array([0.6, 0.8]), 0.3 * z], rtol=1e-6)
    assert cluster_features(clip, np.array([[0.5]]), ClusterSettings()).shape == (1, 2)   # one score: dropped


def test_knn_affinity_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    k = 5
    a = knn_affinity(x, k, block=16).toarray()
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    ref = np.zeros_like(s)
    for i in range(len(x)):
        nn = np.argsort(-s[i])[:k]
        assert i in nn
        ref[i, nn] = 1.0 - (1.0 - s[i, nn]) / 2.0
    ref = (ref + ref.T) / 2.0
    np.testing.assert_allclose(a, ref, atol=1e-6)
    np.testing.assert_allclose(np.diag(a), 1.0)


def _blobs(n_per=60, k=4, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 5
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) * 0.3 for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def _same_partition(a, b):
    pairs = {(int(p), int(q)) for p, q in zip(a, b)}
    return len(pairs) == len(set(a)) == len(set(b))


def test_spectral_clustering_in_one_pass_recovers_blobs():
    x, truth = _blobs()
    usable = np.ones(len(x), bool)
    settings = ClusterSettings(ratio=0.5, n_clusters=4, knn=10)
    out = subset_and_clusters(x, None, usable, settings)
    assert out["clusterer"] == "spectral"
    assert len(out["labels"]) == len(out["indices"]) == 120
    assert _same_partition(out["labels"], truth[out["indices"]])
    again = subset_and_clusters(x, None, usable, settings)
    np.testing.assert_array_equal(out["labels"], again["labels"])


def test_kmeans_fallback_when_spectral_fails(monkeypatch):
    import sklearn.cluster

    class Broken:
        def __init__(self, **kwargs):
            pass

        def fit_predict(self, a):
            raise np.linalg.LinAlgError("no convergence")

    monkeypatch.setattr(sklearn.cluster, "SpectralClustering", Broken)
    x, truth = _blobs(30)
    out = subset_and_clusters(x, None, np.ones(len(x), bool), ClusterSettings(ratio=1.0, n_clusters=4, knn=10))
    assert out["clusterer"].startswith("kmeans")
    assert _same_partition(out["labels"], truth)


def test_bad_ratio():
    with pytest.raises(ValueError):
        draw_subset(np.ones(10, bool), 0.0, 1)
