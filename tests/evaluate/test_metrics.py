"""Metric values against confusion matrices computed by hand (mmseg IoUMetric semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from frugalvl.evaluate.datasets import LabelEncoding, decode_label
from frugalvl.evaluate.metrics import ConfusionAccumulator, confusion_matrix, scores_from_confusion


def test_hand_computed_three_classes_with_ignore():
    labels = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    preds = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    # (label, pred) over the 7 labelled pixels: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,2); 255 is ignored.
    expected = np.array([[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    m = confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(m, expected)
    s = scores_from_confusion(m)
    np.testing.assert_allclose(s.iou, [1 / 3, 1 / 2, 1 / 3])
    np.testing.assert_allclose(s.acc, [1 / 2, 2 / 3, 1 / 2])
    assert s.miou == pytest.approx(7 / 18)
    assert s.macc == pytest.approx(5 / 9)
    assert s.aacc == pytest.approx(4 / 7)


def test_out_of_range_values_follow_mmseg():
    # A label outside 0..C-1 (not 255) still counts its prediction; a prediction outside counts as wrong.
    labels = np.array([0, 1, 5, 1])
    preds = np.array([0, 7, 1, 1])
    s = scores_from_confusion(confusion_matrix(labels, preds, 2))
    np.testing.assert_array_equal(s.intersection, [1, 1])
    np.testing.assert_array_equal(s.label_area, [1, 2])
    np.testing.assert_array_equal(s.pred_area, [1, 2])
    np.testing.assert_allclose(s.iou, [1.0, 1 / 3])
    assert s.aacc == pytest.approx(2 / 3)


def test_class_absent_from_labels_and_predictions_is_nan_and_left_out():
    s = scores_from_confusion(confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3))
    assert math.isnan(s.iou[2]) and math.isnan(s.acc[2])
    assert s.miou == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_sums_over_the_dataset_not_per_image_means():
    acc = ConfusionAccumulator(2)
    acc.add(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))  # per image: IoU 3/4 and 0
    acc.add(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))  # per image: NaN and 1
    np.testing.assert_array_equal(acc.matrix[:2, :2], [[3, 0], [1, 4]])
    s = acc.scores()
    np.testing.assert_allclose(s.iou, [3 / 4, 4 / 5])
    assert s.miou == pytest.approx(0.775)  # a per-image average would give (0.375 + 1) / 2
    assert acc.images == 2


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (16, 16))
    labels[:2] = 255
    preds = np.where(labels == 255, 0, labels)
    s = scores_from_confusion(confusion_matrix(labels, preds, 4))
    assert s.miou == 1.0 and s.aacc == 1.0 and s.macc == 1.0


def test_constant_prediction_by_hand():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2 + [255] * 4)
    s = scores_from_confusion(confusion_matrix(labels, np.full_like(labels, 1), 3))
    # class 1: intersection 3, union 10 labelled pixels; classes 0 and 2: intersection 0.
    np.testing.assert_allclose(s.iou, [0, 3 / 10, 0])
    assert s.miou == pytest.approx(0.1)
    assert s.aacc == pytest.approx(3 / 10)
    assert s.foreground_iou == pytest.approx(3 / 10)


def test_reduce_zero_label_then_metrics():
    raw = np.array([0, 1, 2, 3, 255, 1])
    labels = decode_label(raw, LabelEncoding(reduce_zero_label=True))
    np.testing.assert_array_equal(labels, [255, 0, 1, 2, 255, 0])
    preds = np.array([2, 0, 1, 0, 2, 1])  # predictions on ignored pixels do not count
    s = scores_from_confusion(confusion_matrix(labels, preds, 3))
    np.testing.assert_array_equal(s.intersection, [1, 1, 0])
    np.testing.assert_allclose(s.iou, [1 / 3, 1 / 2, 0])


def test_accumulator_rejects_a_matrix_of_another_size():
    with pytest.raises(ValueError):
        ConfusionAccumulator(3).add_matrix(np.zeros((3, 3), dtype=np.int64))
