"""Sliding-window planning and overlap averaging, shared by every segmenter.

The grid is mmseg's ``slide_inference`` grid, which both official codes use
(docs/methods/segearth_ov.md#sliding-windows): ``max(H - crop + stride - 1, 0) // stride + 1``
windows per axis, the last one shifted back to end at the border, a side shorter than the crop
taken whole. Logits of overlapping windows are summed and divided by the coverage count.

Adding each window into its slice gives bit-identical sums to the official "pad every window to
full size and add" (adding zeros is exact), at a fraction of the memory traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """A window ``[y0:y1, x0:x1]`` of an image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the windows along one axis (mmseg's grid, the last one ending at the border)."""
    return _starts(size, crop, stride)


def core_spans(spans_: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Split an axis among overlapping spans: each pixel goes to the span whose centre is nearest.

    The cut between consecutive spans is the middle of their overlap, so every kept pixel is at least
    half an overlap away from its span's border (except at the image border). Used by the tiled
    scene path (:mod:`frugalvl.segment.scene`).
    """
    cuts = [(spans_[i + 1][0] + spans_[i][1]) // 2 for i in range(len(spans_) - 1)]
    bounds = [0, *cuts, size]
    return [(bounds[i], bounds[i + 1]) for i in range(len(spans_))]


def _starts(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    n = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(n):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def plan_windows(height: int, width: int, crop: int | tuple[int, int], stride: int | tuple[int, int]) -> list[Window]:
    """Windows covering an image, row by row, in the official order."""
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if min(ch, cw, sh, sw) <= 0:
        raise ValueError("crop and stride must be positive")
    return [Window(y0, y1, x0, x1) for (y0, y1) in _starts(height, ch, sh) for (x0, x1) in _starts(width, cw, sw)]


class WindowAccumulator:
    """Sums per-window maps into an image-sized buffer and averages by coverage."""

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.total = torch.zeros(channels, height, width, device=device, dtype=dtype)
        self.count = torch.zeros(1, height, width, device=device, dtype=dtype)

    def add(self, window: Window, values: torch.Tensor) -> None:
        """Add a ``[C, h, w]`` map for ``window``."""
        self.total[:, window.y0 : window.y1, window.x0 : window.x1] += values.to(self.total.dtype)
        self.count[:, window.y0 : window.y1, window.x0 : window.x1] += 1

    def result(self) -> torch.Tensor:
        """The averaged ``[C, H, W]`` map; every pixel must have been covered."""
        if bool((self.count == 0).any()):
            raise RuntimeError("some pixels are covered by no window")
        return self.total / self.count
