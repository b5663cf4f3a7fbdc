"""CoIDO's losses against hand-computed values (docs/methods/coido.md#what-one-step-does)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from frugalvl.select import losses as L


def test_weights_are_a_softmax_over_the_micro_batch():
    r = torch.tensor([0.0, math.log(3.0)])
    w = L.batch_weights(r)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.75]))
    assert float(L.batch_weights(torch.randn(7)).sum()) == pytest.approx(1.0)


def _two_samples():
    """Two samples, vocab 2, sequences of 3; sample 0 has 2 target tokens, sample 1 has 1."""
    logits = torch.zeros(2, 3, 2)
    logits[0, 0] = torch.tensor([math.log(3.0), 0.0])  # p(token 0) = 3/4
    logits[0, 1] = torch.tensor([0.0, 0.0])  # p = 1/2
    logits[1, 1] = torch.tensor([0.0, math.log(4.0)])  # p(token 1) = 4/5
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 1]])
    ce_expected = {(0, 0): -math.log(3 / 4), (0, 1): -math.log(1 / 2), (1, 1): -math.log(4 / 5)}
    return logits, labels, ce_expected


def test_token_cross_entropy_shifts_and_masks():
    logits, labels, expected = _two_samples()
    ce, mask = L.token_cross_entropy(logits, labels)
    assert mask.tolist() == [[True, True], [False, True]]
    for (i, t), value in expected.items():
        assert float(ce[i, t]) == pytest.approx(value, rel=1e-6)
    assert float(ce[1, 0]) == 0.0


def test_uniform_weights_give_the_standard_lm_loss_even_with_unequal_token_counts():
    logits, labels, expected = _two_samples()
    ce, mask = L.token_cross_entropy(logits, labels)
    l_i = L.importance_loss(ce, mask, L.batch_weights(torch.zeros(2)))
    hand = sum(expected.values()) / 3  # mean over the 3 target tokens
    assert float(l_i) == pytest.approx(hand, rel=1e-6)
    standard = F.cross_entropy(logits[:, :-1].reshape(-1, 2), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert float(l_i) == pytest.approx(float(standard), rel=1e-6)


def test_importance_loss_hand_case():
    logits, labels, expected = _two_samples()
    ce, mask = L.token_cross_entropy(logits, labels)
    w = torch.tensor([0.25, 0.75])
    hand = (2 * 0.25 * (expected[0, 0] + expected[0, 1]) + 2 * 0.75 * expected[1, 1]) / 3  # Σ B·w_i·CE / Σ m
    assert float(L.importance_loss(ce, mask, w)) == pytest.approx(hand, rel=1e-6)


def test_diversity_is_the_population_std_of_cluster_means():
    w = torch.tensor([0.1, 0.3, 0.2, 0.4])
    clusters = torch.tensor([0, 0, 1, -1])  # means 0.2, 0.2; the unlabelled sample is ignored
    assert float(L.diversity_loss(w, clusters)) == pytest.approx(math.sqrt(0 + 1e-8), rel=1e-4)  # ≈ 0
    clusters = torch.tensor([0, 1, 1, 2])
    means = torch.tensor([0.1, 0.25, 0.4])
    hand = math.sqrt(((means - means.mean()) ** 2).mean().item() + 1e-8)
    assert float(L.diversity_loss(w, clusters)) == pytest.approx(hand, rel=1e-5)
    assert hand == pytest.approx(math.sqrt(0.015), rel=1e-3)


def test_diversity_with_one_cluster_is_a_constant_without_gradient():
    r = torch.randn(4, requires_grad=True)
    w = L.batch_weights(r)
    for clusters in (torch.tensor([2, 2, 2, 2]), torch.tensor([2, -1, -1, 2])):
        l_d = L.diversity_loss(w, clusters)
        assert float(l_d) == pytest.approx(1e-6) and not l_d.requires_grad
    # two clusters: the scorer gets a gradient from L_D alone
    L.diversity_loss(w, torch.tensor([0, 0, 1, 1])).backward()
    assert r.grad is not None and float(r.grad.abs().sum()) > 0


def test_diversity_without_any_cluster_label_is_exactly_zero():
    """Official ``_compute_clustering_diversity_loss``: no labelled sample -> 0.0 (not the 1e-6 of one cluster)."""
    r = torch.randn(4, requires_grad=True)
    l_d = L.diversity_loss(L.batch_weights(r), torch.tensor([-1, -1, -1, -1]))
    assert float(l_d) == 0.0 and not l_d.requires_grad
    total = L.combine("coido", torch.tensor(2.0), l_d, torch.tensor(0.0), torch.tensor(0.0))
    assert float(total) == 2.0  # exact: 1e-6 would add 5e-7


def test_diversity_gradient_pushes_cluster_means_together():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0], requires_grad=True)
    L.diversity_loss(L.batch_weights(r), torch.tensor([0, 1, 1, 1])).backward()
    assert float(r.grad[0]) > 0  # descending lowers the over-weighted cluster


def test_total_loss_for_given_sigmas():
    l_i, l_d = torch.tensor(2.0), torch.tensor(0.3)
    s1, s2 = torch.tensor(0.5), torch.tensor(-0.2)
    sigma1, sigma2 = math.exp(0.5), math.exp(-0.2)
    hand = 2.0 / sigma1**2 + 0.3 / (2 * sigma2**2) + math.log(sigma1) + math.log(sigma2)
    assert float(L.uncertainty_total(l_i, l_d, s1, s2)) == pytest.approx(hand, rel=1e-6)
    assert float(L.combine("coido", l_i, l_d, torch.tensor(0.0), torch.tensor(0.0))) == pytest.approx(2.0 + 0.15)


def test_ablation_variants():
    l_i, l_d = torch.tensor(2.0), torch.tensor(0.3)
    assert float(L.combine("importance", l_i, l_d)) == pytest.approx(2.0)
    assert float(L.combine("importance+diversity", l_i, l_d)) == pytest.approx(2.3)
    assert float(L.combine("importance+diversity", l_i, l_d, lam=2.0)) == pytest.approx(2.6)
    assert float(L.combine("weighted", l_i, l_d)) == pytest.approx(0.5 * 2.0 + 0.5 * 0.3)
    assert float(L.combine("weighted", l_i, l_d, lam=0.1)) == pytest.approx(0.9 * 2.0 + 0.1 * 0.3)
    with pytest.raises(ValueError):
        L.combine("nonsense", l_i, l_d)


def test_coido_losses_gradients_reach_scorer_and_sigmas():
    logits, labels, _ = _two_samples()
    logits.requires_grad_(True)
    r = torch.zeros(2, requires_grad=True)
    s1, s2 = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    out = L.coido_losses(r, logits, labels, torch.tensor([0, 1]), "coido", s1, s2)
    out.total.backward()
    assert float(out.weights.detach().sum()) == pytest.approx(1.0)
    assert r.grad is not None and logits.grad is not None
    # d/ds1 (L_I e^{-2 s1} + s1) = 1 - 2 L_I at s1 = 0, and likewise 1 - L_D for s2
    assert float(s1.grad) == pytest.approx(1 - 2 * float(out.importance.detach()), rel=1e-5)
    assert float(s2.grad) == pytest.approx(1 - float(out.diversity.detach()), rel=1e-5)
