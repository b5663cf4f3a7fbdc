"""The learned downsampler of SimFeatUp's low-resolution path (docs/methods/simfeatup.md#low-resolution-path, FeatUp's
``AttentionDownsampler``): it maps jittered high-resolution features back to the patch grid, where
they are compared with the CLIP features of the jittered image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Per-channel Gaussian blur with reflect borders (separable, normalised kernel)."""
    t = torch.arange(size, device=x.device, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-t.square() / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, [size // 2] * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


class AttentionDownsampler(nn.Module):
    """Learned downsampler: each ``p×p`` patch of (blurred) features becomes a weighted mean.

    The weight of a pixel is softmax over the patch of ``w·logit + b``, with ``logit`` a linear
    read-out of its feature (input dropout 0.2) and ``w``, ``b`` learned per position in the patch.
    During training a random 20% of patches get all their logits zeroed (their weights fall back to
    ``softmax(b)``), as officially, so the model cannot rely on content attention alone.
    """

    def __init__(
        self, dim: int, patch_size: int = 16, blur_size: int = 5, blur_sigma: float = 1.0, drop_patches: float = 0.2
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.blur = (blur_size, blur_sigma)
        self.drop_patches = drop_patches
        self.attention_net = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, 1))
        p = patch_size
        self.w = nn.Parameter(torch.ones(p, p) + 0.01 * torch.randn(p, p))
        self.b = nn.Parameter(0.01 * torch.randn(p, p))

    def patches(self, feats: torch.Tensor) -> torch.Tensor:
        """Blurred features cut into non-overlapping patches: ``[B, gh, gw, p², C]``."""
        b, c, h, w = feats.shape
        p = self.patch_size
        x = gaussian_blur(feats, *self.blur)
        x = x.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h // p, w // p, p * p, c)

    def weights(self, patches: torch.Tensor) -> torch.Tensor:
        """Per-patch softmax weights ``[B, gh, gw, p²]`` (each patch sums to 1)."""
        logits = self.attention_net(patches).squeeze(-1)
        if self.training and self.drop_patches > 0:
            keep = torch.rand(logits.shape[:-1] + (1,), device=logits.device) >= self.drop_patches
            logits = logits * keep
        logits = logits * self.w.flatten().to(logits.dtype) + self.b.flatten().to(logits.dtype)
        return F.softmax(logits, dim=-1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, C, H/p, W/p]``."""
        patches = self.patches(feats)
        return torch.einsum("bhwpc,bhwp->bchw", patches, self.weights(patches).to(patches.dtype))
