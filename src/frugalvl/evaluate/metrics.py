"""Dataset-level segmentation metrics with the semantics of mmseg's ``IoUMetric``.

The official SegEarth-OV and SegEarth-OV3 evaluations sum, over the whole dataset, each class's
intersection, union, predicted area and labelled area, and only then divide. Averaging per-image
IoUs would give different (and not comparable) numbers.

Everything is derived from one ``(C+1) × (C+1)`` confusion matrix of pixel counts, rows = label,
columns = prediction. The extra last row holds pixels whose label is neither a class nor the ignore
index (mmseg still counts their predictions), the extra last column holds predictions outside
``0..C-1`` (they can never be right, but their labels still count). With these two the matrix
reproduces mmseg exactly:

* intersection[c] = M[c, c]
* label area[c]   = sum of row c (all columns)
* pred area[c]    = sum of column c (all rows)
* union[c]        = pred area + label area − intersection

A class whose union is empty gets a NaN IoU and is left out of the mean (``nanmean``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(
    labels: np.ndarray, preds: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """``(C+1)×(C+1)`` int64 pixel counts for one image (see the module docstring)."""
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} differ in size")
    valid = labels != ignore_index
    lab = labels[valid].astype(np.int64)
    pred = preds[valid].astype(np.int64)
    # Anything outside 0..C-1 goes to the overflow row/column C.
    lab = np.where((lab >= 0) & (lab < num_classes), lab, num_classes)
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    size = num_classes + 1
    return np.bincount(lab * size + pred, minlength=size * size).reshape(size, size)


@dataclass(frozen=True)
class Scores:
    """Per-class and summary metrics, as fractions in ``[0, 1]`` (NaN where undefined)."""

    iou: np.ndarray  # [C]
    acc: np.ndarray  # [C] per-class accuracy (recall)
    intersection: np.ndarray  # [C] pixel counts
    union: np.ndarray  # [C]
    pred_area: np.ndarray  # [C]
    label_area: np.ndarray  # [C]
    aacc: float  # all correct pixels / all labelled pixels
    miou: float
    macc: float

    @property
    def foreground_iou(self) -> float:
        """IoU of class 1: the headline number of the binary (building, road, water) datasets."""
        return float(self.iou[1])


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def scores_from_confusion(matrix: np.ndarray) -> Scores:
    """Metrics from a summed ``(C+1)×(C+1)`` confusion matrix."""
    c = matrix.shape[0] - 1
    m = matrix.astype(np.float64)
    intersection = np.diag(m)[:c]
    label_area = m[:c].sum(1)
    pred_area = m[:, :c].sum(0)
    union = pred_area + label_area - intersection
    iou = _divide(intersection, union)
    acc = _divide(intersection, label_area)
    total = label_area.sum()
    aacc = float(intersection.sum() / total) if total > 0 else float("nan")
    return Scores(
        iou=iou,
        acc=acc,
        intersection=intersection,
        union=union,
        pred_area=pred_area,
        label_area=label_area,
        aacc=aacc,
        miou=_nanmean(iou),
        macc=_nanmean(acc),
    )


class ConfusionAccumulator:
    """Sums per-image confusion matrices: memory stays ``O(C²)`` however large the dataset."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
        self.images = 0

    def add_matrix(self, matrix: np.ndarray) -> None:
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"confusion matrix {matrix.shape} does not fit {self.num_classes} classes")
        self.matrix += matrix.astype(np.int64)
        self.images += 1

    def add(self, labels: np.ndarray, preds: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
        """Add one image; returns its confusion matrix (what the runner caches)."""
        matrix = confusion_matrix(labels, preds, self.num_classes, ignore_index)
        self.add_matrix(matrix)
        return matrix

    def scores(self) -> Scores:
        return scores_from_confusion(self.matrix)
