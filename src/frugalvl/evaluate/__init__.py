"""Benchmark evaluation: the papers' 17 remote-sensing datasets, mmseg's IoU metric, paper-style tables.

* :mod:`.datasets`: readers driven by each preset's ``[dataset]`` table;
* :mod:`.metrics`: dataset-level confusion-matrix metrics (IoU, mIoU, aAcc, mAcc);
* :mod:`.runner`: the resumable loop over a dataset, JSON and CSV results;
* :mod:`.tables`: per-class tables and the papers' two tables with their published numbers.
"""

from .datasets import DatasetSpec, Sample, dataset_spec, find_samples, list_datasets, read_label
from .metrics import ConfusionAccumulator, Scores, confusion_matrix, scores_from_confusion
from .runner import DatasetResult, FilePredictor, SegmenterPredictor, evaluate_dataset

__all__ = [
    "ConfusionAccumulator",
    "DatasetResult",
    "DatasetSpec",
    "FilePredictor",
    "Sample",
    "Scores",
    "SegmenterPredictor",
    "confusion_matrix",
    "dataset_spec",
    "evaluate_dataset",
    "find_samples",
    "list_datasets",
    "read_label",
    "scores_from_confusion",
]
