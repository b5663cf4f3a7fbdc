"""CoIDO's losses as plain functions of tensors (docs/methods/coido.md#what-one-step-does, HEAD `_get_weighted_loss`).

Notation, per per-device micro-batch of B samples:

* r       raw scorer outputs ``[B]``;
* w       ``softmax(r)`` over the micro-batch, Σw = 1 (:func:`batch_weights`);
* L_I     importance: Σ_{i,t} (B·w_i)·CE_{i,t}·m_{i,t} / Σ_{i,t} m_{i,t}, m = (label ≠ −100)
          (:func:`importance_loss`). The denominator is the token count of the whole micro-batch, as
          in HEAD, so uniform w (B·w_i = 1) gives exactly the standard token-mean LM loss, whatever the
          per-sample token counts;
* L_D     diversity: population std of the per-cluster mean w (:func:`diversity_loss`);
* s1, s2  log σ1, log σ2 (learned, 0 at init).

The variants (``TrainSettings.loss``), for the paper's ablations:

* ``coido``                 L_I·e^{−2 s1} + L_D·e^{−2 s2}/2 + s1 + s2, i.e. L_I/σ1² + L_D/(2σ2²)
                            + log σ1 + log σ2 (homoscedastic uncertainty weighting; the default);
* ``importance``            L_I alone (Self-Filter's loss; L_D and σ play no part);
* ``importance+diversity``  L_I + λ·L_D, λ = 1 unless ``lam`` is given (the "L_I + L_D" ablation);
* ``weighted``              (1 − λ)·L_I + λ·L_D, a fixed convex λ-weighting in place of the learned
                            uncertainty weights (λ = 0.5 unless ``lam`` is given).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .train_settings import LOSS_VARIANTS

IGNORE_INDEX = -100
DEFAULT_LAM = {"importance+diversity": 1.0, "weighted": 0.5}
NO_DIVERSITY = 1e-6  # L_D when exactly one cluster is in the micro-batch (a constant)
NO_CLUSTERS = 0.0  # L_D when no sample of the micro-batch has a cluster label (official: 0.0)
STD_EPS = 1e-8  # under the square root, as in HEAD
MAD_THRESHOLD = 1e-6


def batch_weights(r: torch.Tensor) -> torch.Tensor:
    """w = softmax(r) over the micro-batch, in float32 whatever the scorer's dtype."""
    return torch.softmax(r.float().reshape(-1), dim=0)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token CE ``[B, T-1]`` (0 where ignored) and the mask m ``[B, T-1]``.

    Logits at position t predict the label at t+1 (the causal shift). CE is computed in float32 with
    ``reduction='none'`` (#the-mllm).
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    mask = shift_labels != IGNORE_INDEX
    ce = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.masked_fill(~mask, 0), reduction="none")
    return ce * mask, mask


def importance_loss(ce: torch.Tensor, mask: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L_I = Σ_{i,t} (B·w_i)·CE_{i,t}·m_{i,t} / Σ_{i,t} m_{i,t} (token-normalised over the micro-batch)."""
    batch = ce.shape[0]
    per_sample_sum = (ce * mask).sum(dim=1)
    return (batch * w * per_sample_sum).sum() / mask.sum().clamp(min=1)


def cluster_means(w: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """Mean w of each cluster present in the micro-batch; samples labelled −1 (no cluster) are ignored."""
    keep = clusters >= 0
    labels, inverse = torch.unique(clusters[keep], return_inverse=True)
    sums = torch.zeros(len(labels), dtype=w.dtype, device=w.device).index_add(0, inverse, w[keep])
    counts = torch.bincount(inverse, minlength=len(labels)).to(w.dtype)
    return sums / counts


def diversity_loss(w: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """L_D: population std √(var + 1e-8) of the per-cluster mean w.

    No sample labelled: the constant 0.0; exactly one cluster present: the constant 1e-6; neither has a
    gradient (official ``_compute_clustering_diversity_loss``, #what-one-step-does). HEAD falls back to the mean
    absolute deviation when the std is below 1e-6; with the 1e-8 under the root that happens only
    when the variance underflows, but the rule is kept as specified.
    """
    means = cluster_means(w, clusters.to(w.device))
    if means.numel() == 0:
        return torch.tensor(NO_CLUSTERS, dtype=w.dtype, device=w.device)
    if means.numel() < 2:
        return torch.tensor(NO_DIVERSITY, dtype=w.dtype, device=w.device)
    centred = means - means.mean()
    std = torch.sqrt((centred**2).mean() + STD_EPS)
    if std < MAD_THRESHOLD:
        return centred.abs().mean()
    return std


def uncertainty_total(l_i: torch.Tensor, l_d: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """L = L_I·e^{−2 s1} + L_D·e^{−2 s2}/2 + s1 + s2 (s = log σ)."""
    return l_i * torch.exp(-2 * s1) + l_d * torch.exp(-2 * s2) / 2 + s1 + s2


class Losses(NamedTuple):
    total: torch.Tensor
    importance: torch.Tensor
    diversity: torch.Tensor
    weights: torch.Tensor


def resolve_lam(variant: str, lam: float | None) -> float | None:
    """λ in force for ``variant``: the given one, or the variant's default; None where λ has no role."""
    if variant not in LOSS_VARIANTS:
        raise ValueError(f"unknown loss variant {variant!r}; choose from {', '.join(LOSS_VARIANTS)}")
    if variant not in DEFAULT_LAM:
        return None
    return DEFAULT_LAM[variant] if lam is None else float(lam)


def combine(
    variant: str,
    l_i: torch.Tensor,
    l_d: torch.Tensor,
    s1: torch.Tensor | None = None,
    s2: torch.Tensor | None = None,
    lam: float | None = None,
) -> torch.Tensor:
    """The training objective of ``variant`` (module docstring) from L_I, L_D and, for coido, s1/s2."""
    lam = resolve_lam(variant, lam)
    if variant == "coido":
        return uncertainty_total(l_i, l_d, s1, s2)
    if variant == "importance":
        return l_i
    assert lam is not None  # resolve_lam gives one for the two λ variants
    if variant == "importance+diversity":
        return l_i + lam * l_d
    return (1 - lam) * l_i + lam * l_d


def coido_losses(
    r: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    clusters: torch.Tensor,
    variant: str = "coido",
    s1: torch.Tensor | None = None,
    s2: torch.Tensor | None = None,
    lam: float | None = None,
) -> Losses:
    """Everything for one micro-batch: w, L_I, L_D and the objective of ``variant``."""
    w = batch_weights(r)
    ce, mask = token_cross_entropy(logits, labels)
    l_i = importance_loss(ce, mask, w)
    l_d = diversity_loss(w, clusters)
    return Losses(combine(variant, l_i, l_d, s1, s2, lam), l_i, l_d, w)
