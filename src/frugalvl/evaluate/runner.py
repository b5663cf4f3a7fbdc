"""The evaluation loop: predict each image, compare with its label, sum confusion matrices.

A predictor turns a sample into a label map at the label's size: a segmenter run through the
same path as ``frugalvl segment`` (:class:`SegmenterPredictor`), or label files made by any other
tool (:class:`FilePredictor`).

Resuming: each image's confusion matrix (a few hundred integers, never a label map) is written
atomically to ``<run dir>/cache-<key>/<id>.json`` as soon as it is known; ``key`` fingerprints
the method and its settings, so a rerun with the same settings recomputes nothing already done,
and a run with other settings never mixes with it. Results go to ``results.json`` and
``per_class.csv`` in the run directory, both written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UserError
from ..fileio import check_outputs, claim_outputs, output_lock, write_json, write_text
from .datasets import DatasetSpec, Sample, find_prediction, find_samples, read_label, read_prediction
from .metrics import ConfusionAccumulator, Scores
from .tables import PAPER_LABELS, comparison_table, per_class_table, published


class Predictor(Protocol):
    label: str  # names the run in tables and folders: a method name, or "predictions-<dir>"

    def predict(self, sample: Sample) -> np.ndarray:
        """``H×W`` class indices for the sample's image."""
        ...


class SegmenterPredictor:
    """Runs a segmenter on the image file, exactly as ``frugalvl segment`` does.

    The segmenter is built on the first image that needs it, so a rerun whose images are all
    cached never loads a model.
    """

    def __init__(self, make_segmenter: Callable[[], Any], label: str) -> None:
        self._make_segmenter = make_segmenter
        self._segmenter = None
        self.label = label

    def predict(self, sample: Sample) -> np.ndarray:
        from ..raster import read_image
        from ..segment.pipeline import segment_image

        segmenter = self._segmenter
        if segmenter is None:
            segmenter = self._segmenter = self._make_segmenter()
        return segment_image(segmenter, read_image(sample.image)).labels


class FilePredictor:
    """Reads label maps named after the image stems (``<stem>.png`` or ``.tif``) from a folder."""

    def __init__(self, pred_dir: str | Path, label: str | None = None) -> None:
        self.pred_dir = Path(pred_dir)
        if not self.pred_dir.is_dir():
            raise UserError(
                f"predictions folder {self.pred_dir} not found: give the folder holding <image stem>.png or .tif label maps"
            )
        self.label = label or f"predictions-{self.pred_dir.resolve().name}"

    def predict(self, sample: Sample) -> np.ndarray:
        path = find_prediction(self.pred_dir, sample)
        if path is None:
            raise UserError(
                f"no prediction for image {sample.image.name}: expected {self.pred_dir / sample.stem}.png or .tif"
            )
        return read_prediction(path)


