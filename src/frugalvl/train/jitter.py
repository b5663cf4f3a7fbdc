"""Random views of a batch for SimFeatUp (docs/methods/simfeatup.md#jitter): reflect-pad 20, zoom in [1, 2]
with probability 0.5, crop back to the input size, flip horizontally with probability 0.5. The same
view is applied to the image and to its high-resolution features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .settings import UpsamplerTrainSettings


@dataclass(frozen=True)
class Jitter:
    """One random view: reflect-pad, zoom, crop back to the input size at (top, left), flip."""

    flip: bool
    zoom: float
    top: int
    left: int


def sample_jitter(gen: torch.Generator, s: UpsamplerTrainSettings, h: int, w: int) -> Jitter:
    """A random view of an ``h×w`` input, drawn from ``gen`` (3 uniforms, then the crop corner)."""
    u = torch.rand(3, generator=gen).tolist()
    zoom = 1.0 + u[2] * (s.max_zoom - 1.0) if u[1] < s.zoom_prob else 1.0
    span_h = int((h + 2 * s.jitter_pad) * zoom) - h
    span_w = int((w + 2 * s.jitter_pad) * zoom) - w
    top = int(torch.randint(0, span_h + 1, (), generator=gen))
    left = int(torch.randint(0, span_w + 1, (), generator=gen))
    return Jitter(flip=u[0] < s.flip_prob, zoom=zoom, top=top, left=left)


def apply_jitter(x: torch.Tensor, jitter: Jitter, pad: int) -> torch.Tensor:
    """The same geometric view of an image or of a feature map at image resolution."""
    h, w = x.shape[-2:]
    if pad:
        x = F.pad(x, [pad] * 4, mode="reflect")
    if jitter.zoom > 1.0:
        size = (int(x.shape[-2] * jitter.zoom), int(x.shape[-1] * jitter.zoom))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x[..., jitter.top : jitter.top + h, jitter.left : jitter.left + w]
    return x.flip(-1) if jitter.flip else x
