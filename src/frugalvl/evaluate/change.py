"""Change-detection benchmarks (LEVIR-CD, WHU-CD, S2Looking) and the official change metrics
(docs/methods/segearth_ov3_change.md#evaluation).

A change dataset's preset names three folders: the first date (``img_dir``, ``A``), the second
(``img2_dir``, ``B``, the same file names) and the labels (0 = no change, 1 = change; 0/255 masks are
converted at 128 as the official converter does). Samples pair exactly as for segmentation; the second
date is looked up by the same id.

Metrics are mmseg's ``IoUMetric`` with ``mIoU`` and ``mFscore`` over both classes, from pixel counts
summed over the whole dataset: per class IoU, Acc (= recall), precision, recall and F1; the summary is
aAcc and the means over both classes. Change-detection papers usually quote the change class's F1 and IoU,
so :func:`change_report` shows that row first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .datasets import DatasetSpec, Sample, find_samples
from .metrics import Scores
from .tables import fmt, format_table


def second_date(spec: DatasetSpec, data_root: str | os.PathLike, sample: Sample) -> Path:
    """The second date's image of a sample: ``<img2_dir>/<id><img_suffix>``."""
    if spec.img2_dir is None:
        raise ValueError(f"{spec.name} is not a change-detection dataset (no img2_dir)")
    return Path(data_root) / spec.img2_dir / f"{sample.id}{sample.image.suffix}"


def check_second_dates(spec: DatasetSpec, data_root: str | os.PathLike) -> list[Sample]:
    """The dataset's samples, after checking that every first-date image has its second date."""
    samples = find_samples(spec, data_root)
    missing = [second_date(spec, data_root, s) for s in samples if not second_date(spec, data_root, s).is_file()]
    if missing:
        raise UserError(
            f"{spec.name}: {len(missing)} of {len(samples)} pairs have no second-date image (first: {missing[0]}); "
            f"expected {Path(data_root) / str(spec.img2_dir)}/<id>{spec.img_suffix} beside {spec.layout(data_root)}"
        )
    return samples


class DetectorPredictor:
    """Runs a change detector on both dates of a sample, as the official evaluation: each image read whole,
    the second date's scores resized to the first's size if they differ. Built on first need."""

    def __init__(self, make_detector: Callable[[], Any], spec: DatasetSpec, data_root: str | os.PathLike, label: str):
        self._make_detector = make_detector
        self._detector: Any = None
        self.spec = spec
        self.data_root = Path(data_root)
        self.label = label

    def predict(self, sample: Sample) -> np.ndarray:
        from ..raster import read_image

        if self._detector is None:
            self._detector = self._make_detector()
        before = read_image(sample.image).rgb
        after = read_image(second_date(self.spec, self.data_root, sample)).rgb
        return self._detector.detect(before, after).change


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def change_metrics(scores: Scores) -> dict[str, Any]:
    """mmseg's mIoU + mFscore metrics in percent: ``summary`` (aAcc and the means over both classes) and
    ``per_class`` (IoU, Acc, Precision, Recall, Fscore), from dataset-level pixel counts."""
    precision = _divide(scores.intersection, scores.pred_area)
    recall = _divide(scores.intersection, scores.label_area)
    with np.errstate(divide="ignore", invalid="ignore"):
        fscore = 2 * precision * recall / (precision + recall)
    per_class = {
        "IoU": 100 * scores.iou,
        "Acc": 100 * scores.acc,
        "Precision": 100 * precision,
        "Recall": 100 * recall,
        "Fscore": 100 * fscore,
    }
    summary = {"aAcc": 100 * scores.aacc, **{f"m{k}": _nanmean(v) for k, v in per_class.items()}}
    return {"summary": summary, "per_class": per_class}


def _json(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def change_metrics_json(scores: Scores, names: tuple[str, ...]) -> dict[str, Any]:
    metrics = change_metrics(scores)
    return {
        "summary": {k: _json(v) for k, v in metrics["summary"].items()},
        "per_class": [
            {"class": n, **{k: _json(v[i]) for k, v in metrics["per_class"].items()}} for i, n in enumerate(names)
        ],
        "change_class": {k: _json(v[1]) for k, v in metrics["per_class"].items()},
    }


def change_report(scores: Scores, names: tuple[str, ...], title: str = "") -> str:
    """The official change metrics as text: the change class first, then each class, then the means."""
    metrics = change_metrics(scores)
    cols = ["IoU", "Fscore", "Precision", "Recall", "Acc"]
    rows = [[f"{names[1]} (change class)", *(fmt(metrics["per_class"][c][1]) for c in cols)]]
    rows += [[n, *(fmt(metrics["per_class"][c][i]) for c in cols)] for i, n in enumerate(names)]
    rows.append(["mean of both", *(fmt(metrics["summary"][f"m{c}"]) for c in cols)])
    table = format_table(["class", "IoU", "F1", "Precision", "Recall", "Acc"], rows, title or None)
    return f"{table}\naAcc {fmt(metrics['summary']['aAcc'])}"
