"""Sliding-window planning and overlap averaging, shared by every segmenter.

The grid is mmseg's ``slide_inference`` grid, which both official codes use
(docs/methods/segearth_ov.md#sliding-windows): ``max(H - crop + stride - 1, 0) // stride + 1``
windows per axis, the last one shifted back to end at the border, a side shorter than the crop
taken whole. Logits of overlapping windows are summed and divided by the coverage count.

Adding each window into its slice gives bit-identical sums to the official "pad every window to
full size and add" (adding zeros is exact), at a fraction of the memory traffic.

Accumulators: :class:`WindowAccumulator` takes every channel of a window at once. The three
window sinks take a window's channels in groups (a segmenter that scores prompts in chunks):
:class:`ChannelAverage` keeps every channel at full size, as the official accumulators;
:class:`GroupMax` writes a running max per group of channels (exact when no pixel is covered
twice); :class:`BandAverage` averages per channel and reduces to groups one band of rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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

    def result(self, fill: float | None = None) -> torch.Tensor:
        """The averaged ``[C, H, W]`` map. Every pixel must have been covered, unless ``fill`` is given:
        pixels no window covered (windows skipped as unneeded, :func:`needed_windows`) then hold ``fill``."""
        uncovered = self.count == 0
        if fill is None:
            if bool(uncovered.any()):
                raise RuntimeError("some pixels are covered by no window")
            return self.total / self.count
        return torch.where(uncovered, fill, self.total / self.count.clamp(min=1))


def pixels_read_by_resize(wanted: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Which pixels of a ``size`` map a bilinear resize (``align_corners=False``) to ``wanted``'s shape
    reads to compute the pixels where ``wanted`` (``[H, W]`` bool) is true: ``[h, w]`` bool.

    The resize is linear with non-negative weights, so its adjoint applied to ``wanted`` is positive
    exactly on the pixels read with a non-zero weight; autograd gives the adjoint of the very
    operation the segmenters run, however PyTorch places the samples.
    """
    source = torch.zeros(1, 1, *size, requires_grad=True)
    with torch.enable_grad():
        out = torch.nn.functional.interpolate(source, size=tuple(wanted.shape), mode="bilinear", align_corners=False)
        (read,) = torch.autograd.grad(out, source, wanted.to(out.dtype)[None, None])
    return read[0, 0] > 0


def needed_windows(windows: Sequence[Window], needed: torch.Tensor) -> list[Window]:
    """The windows holding at least one needed pixel (``needed``: ``[H, W]`` bool). Averaging over
    overlaps only mixes windows that share a pixel, so every needed pixel keeps all its windows, added
    in the plan's order: its average is the full plan's; the windows left out touch no needed pixel."""
    return [w for w in windows if bool(needed[w.y0 : w.y1, w.x0 : w.x1].any())]


def overlapping(windows: Sequence[Window], height: int, width: int) -> bool:
    """Whether any pixel is covered twice (the windows always cover the image)."""
    return sum(w.height * w.width for w in windows) > height * width


class WindowSink(Protocol):
    """Where per-window maps go when a window's channels arrive in groups.

    ``begin_window(w)`` comes once per window, after every ``add`` of the windows before it;
    ``add(w, channels, values)`` adds ``values`` ``[k, h, w]`` for the ``k`` channel indices ``channels``.
    """

    def begin_window(self, w: Window) -> None: ...

    def add(self, w: Window, channels: torch.Tensor, values: torch.Tensor) -> None: ...

    def result(self) -> torch.Tensor: ...


class ChannelAverage:
    """Per-channel ``[Q, H, W]`` sums and coverage counts, averaged at the end: the official accumulators.

    Adding a window's values into its slice in window order gives the same sums, bit for bit, as
    adding the padded full-size maps (adding zeros is exact).
    """

    def __init__(self, n_channels: int, height: int, width: int, device: torch.device) -> None:
        self.total = torch.zeros(n_channels, height, width, device=device)
        self.count = torch.zeros(1, height, width, device=device)

    def begin_window(self, w: Window) -> None:
        self.count[:, w.y0 : w.y1, w.x0 : w.x1] += 1

    def add(self, w: Window, channels: torch.Tensor, values: torch.Tensor) -> None:
        device = self.total.device  # image-sized buffers may live in host memory, away from the values
        self.total[channels.to(device), w.y0 : w.y1, w.x0 : w.x1] += values.to(device)

    def result(self) -> torch.Tensor:
        if bool((self.count == 0).any()):
            raise RuntimeError("some pixels are covered by no view")
        return self.total / self.count