@dataclass
class DatasetResult:
    """One dataset's scores for one run."""

    spec: DatasetSpec
    label: str
    scores: Scores
    matrix: np.ndarray
    images: int
    images_total: int
    computed: int  # images predicted in this call (the rest came from the cache)
    settings: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # where results.json and per_class.csv were written

    @property
    def complete(self) -> bool:
        return self.images == self.images_total

    @property
    def headline_name(self) -> str:
        return f"IoU({self.spec.label_names[1]})" if self.spec.binary else "mIoU"

    @property
    def headline(self) -> float:
        """mIoU, or the foreground IoU of binary datasets, in percent."""
        return 100 * (self.scores.foreground_iou if self.spec.binary else self.scores.miou)

    def summary(self) -> dict[str, float]:
        s = self.scores
        return {self.headline_name: self.headline, "mIoU": 100 * s.miou, "aAcc": 100 * s.aacc, "mAcc": 100 * s.macc}

    def to_json(self) -> dict[str, Any]:
        s = self.scores
        return {
            "dataset": self.spec.name,
            "title": self.spec.title,
            "group": self.spec.group,
            "run": self.label,
            "images": self.images,
            "images_total": self.images_total,
            "complete": self.complete,
            "headline": {"name": self.headline_name, "value": _num(self.headline)},
            "metrics": {k: _num(v) for k, v in self.summary().items()},
            "per_class": [
                {
                    "class": n,
                    "IoU": _num(100 * s.iou[i]),
                    "Acc": _num(100 * s.acc[i]),
                    "intersection": int(s.intersection[i]),
                    "union": int(s.union[i]),
                    "pred_area": int(s.pred_area[i]),
                    "label_area": int(s.label_area[i]),
                }
                for i, n in enumerate(self.spec.label_names)
            ],
            "published": {m: (p.value if (p := published(m, self.spec.name)) else None) for m in PAPER_LABELS},
            "confusion_matrix": self.matrix.tolist(),
            "settings": self.settings,
        }

    def per_class_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["dataset", "run", "class", "IoU", "Acc", "intersection", "union", "pred_area", "label_area"])
        for row in self.to_json()["per_class"]:
            writer.writerow([self.spec.name, self.label, *row.values()])
        return buf.getvalue()

    def report(self) -> str:
        """Per-class table, then the comparison with the papers."""
        s = self.scores
        done = f"{self.images} images" + ("" if self.complete else f" of {self.images_total} (partial: limit)")
        title = f"{self.spec.title} ({self.spec.name}), {self.label}: {done}"
        table = per_class_table(self.spec.label_names, 100 * s.iou, 100 * s.acc, title)
        compare = comparison_table(self.spec.name, self.headline_name, self.headline, self.summary(), self.label)
        return f"{table}\n\n{compare}"


def _num(value: float) -> float | None:
    """JSON-safe number: NaN (a class absent from labels and predictions) becomes null."""
    return None if math.isnan(value) else float(value)


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short fingerprint of the settings that change predictions."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _cache_file(cache_dir: Path, sample: Sample) -> Path:
    return cache_dir / (sample.id.replace("/", "__") + ".json")


