"""The random subset S and the spectral clustering of docs/methods/coido.md#clustering."""

from __future__ import annotations

import numpy as np
import pytest

from frugalvl.select.clustering import (
    ClusterSettings,
    approximate_knn,
    cluster_features,
    draw_subset,
    exact_knn,
    knn_affinity,
    knn_affinity_fast,
    subset_and_clusters,
)


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
    assert cluster_features(clip, np.array([[0.5]]), ClusterSettings()).shape == (1, 2)  # one score: dropped


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
    assert out["method"] == "spectral" and out["n_clusters"] == 4
    assert out["clusterer"] == "spectral; 4 clusters; exact solver"
    assert len(out["labels"]) == len(out["indices"]) == 120
    assert _same_partition(out["labels"], truth[out["indices"]])
    again = subset_and_clusters(x, None, usable, settings)
    np.testing.assert_array_equal(out["labels"], again["labels"])


def test_kmeans_fallback_when_spectral_fails(monkeypatch, caplog):
    import sklearn.cluster

    class Broken:
        def __init__(self, **kwargs):
            pass

        def fit_predict(self, a):
            raise np.linalg.LinAlgError("no convergence")

    monkeypatch.setattr(sklearn.cluster, "SpectralClustering", Broken)
    x, truth = _blobs(30)
    with caplog.at_level("WARNING", logger="frugalvl.select.clustering"):
        out = subset_and_clusters(x, None, np.ones(len(x), bool), ClusterSettings(ratio=1.0, n_clusters=4, knn=10))
    assert out["method"] == "kmeans" and out["n_clusters"] == 4
    assert out["clusterer"] == "kmeans (spectral failed: LinAlgError: no convergence); 4 clusters; exact solver"
    assert _same_partition(out["labels"], truth)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage() and "LinAlgError" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)  # one line, no traceback


def test_fallback_message_keeps_only_the_first_line_of_a_type_error(monkeypatch):
    import sklearn.cluster

    class Broken:
        def __init__(self, **kwargs):
            pass

        def fit_predict(self, a):
            raise TypeError("bad argument\nsecond line of detail")

    monkeypatch.setattr(sklearn.cluster, "SpectralClustering", Broken)
    x, _ = _blobs(10)
    out = subset_and_clusters(x, None, np.ones(len(x), bool), ClusterSettings(ratio=1.0, n_clusters=4, knn=5))
    assert out["clusterer"].startswith("kmeans (spectral failed: TypeError: bad argument)")


