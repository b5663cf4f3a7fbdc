"""SimFeatUp's two loss terms and the small modules that exist only for them (docs/methods/simfeatup.md#losses).

* ``L_rec``: the downsampled high-resolution features must match the CLIP features of the same
  jittered view, under a Gaussian likelihood whose scale a :class:`ScaleNet` predicts; both sides
  first go through one random Gaussian projection (:func:`random_projection`, :func:`project`).
* ``L_img``: a small decoder (:class:`ImageReconstructor`, the "CRN") must rebuild the jittered
  image from the jittered high-resolution features, weighted by γ = 0.1.
"""

from __future__ import annotations

import torch
from torch import nn


def reconstruction_loss(down: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``L_rec = mean(‖down − target‖² / (2s²) + log s)``: a Gaussian likelihood whose scale ``s``
    is predicted, so hard-to-reconstruct places (``s`` large) weigh less but pay ``log s``."""
    mse = (down.float() - target.float()).square()
    return (mse / (2 * scales.square()) + scales.log()).mean()


def image_loss(reconstructed: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``L_img``: mean squared error between the decoded and the (jittered, normalised) image."""
    return (reconstructed.float() - image.float()).square().mean()


def random_projection(gen: torch.Generator, batch: int, dim: int, out_dim: int | None) -> torch.Tensor | None:
    """One Gaussian ``dim → out_dim`` matrix per image, columns unit-norm (Johnson–Lindenstrauss):
    comparing 30 random directions per step is cheap and, over steps, covers all channels."""
    if out_dim is None:
        return None
    proj = torch.randn(batch, dim, out_dim, generator=gen)
    return proj / proj.norm(dim=1, keepdim=True)


def project(feats: torch.Tensor, proj: torch.Tensor | None) -> torch.Tensor:
    """``[B, C, H, W]`` features through per-image projections ``[B, C, K]`` (None: unchanged)."""
    return feats if proj is None else torch.einsum("bchw,bck->bkhw", feats, proj.to(feats.dtype))


class ScaleNet(nn.Module):
    """Predicted per-location uncertainty ``s = exp(Conv1×1(lr) + 0.1) ≥ 1e-4`` for ``L_rec``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Conv2d(dim, 1, 1)
        with torch.no_grad():  # small start: s ≈ e^0.1 everywhere
            for p in self.net.parameters():  # weight and bias
                p.mul_(0.1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net(feats).float() + 0.1).clamp_min(1e-4)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ImageReconstructor(nn.Sequential):
    """The "CRN": rebuild the normalised RGB image from high-resolution features (``L_img``).

    It keeps the upsampled features tied to image content; the decoder itself is thrown away.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Conv2d(dim, dim, 1), LayerNorm2d(dim), nn.GELU(), nn.Conv2d(dim, 3, 1), nn.Tanh())
