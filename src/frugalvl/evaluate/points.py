"""The 3D metric of the official point-cloud evaluation: per-class IoU and mIoU over points with a truth class.

Truth labels are mapped as the official code does: when the largest is above 6 they are STPLS3D's fine
ids, mapped through the preset's ``[truth] fine`` table (others: no truth); otherwise they are shifted
down by one when the smallest is at least 1, else taken as they are. Points whose truth is -1 are left
out; IoU of class c = |pred = c and truth = c| / |pred = c or truth = c|; mIoU averages the classes with a
non-empty union (docs/methods/segearth_ov3_3d.md#evaluation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError


def map_truth(truth: np.ndarray, fine: dict[int, int], n_coarse: int = 6) -> np.ndarray:
    """Truth labels -> class indices (-1: no truth), by the official rule."""
    truth = np.asarray(truth).astype(np.int64)
    if truth.size and truth.max() > n_coarse:
        table = np.full(max(int(truth.max()), max(fine)) + 1, -1, dtype=np.int64)
        for k, v in fine.items():
            table[k] = v
        return np.where(truth >= 0, table[np.maximum(truth, 0)], -1)
    if truth.size and truth.min() >= 1:
        return truth - 1
    return truth


def point_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class IoU over points with truth ≥ 0 (NaN where a class has an empty union)."""
    keep = truth >= 0
    p, t = np.asarray(pred)[keep].astype(np.int64), truth[keep]
    iou = np.full(n_classes, np.nan)
    for c in range(n_classes):
        inter = np.count_nonzero((p == c) & (t == c))
        union = np.count_nonzero((p == c) | (t == c))
        if union:
            iou[c] = inter / union
    return iou


@dataclass
class PointsResult:
    cloud: Path
    class_names: list[str]
    iou: np.ndarray
    points: int  # with a truth class

    @property
    def miou(self) -> float:
        valid = self.iou[~np.isnan(self.iou)]
        return float(valid.mean()) if valid.size else float("nan")

    def report(self) -> str:
        width = max(len(n) for n in [*self.class_names, "mIoU"])
        lines = [f"{self.cloud.name}: {self.points} points with a truth class", f"{'class':<{width}}  {'IoU':>7}"]
        for name, value in zip(self.class_names, self.iou):
            lines.append(f"{name:<{width}}  {'-' if np.isnan(value) else f'{100 * value:.2f}':>7}")
        lines.append(f"{'mIoU':<{width}}  {100 * self.miou:>7.2f}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "cloud": str(self.cloud),
            "points": self.points,
            "mIoU": self.miou,
            "IoU": {n: None if np.isnan(v) else float(v) for n, v in zip(self.class_names, self.iou)},
        }


def _class_names(comments, fallback: list[str]) -> list[str]:
    """The class names label-3d writes into a PLY's comments, else ``fallback``."""
    for comment in comments:
        if comment.startswith("class_names "):
            return list(json.loads(comment[len("class_names ") :]))
    return fallback


def evaluate_points(
    path: str | os.PathLike,
    truth_property: str = "class",
    prediction_property: str = "pred_label",
    preset: str = "stpls3d",
) -> PointsResult:
    """Score a labelled cloud against the truth it carries."""
    from ..pointcloud.io import open_cloud
    from ..presets.points import load_points_preset
    from ..vocab import Vocabulary

    cloud = open_cloud(path)
    for name in (truth_property, prediction_property):
        if name not in cloud.names:
            raise UserError(f"point cloud {cloud.path} has no property {name!r}: it has {', '.join(cloud.names)}")
    table = load_points_preset(preset)
    fine = {int(k): int(v) for k, v in table["truth"]["fine"]}
    preset_names = list(Vocabulary.parse(";".join(table["classes"])).names)
    pred = cloud.read_property(prediction_property).astype(np.int64)
    truth = map_truth(cloud.read_property(truth_property), fine, len(preset_names))
    names = _class_names(cloud.comments, preset_names)
    n = max(len(names), int(pred.max(initial=-1)) + 1, int(truth.max(initial=-1)) + 1)
    names += [f"class {i}" for i in range(len(names), n)]
    return PointsResult(cloud.path, names, point_iou(pred, truth, n), int((truth >= 0).sum()))
