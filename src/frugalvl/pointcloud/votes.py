"""Per-point class votes: a compact array, class weights, score-weighted votes and a depth-buffer visibility test.

Hard votes follow the official code: per point one ``uint16`` count per class, +1 from every photo for
the class of the point's pixel; the prediction is the argmax of counts × class weights (the lower class
on ties) and -1 for a point no photo saw. Score votes add the pixel's class scores instead (float32).
The depth buffer is an option the official code lacks (docs/methods/segearth_ov3_3d.md#visibility).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .projection import Projection


class Votes:
    """``count`` (uint16 counts) or ``score`` (float32 sums) votes of ``n_points`` points over ``n_classes``."""

    def __init__(self, n_points: int, n_classes: int, mode: str = "count", n_photos: int = 1):
        self.n_classes = n_classes
        self.mode = mode
        dtype = np.float32 if mode == "score" else (np.uint16 if n_photos <= np.iinfo(np.uint16).max else np.uint32)
        self.sums = np.zeros((n_points, n_classes), dtype=dtype)
        self.seen = np.zeros(n_points, dtype=bool)  # any vote at all (scores may all be 0)

    def add_labels(self, points: np.ndarray, labels: np.ndarray) -> None:
        """One vote per point (each point at most once per photo) for ``labels`` (clipped to the last class)."""
        labels = np.minimum(labels.astype(np.int64), self.n_classes - 1)
        flat = self.sums.reshape(-1)
        flat[points * self.n_classes + labels] += 1
        self.seen[points] = True

    def add_scores(self, points: np.ndarray, scores: np.ndarray) -> None:
        """``scores`` ``[k, C]`` added to the points' sums (each point at most once per photo)."""
        self.sums[points] += scores.astype(np.float32, copy=False)
        self.seen[points] = True

    def predict(self, weights: Sequence[float] | None = None, chunk: int = 2_000_000) -> np.ndarray:
        """int16 labels: argmax of votes × weights (lowest class on ties), -1 where no photo voted."""
        w = np.ones(self.n_classes) if weights is None else np.asarray(weights, dtype=np.float64)
        out = np.empty(len(self.sums), dtype=np.int16)
        for start in range(0, len(out), chunk):
            part = self.sums[start : start + chunk]
            weighted = part * w.astype(np.float32 if self.mode == "score" else np.float64)
            labels = weighted.argmax(1).astype(np.int16)
            labels[~self.seen[start : start + chunk]] = -1
            out[start : start + chunk] = labels
        return out


class DepthBuffer:
    """The nearest depth per cell of a coarse grid over one photo (``scale`` × its size)."""

    def __init__(self, height: int, width: int, scale: float, tolerance: float):
        self.scale = scale
        self.tolerance = tolerance
        self.height = max(1, int(np.ceil(height * scale)))
        self.width = max(1, int(np.ceil(width * scale)))
        self.depth = np.full(self.height * self.width, np.inf)

    def cells(self, proj: Projection) -> np.ndarray:
        row = np.minimum((proj.row * self.scale).astype(np.int64), self.height - 1)
        col = np.minimum((proj.col * self.scale).astype(np.int64), self.width - 1)
        return row * self.width + col

    def add(self, proj: Projection) -> None:
        np.minimum.at(self.depth, self.cells(proj), proj.depth)

    def visible(self, proj: Projection) -> np.ndarray:
        """Which projected points lie no deeper than their cell's nearest point × (1 + tolerance)."""
        return proj.depth <= self.depth[self.cells(proj)] * (1 + self.tolerance)
