"""Baselines under CoIDO's budget (docs/methods/coido_baselines.md#baselines): hand-computed cases and pick's
contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from frugalvl.select.baselines import REGISTRY, make_settings, run_baseline
from frugalvl.select.baselines.coincide_lite import cluster_budgets, mmd_prototypes, transferability
from frugalvl.select.baselines.d2_pruning import d2_select
from frugalvl.select.baselines.geometry import penalised_greedy, spherical_kmeans
from frugalvl.select.baselines.loss_band import band_pick
from frugalvl.select.baselines.self_filter import SelfFilterSettings, fit_linear, nn_filter
from frugalvl.select.baselines.semdedup import earlier_max_similarity
from frugalvl.select.ranking import PickSettings, group_quotas
from frugalvl.testing.coido_scale import write_synthetic_work

SOURCES = ["coco"] * 24 + ["gqa"] * 12 + ["vg"] * 6


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def work(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.normal(size=(len(SOURCES), 16)).astype(np.float32)
    return write_synthetic_work(tmp_path / "work", clip, SOURCES, seed=1)


def _outputs_agree(work, name, out, report):
    ids = np.load(work / f"baseline-{name}" / "selected_ids.npy")
    txt = (work / f"baseline-{name}" / "selected_ids.txt").read_text().split()
    records = json.loads(out.read_text())
    samples = json.loads((work / "prepare" / "samples.json").read_text())
    assert ids.dtype == np.int64 and len(ids) == len(set(ids.tolist())) == report["n_selected"]
    assert txt == [samples[i]["id"] for i in ids] == [r["id"] for r in records]
    assert json.loads((work / f"baseline-{name}" / "report.json").read_text())["n_selected"] == len(ids)
    return ids


# ---------------------------------------------------------------- pick's contract, every cheap baseline


@pytest.mark.parametrize("name", ["random", "clip-score", "semdedup", "d2-pruning", "coincide-lite"])
def test_quotas_and_outputs_match_pick(work, tmp_path, name):
    out = tmp_path / f"{name}.json"
    report = run_baseline(name, work, out, PickSettings(count=10))
    ids = _outputs_agree(work, name, out, report)
    quotas = group_quotas({"coco": 24, "gqa": 12, "vg": 6}, 10)  # pick's own rule
    assert report["quotas"] == quotas
    got = {s: int(sum(SOURCES[i] == s for i in ids)) for s in quotas}
    assert got == quotas and sum(got.values()) == 10


@pytest.mark.parametrize("name", ["random", "semdedup", "coincide-lite"])
def test_global_mode_takes_exactly_k(work, tmp_path, name):
    report = run_baseline(name, work, tmp_path / "g.json", PickSettings(count=7, mode="global"))
    assert report["n_selected"] == 7 and report["quotas"] == {}


def test_random_is_seeded_and_reproducible(work, tmp_path):
    a = run_baseline("random", work, tmp_path / "a.json", PickSettings(count=10), make_settings("random", {"seed": 3}))
    ids_a = np.load(work / "baseline-random" / "selected_ids.npy")
    run_baseline("random", work, tmp_path / "b.json", PickSettings(count=10), make_settings("random", {"seed": 3}))
    np.testing.assert_array_equal(ids_a, np.load(work / "baseline-random" / "selected_ids.npy"))
    run_baseline("random", work, tmp_path / "c.json", PickSettings(count=10), make_settings("random", {"seed": 4}))
    assert set(ids_a.tolist()) != set(np.load(work / "baseline-random" / "selected_ids.npy").tolist())
    assert a["options"] == {"seed": 3}


def test_clip_score_keeps_the_highest_global(tmp_path):
    rng = np.random.default_rng(2)
    scores = rng.uniform(-1, 1, size=(20, 1))
    work = write_synthetic_work(tmp_path / "w", rng.normal(size=(20, 8)), ["a"] * 20, scores, ("clipscore",))
    run_baseline("clip-score", work, tmp_path / "o.json", PickSettings(count=5, mode="global"))
    ids = np.load(work / "baseline-clip-score" / "selected_ids.npy")
    np.testing.assert_array_equal(ids, np.argsort(-scores[:, 0])[:5])  # highest first, in order


# ---------------------------------------------------------------- semdedup


def test_earlier_max_similarity_hand_case():
    x = _unit(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    m = earlier_max_similarity(x, block=1)
    assert m[0] == -np.inf
    assert m[1] == pytest.approx(math.cos(math.pi / 4)) and m[2] == pytest.approx(math.cos(math.pi / 4))


def test_semdedup_keeps_exactly_one_per_planted_duplicate_group(tmp_path):
    rng = np.random.default_rng(5)
    base = _unit(rng.normal(size=(8, 32)))
    groups = np.repeat(np.arange(8), [3, 1, 2, 4, 1, 3, 2, 1])  # 17 samples, 8 groups
    clip = base[groups] + rng.normal(size=(len(groups), 32)) * 1e-3
    work = write_synthetic_work(tmp_path / "w", clip, ["a"] * len(groups))
    report = run_baseline(
        "semdedup",
        work,
        tmp_path / "o.json",
        PickSettings(count=8, mode="global"),
        make_settings("semdedup", {"clusters": 3}),
    )
    ids = np.load(work / "baseline-semdedup" / "selected_ids.npy")
    assert sorted(groups[ids].tolist()) == list(range(8))  # one per group, none dropped
    assert 0 < report["epsilon"] < 1  # ε solved for the budget


# ---------------------------------------------------------------- d2-pruning


def test_penalised_greedy_hand_case():
    score = np.array([1.0, 0.9, 0.5])
    nbr = np.array([[1], [0], [0]])
    weight = np.array([[0.5], [0.5], [0.5]])
    np.testing.assert_array_equal(penalised_greedy(score, nbr, weight, 2), [0, 2])  # 0.9 − 0.5·1 = 0.4 < 0.5
    np.testing.assert_array_equal(penalised_greedy(score, nbr, np.zeros((3, 1)), 2), [0, 1])


def test_d2_on_a_toy_graph_by_hand():
    """Unit vectors at 0°, 10°, 90°, k = 1: neighbours 0↔1, 2→1; difficulty [1, 0.8, 0]."""
    ang = np.radians([0.0, 10.0, 90.0])
    x = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    d01, d21 = 2 - 2 * math.cos(math.radians(10)), 2 - 2 * math.cos(math.radians(80))
    s = [1 + math.exp(-0.4 * d01) * 0.8, 0.8 + math.exp(-0.4 * d01) * 1.0, math.exp(-0.4 * d21) * 0.8]  # forward
    assert s[0] > s[1] > s[2]
    after = s[1] - math.exp(-0.4 * d01) * s[0]  # reverse pass from 0
    assert after < s[2]  # so 2 is next, not 1
    np.testing.assert_array_equal(d2_select(x, np.array([1.0, 0.8, 0.0]), 2, k=1, gamma=0.4), [0, 2])
    np.testing.assert_array_equal(d2_select(x, np.array([1.0, 0.8, 0.0]), 2, k=1, gamma=50.0), [0, 1])


def test_d2_difficulty_r_needs_the_score_stage(work, tmp_path):
    from frugalvl.errors import UserError

    with pytest.raises(UserError, match="select score"):
        run_baseline(
            "d2-pruning",
            work,
            tmp_path / "o.json",
            PickSettings(count=5),
            make_settings("d2-pruning", {"difficulty": "r"}),
        )
    (work / "score").mkdir()
    np.save(work / "score" / "r.npy", np.arange(len(SOURCES), dtype=np.float32))
    report = run_baseline(
        "d2-pruning",
        work,
        tmp_path / "o.json",
        PickSettings(count=5, mode="global"),
        make_settings("d2-pruning", {"difficulty": "r", "gamma": 1e9}),
    )  # no messages
    ids = np.load(work / "baseline-d2-pruning" / "selected_ids.npy")
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4])  # lowest r = hardest, in order
    assert report["difficulty"] == "r"


# ---------------------------------------------------------------- self-filter


def test_nn_filter_penalises_the_nearest_neighbour():
    x = _unit(np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]]))
    np.testing.assert_array_equal(nn_filter(x, np.array([1.0, 0.9, 0.3]), 2, k=1, gamma=1.0), [0, 2])


def test_linear_l_i_fit_ranks_low_loss_samples_high():
    ce = np.arange(8, dtype=np.float64)
    w = fit_linear(np.eye(8, dtype=np.float32), ce, SelfFilterSettings(epochs=30, lr=0.05, batch=8))
    assert w[:4].min() > w[4:].max() and w[0] == w.max()  # low CE -> high r, so low r = hard


def test_self_filter_with_a_given_scorer(work, tmp_path):
    import torch

    from frugalvl.select.ranking import score_all
    from frugalvl.select.scorer import Scorer, save_scorer

    torch.manual_seed(0)
    scorer = Scorer(feature_dim=16, score_names=("clipscore", "imagereward", "text_quality"))
    save_scorer(tmp_path / "scorer.pt", scorer, {"settings": {"loss": "importance"}})
    report = run_baseline(
        "self-filter",
        work,
        tmp_path / "o.json",
        PickSettings(count=4, mode="global"),
        make_settings("self-filter", {"scorer": str(tmp_path / "scorer.pt"), "gamma": 1e-9}),
    )
    clip = np.load(work / "features" / "clip.npy")
    scaled = json.loads((work / "features" / "scores.json").read_text())["scaled"]
    x = np.concatenate([clip, np.stack([scaled[n] for n in ("clipscore", "imagereward", "text_quality")], 1)], 1)
    r = score_all(scorer, x.astype(np.float32))
    ids = np.load(work / "baseline-self-filter" / "selected_ids.npy")
    np.testing.assert_array_equal(np.sort(ids), np.sort(np.argsort(r)[:4]))  # γ ≈ 0: the 4 lowest r
    assert report["scorer_loss"] == "importance"


# ---------------------------------------------------------------- el2n / perplexity


def test_band_pick_hand_case():
    v = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert sorted(band_pick(v, 2, "top").tolist()) == [0, 2]
    assert sorted(band_pick(v, 2, "bottom").tolist()) == [1, 3]
    assert sorted(band_pick(v, 3, "middle").tolist()) == [2, 3, 4]


def test_reference_losses_match_transformers_and_bands(tmp_path):
    import torch

    from frugalvl.models.llava import load_llava
    from frugalvl.select.baselines.reference import compute_stats
    from frugalvl.select.batching import load_pixels
    from frugalvl.select.prompting import tokenize_sample
    from frugalvl.testing.llava import build_tiny_llava

    model_dir = build_tiny_llava(tmp_path / "llava")
    rng = np.random.default_rng(0)
    text_only = np.array([i % 3 == 0 for i in range(9)])
    work = write_synthetic_work(tmp_path / "w", rng.normal(size=(9, 8)), ["a"] * 9, text_only=text_only, images=True)
    ppl = run_baseline(
        "perplexity",
        work,
        tmp_path / "p.json",
        PickSettings(count=3, mode="global"),
        make_settings("perplexity", {"reference": str(model_dir)}),
    )
    el2n = run_baseline(
        "el2n",
        work,
        tmp_path / "e.json",
        PickSettings(count=3, mode="global"),
        make_settings("el2n", {"reference": str(model_dir), "band": "bottom"}),
    )
    assert ppl["band"] == "middle" and el2n["band"] == "bottom"
    assert len(list((work / "reference").iterdir())) == 1  # one cache, shared
    values = np.load(work / "baseline-perplexity" / "score.npy").astype(np.float64)
    ids = np.load(work / "baseline-perplexity" / "selected_ids.npy")
    order = np.argsort(values)
    assert sorted(ids.tolist()) == sorted(order[3:6].tolist())  # the middle three of nine
    e = np.load(work / "baseline-el2n" / "score.npy")
    assert sorted(np.load(work / "baseline-el2n" / "selected_ids.npy").tolist()) == sorted(np.argsort(e)[:3].tolist())
    assert np.all((e > 0) & (e < math.sqrt(2)))  # ‖p − onehot‖₂ bounds
    # independent check: transformers' own LM loss of one image sample = log perplexity
    llava = load_llava(str(model_dir))
    samples = json.loads((work / "prepare" / "samples.json").read_text())
    s = samples[1]
    ids_, labels = tokenize_sample(llava.tokenizer, s["conversations"], "<image>" * llava.image_seq_length, 2048)
    with torch.no_grad():
        loss = llava.model(
            input_ids=torch.tensor([ids_]),
            labels=torch.tensor([labels]),
            pixel_values=load_pixels(s["image_path"], llava.image_processor, "pad")[None],
        ).loss
    assert math.log(values[1]) == pytest.approx(float(loss), rel=1e-4)
    assert compute_stats(llava, [s])["ce"][0] == pytest.approx(float(loss), rel=1e-4)


# ---------------------------------------------------------------- coincide-lite and k-means


def test_cluster_budgets_hand_case():
    np.testing.assert_array_equal(cluster_budgets(np.array([0.9, 0.1]), np.array([2, 10]), 6), [2, 4])
    b = cluster_budgets(np.array([0.2, 0.3, 0.5]), np.array([5, 5, 5]), 10)
    assert b.sum() == 10 and (b <= 5).all() and b[2] >= b[1] >= b[0]


def test_mmd_prototypes_cover_both_groups():
    """Three copies at A and three at B (kernel 0.135 between): J({a, a'}) = 0.135 < J({a, b}) = 0.568."""
    x = _unit(np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3))
    two = mmd_prototypes(x, 2, sigma=1.0)
    assert sorted(t // 3 for t in two.tolist()) == [0, 1]
    x = _unit(np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]]))
    assert mmd_prototypes(x, 1, sigma=1.0)[0] < 4  # one prototype: the dense side


def test_transferability_excludes_near_duplicate_centroids():
    c = _unit(np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]))
    t = transferability(c, 0.9)
    assert t[0] == pytest.approx(c[0] @ c[2]) and t[2] == pytest.approx((c[2] @ c[0] + c[2] @ c[1]) / 2)


def test_spherical_kmeans_separates_directions():
    rng = np.random.default_rng(1)
    centres = _unit(rng.normal(size=(3, 10)))
    truth = np.repeat(np.arange(3), 20)
    x = _unit(centres[truth] + rng.normal(size=(60, 10)) * 0.05).astype(np.float32)
    labels, _ = spherical_kmeans(x, 3, seed=0)
    assert len({(a, b) for a, b in zip(labels, truth)}) == 3


def test_registry_names_the_cli_choices():
    from frugalvl.cli import build_parser

    parser = build_parser(["select"])
    for name in REGISTRY:
        assert parser.parse_args(["select", "baseline", name, "-w", "w", "-o", "o.json"]).name == name
    with pytest.raises(SystemExit):
        parser.parse_args(["select", "baseline", "nope", "-w", "w", "-o", "o.json"])