class GroupMax:
    """Group maps ``[C, H, W]`` written directly as a running max over each group's channels.

    ``groups[q]`` is the group of channel ``q``. Exact where every pixel is covered by one window (the
    whole image, or windows that do not overlap): the average over one window is the window's value
    itself (x / 1 = x), and the max does not depend on the order in which channels arrive. Values are
    ≥ 0, so starting from 0 changes nothing. No ``[Q, H, W]`` map is ever held at full size.
    """

    def __init__(self, groups: torch.Tensor, height: int, width: int, device: torch.device) -> None:
        self.groups = groups.to(device)
        self.out = torch.zeros(int(groups.max()) + 1, height, width, device=device)

    def begin_window(self, w: Window) -> None:
        pass

    def add(self, w: Window, channels: torch.Tensor, values: torch.Tensor) -> None:
        groups = self.groups[channels.to(self.groups.device)]
        values = values.to(self.out.device)
        for c in torch.unique(groups).tolist():
            region = self.out[c, w.y0 : w.y1, w.x0 : w.x1]
            self.out[c, w.y0 : w.y1, w.x0 : w.x1] = torch.maximum(region, values[groups == c].amax(0))

    def result(self) -> torch.Tensor:
        return self.out


class BandAverage:
    """Overlapping windows: per-channel averaging, then ``merge`` to groups, one band of rows at a time.

    ``merge(averages [Q, n, W], groups)`` gives ``[C, n, W]``. Where it does not commute with the
    mean (a max over synonyms does not), per-channel sums are needed where windows overlap. Windows
    arrive row of windows by row of windows, with non-decreasing tops, so the rows above the current
    window's top are final: they are averaged, merged into ``[C, H, W]`` and dropped. Per-channel
    buffers thus span at most one window's height (``Q × crop × W``), not the image (``Q × H × W``).
    Sums run in the same order as in :class:`ChannelAverage`, so the results are the same bits.
    """

    def __init__(
        self,
        groups: torch.Tensor,
        height: int,
        width: int,
        device: torch.device,
        merge: Callable[[torch.Tensor, Sequence[int]], torch.Tensor],
    ) -> None:
        self.groups = groups.tolist()
        self.merge = merge
        self.out = torch.zeros(max(self.groups) + 1, height, width, device=device)
        self.top = 0  # first row held in the band
        self.total = torch.zeros(len(self.groups), 0, width, device=device)
        self.count = torch.zeros(1, 0, width, device=device)

    def _flush(self, row: int) -> None:
        """Average, merge and write out the band's rows above ``row``."""
        n = row - self.top
        if n <= 0:
            return
        count = self.count[:, :n]
        if bool((count == 0).any()):
            raise RuntimeError("some pixels are covered by no view")
        self.out[:, self.top : row] = self.merge(self.total[:, :n] / count, self.groups)
        self.total, self.count, self.top = self.total[:, n:], self.count[:, n:], row

    def begin_window(self, w: Window) -> None:
        if w.y0 < self.top:
            raise RuntimeError("views must come with non-decreasing tops")
        self._flush(w.y0)
        missing = w.y1 - (self.top + self.total.shape[1])
        if missing > 0:
            self.total = torch.cat(
                [self.total, self.total.new_zeros(self.total.shape[0], missing, self.total.shape[2])], 1
            )
            self.count = torch.cat([self.count, self.count.new_zeros(1, missing, self.count.shape[2])], 1)
        self.count[:, w.y0 - self.top : w.y1 - self.top, w.x0 : w.x1] += 1

    def add(self, w: Window, channels: torch.Tensor, values: torch.Tensor) -> None:
        device = self.total.device
        self.total[channels.to(device), w.y0 - self.top : w.y1 - self.top, w.x0 : w.x1] += values.to(device)

    def result(self) -> torch.Tensor:
        self._flush(self.top + self.total.shape[1])
        return self.out