def _load_cached(path: Path, size: int) -> np.ndarray | None:
    try:
        matrix = np.array(json.loads(path.read_text())["confusion"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: compute it again
    return matrix if matrix.shape == (size, size) else None


def _score_sample(spec: DatasetSpec, predictor: Predictor, sample: Sample, acc: ConfusionAccumulator) -> np.ndarray:
    labels = read_label(sample.label, spec.encoding)
    preds = np.asarray(predictor.predict(sample))
    if preds.shape != labels.shape:
        raise UserError(
            f"{spec.name}: prediction for {sample.image.name} is {preds.shape[1]}×{preds.shape[0]} but its label "
            f"is {labels.shape[1]}×{labels.shape[0]}: predictions must have the label's size"
        )
    return acc.add(labels, preds, spec.encoding.ignore_index)


RUN_FILES = ("results.json", "per_class.csv", "change_metrics.json")  # what an evaluation writes in its run dir


def _is_results(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` is a JSON file an evaluation wrote (an object, or a list of rows, with ``keys``)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    rows = data if isinstance(data, list) else [data]
    return bool(rows) and all(isinstance(r, dict) and all(k in r for k in keys) for r in rows)


def dataset_inputs(spec: DatasetSpec, data_root: str | Path) -> list[Path]:
    """The folders an evaluation reads: the dataset's images (both dates) and labels."""
    return [Path(data_root) / d for d in (spec.img_dir, spec.ann_dir, spec.img2_dir) if d]


def check_run_outputs(run_dir: Path, inputs: Sequence[str | Path] = (), overwrite: bool = False) -> None:
    """Refuse a run dir whose result files are an input or files no evaluation recorded (unless
    ``overwrite``); they are claimed right before they are written
    (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make)."""
    ours = _is_results(run_dir / "results.json", ("dataset", "confusion_matrix"))
    recorded = [run_dir / n for n in RUN_FILES] if ours else []
    check_outputs([run_dir / n for n in RUN_FILES], inputs, recorded, overwrite, "outdir")


def check_summary_outputs(
    outdir: str | Path, label: str, inputs: Sequence[str | Path] = (), overwrite: bool = False
) -> None:
    """:func:`check_run_outputs` for :func:`write_summary`'s two files."""
    json_path, csv_path = Path(outdir) / f"summary-{label}.json", Path(outdir) / f"summary-{label}.csv"
    recorded = [json_path, csv_path] if _is_results(json_path, ("dataset", "headline")) else []
    check_outputs([json_path, csv_path], inputs, recorded, overwrite, "outdir")


def evaluate_dataset(
    spec: DatasetSpec,
    data_root: str | Path,
    predictor: Predictor,
    run_dir: str | Path,
    settings: Mapping[str, Any] | None = None,
    limit: int | None = None,
    cache: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
) -> DatasetResult:
    """Score ``predictor`` on a dataset; write ``results.json`` and ``per_class.csv`` to ``run_dir``.

    ``run_dir`` is locked for the call, and its result files are checked first: never one of the dataset's
    folders or ``inputs``, never a file no evaluation recorded writing unless ``overwrite``."""
    run_dir = Path(run_dir)
    with output_lock(run_dir):
        check_run_outputs(run_dir, [*dataset_inputs(spec, data_root), *inputs], overwrite)
        return _evaluate(spec, data_root, predictor, run_dir, settings, limit, cache, progress)


def _evaluate(
    spec: DatasetSpec,
    data_root: str | Path,
    predictor: Predictor,
    run_dir: Path,
    settings: Mapping[str, Any] | None,
    limit: int | None,
    cache: bool,
    progress: bool,
) -> DatasetResult:
    from tqdm.auto import tqdm

    samples = find_samples(spec, data_root)
    chosen = samples[:limit] if limit is not None else samples
    settings = json.loads(json.dumps(dict(settings or {}), sort_keys=True, default=str))  # JSON-safe, as cached
    cache_dir = run_dir / f"cache-{settings_key(settings)}" if cache else None
    if cache_dir is not None:
        write_json(cache_dir / "settings.json", settings)
    acc = ConfusionAccumulator(spec.num_classes)
    computed = 0
    for sample in tqdm(chosen, desc=spec.name, unit="img", disable=not progress):
        path = _cache_file(cache_dir, sample) if cache_dir is not None else None
        cached = _load_cached(path, spec.num_classes + 1) if path is not None else None
        if cached is not None:
            acc.add_matrix(cached)
            continue
        matrix = _score_sample(spec, predictor, sample, acc)
        computed += 1
        if path is not None:
            write_json(path, {"id": sample.id, "confusion": matrix.tolist()}, indent=None)
    result = DatasetResult(
        spec,
        predictor.label,
        acc.scores(),
        acc.matrix.copy(),
        len(chosen),
        len(samples),
        computed,
        dict(settings),
        run_dir,
    )
    claim_outputs([run_dir / n for n in RUN_FILES])
    write_json(run_dir / "results.json", result.to_json())
    write_text(run_dir / "per_class.csv", result.per_class_csv())
    return result


def write_summary(results: Sequence[DatasetResult], outdir: str | Path, label: str) -> tuple[Path, Path]:
    """``summary-<run>.json`` and ``.csv``: one row per dataset, headline next to the papers'."""
    outdir = Path(outdir)
    rows = []
    for r in results:
        row = {
            "dataset": r.spec.name,
            "group": r.spec.group,
            "run": r.label,
            "images": r.images,
            "images_total": r.images_total,
            "headline": r.headline_name,
            "value": _num(r.headline),
            "mIoU": _num(100 * r.scores.miou),
            "aAcc": _num(100 * r.scores.aacc),
            "mAcc": _num(100 * r.scores.macc),
        }
        for method in PAPER_LABELS:
            p = published(method, r.spec.name)
            row[f"paper_{method}"] = p.value if p else None
        rows.append(row)
    json_path, csv_path = outdir / f"summary-{label}.json", outdir / f"summary-{label}.csv"
    claim_outputs([json_path, csv_path])
    write_json(json_path, rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
    write_text(csv_path, buf.getvalue())
    return json_path, csv_path