def test_small_subsets_keep_n_minus_1_entries_per_row_as_the_official_script():
    """k = min(30, n − 1), self included: with n = 6 ≤ 30 each row drops its farthest point
    (docs/methods/coido_baselines.md#fidelity-fixes)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    a = knn_affinity(x, 30).toarray()
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    ref = np.zeros_like(s)
    for i in range(6):
        keep = np.argsort(-s[i])[:5]  # self + the 4 nearest; the farthest dropped
        ref[i, keep] = 1.0 - (1.0 - s[i, keep]) / 2.0
    ref = (ref + ref.T) / 2.0
    np.testing.assert_allclose(a, ref, atol=1e-6)
    assert knn_affinity(x, 30).nnz < 36  # not the complete graph the old min(k, n) gave
    assert (knn_affinity(x, 30) != 0).sum(axis=1).min() >= 5


def test_fast_solver_graph_equals_exact_graph():
    x, _ = _blobs(40, dim=12)
    settings = ClusterSettings(knn=7)
    np.testing.assert_allclose(knn_affinity_fast(x, 7, settings).toarray(), knn_affinity(x, 7).toarray(), atol=1e-6)


def test_approximate_knn_finds_the_exact_neighbours_on_separated_data():
    pytest.importorskip("faiss")
    x, _ = _blobs(100, k=5, dim=24)
    settings = ClusterSettings(pca_dim=24, pca_sample=300, candidates=3)  # a rotation: only HNSW approximates
    sims_a, idx_a = approximate_knn(x, 6, settings)
    sims_e, idx_e = exact_knn(x, 6)
    assert (idx_a[:, 0] == np.arange(len(x))).all() and np.allclose(sims_a[:, 0], 1.0)
    recall = np.mean([len(set(a) & set(e)) / 6 for a, e in zip(idx_a, idx_e)])
    assert recall > 0.95
    np.testing.assert_allclose(np.sort(sims_a, axis=1), np.sort(sims_e, axis=1), atol=0.05)


def test_fast_solver_matches_exact_labels():
    pytest.importorskip("pyamg")
    from sklearn.metrics import adjusted_rand_score

    x, truth = _blobs(150, k=4, dim=16)
    usable = np.ones(len(x), bool)
    exact = subset_and_clusters(x, None, usable, ClusterSettings(ratio=1.0, n_clusters=4, knn=10, solver="exact"))
    fast = subset_and_clusters(x, None, usable, ClusterSettings(ratio=1.0, n_clusters=4, knn=10, solver="fast"))
    assert fast["solver"] == "fast" and exact["solver"] == "exact"
    assert adjusted_rand_score(exact["labels"], fast["labels"]) == 1.0


def test_bad_ratio():
    with pytest.raises(ValueError):
        draw_subset(np.ones(10, bool), 0.0, 1)


def test_streamed_scoring_and_shard_assembly_equal_the_in_memory_path(tmp_path):
    """docs/methods/coido_baselines.md#clustering-at-scale: the streaming helpers give exactly what the whole-array
    path gives."""
    import torch

    from frugalvl.select.features import run_sharded
    from frugalvl.select.ranking import score_all
    from frugalvl.select.scorer import Scorer
    from frugalvl.select.streaming import assemble_shards, score_streamed

    rng = np.random.default_rng(0)
    clip = rng.normal(size=(103, 16)).astype(np.float32)
    scaled = rng.uniform(-1, 1, size=(103, 2)).astype(np.float32)
    whole = run_sharded(103, 25, tmp_path / "shards", "clip", lambda lo, hi: {"feature": clip[lo:hi]}, progress=False)
    mapped = assemble_shards(tmp_path / "shards", "feature", tmp_path / "clip.npy", 103)
    np.testing.assert_array_equal(mapped, whole["feature"])
    assert isinstance(mapped, np.memmap)
    torch.manual_seed(0)
    scorer = Scorer(feature_dim=16, score_names=("clipscore", "imagereward"))
    r_whole = score_all(scorer, np.concatenate([clip, scaled], axis=1), 7)
    np.testing.assert_allclose(score_streamed(scorer, mapped, scaled, 7, chunk=10), r_whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cover"):
        assemble_shards(tmp_path / "shards", "feature", tmp_path / "bad.npy", 104)


def test_fewer_points_than_clusters_take_k_of_half_the_subset_with_one_logged_line(caplog):
    """A subset smaller than 2K (a first try on a small set; K = 20 by default): K = |S|/2, said in one
    warning line, and spectral clustering runs (before: sklearn's TypeError and a k-means fallback with
    one sample per cluster)."""
    x = np.random.default_rng(5).normal(size=(5, 8)).astype(np.float32)
    with caplog.at_level("WARNING", logger="frugalvl.select.clustering"):
        out = subset_and_clusters(x, None, np.ones(5, bool), ClusterSettings(ratio=1.0))
    assert out["method"] == "spectral" and out["n_clusters"] == 2 and "2 clusters" in out["clusterer"]
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and "\n" not in lines[0] and "K = 2" in lines[0] and "5 samples" in lines[0]


def test_k_is_at_most_half_the_subset():
    from frugalvl.select.clustering import clusters_for

    assert [clusters_for(20, n) for n in (1, 2, 3, 5, 39, 40, 41, 1000)] == [1, 1, 1, 2, 19, 20, 20, 20]
    x, truth = _blobs(8, k=4, dim=16)  # 32 points, K = 20 asked: K = 16, spectral, no fallback
    out = subset_and_clusters(x, None, np.ones(len(x), bool), ClusterSettings(ratio=1.0, knn=10))
    assert out["method"] == "spectral" and 2 <= out["n_clusters"] <= 16
    assert np.bincount(out["labels"]).min() >= 1
