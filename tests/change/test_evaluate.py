"""Change-detection evaluation: the official metrics on hand-made counts, and ``frugalvl evaluate`` on a tiny
LEVIR-CD layout (A/, B/, label_cvt/) scored against the detector's own maps counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from frugalvl.change import ChangeDetector, ChangeSettings
from frugalvl.cli import main
from frugalvl.evaluate.change import change_metrics
from frugalvl.evaluate.metrics import ConfusionAccumulator
from frugalvl.models.sam3 import load_sam3
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from frugalvl.vocab import Vocabulary
from tests.change.conftest import pair


def test_change_metrics_on_hand_counted_pixels():
    acc = ConfusionAccumulator(2)
    acc.add(np.array([0, 0, 1, 1, 255]), np.array([0, 1, 1, 1, 1]))  # 255: ignored
    m = change_metrics(acc.scores())
    # change: I=2, predicted 3, labelled 2 -> P 2/3, R 1, F 0.8, IoU 2/3; no change: I=1, pred 1, label 2
    assert m["per_class"]["Precision"] == pytest.approx([100.0, 200 / 3])
    assert m["per_class"]["Recall"] == pytest.approx([50.0, 100.0])
    assert m["per_class"]["Fscore"] == pytest.approx([200 / 3, 80.0])
    assert m["per_class"]["IoU"] == pytest.approx([50.0, 200 / 3])
    assert m["summary"]["mFscore"] == pytest.approx((200 / 3 + 80) / 2)
    assert m["summary"]["aAcc"] == pytest.approx(75.0)


def test_evaluate_reads_the_levir_layout_and_reports_the_change_metrics(sam3_dir, tmp_path, capsys):
    root = tmp_path / "data"
    base = root / "LEVIR-CD" / "test_512"
    for sub in ("A", "B", "label_cvt"):
        (base / sub).mkdir(parents=True)
    before, after = pair()
    rng = np.random.default_rng(0)
    labels = {}
    for i, (a, b) in enumerate([(before, after), (after, before)]):
        Image.fromarray(a).save(base / "A" / f"t{i}.png")
        Image.fromarray(b).save(base / "B" / f"t{i}.png")
        label = (rng.random((64, 64)) < 0.2).astype(np.uint8)
        labels[i] = label
        # one label raw (0/255, converted at 128 as the official converter), one already converted (0/1)
        Image.fromarray(label * 255 if i == 0 else label).save(base / "label_cvt" / f"t{i}.png")
    out = tmp_path / "eval"
    args = ["evaluate", "--dataset", "levir_cd", "--data-root", root, "--method", "segearth-ov3", "--sam3", sam3_dir]
    assert main([*map(str, args), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "change (change class)" in text and "F1" in text
    detector = ChangeDetector(
        SegEarthOV3(load_sam3(sam3_dir), Vocabulary.parse("background;building"), SegEarthOV3Settings(0.5, 0.4)),
        ChangeSettings(0.3, 0),
    )
    tp = fp = fn = 0
    for i, (a, b) in enumerate([(before, after), (after, before)]):
        pred = detector.detect(a, b).change.astype(bool)
        tp += int((pred & (labels[i] == 1)).sum())
        fp += int((pred & (labels[i] == 0)).sum())
        fn += int((~pred & (labels[i] == 1)).sum())
    assert tp + fp > 0
    metrics = json.loads((out / "levir_cd" / "segearth-ov3" / "change_metrics.json").read_text())
    precision, recall = 100 * tp / (tp + fp), 100 * tp / (tp + fn)
    assert metrics["change_class"]["Precision"] == pytest.approx(precision, abs=1e-3)
    assert metrics["change_class"]["Recall"] == pytest.approx(recall, abs=1e-3)
    f1 = 2 * precision * recall / (precision + recall) if tp else None
    assert metrics["change_class"]["Fscore"] == (pytest.approx(f1, abs=1e-3) if f1 else None)
    assert metrics["change_class"]["IoU"] == pytest.approx(100 * tp / (tp + fp + fn), abs=1e-3)
    # the maps of `frugalvl change` scored as predictions give the same numbers
    assert main(["change", str(base / "A"), str(base / "B"), "-o", str(tmp_path / "pred"), "--sam3", str(sam3_dir),
                 "--no-progress"]) == 0  # fmt: skip
    args = ["evaluate", "--dataset", "levir_cd", "--data-root", str(root), "--predictions", str(tmp_path / "pred")]
    assert main([*args, "-o", str(tmp_path / "eval2"), "--no-progress"]) == 0
    again = json.loads(next((tmp_path / "eval2" / "levir_cd").glob("*/change_metrics.json")).read_text())
    assert again["change_class"] == metrics["change_class"]


def test_a_missing_second_date_is_one_line(tmp_path, capsys):
    base = tmp_path / "LEVIR-CD" / "test_512"
    for sub in ("A", "B", "label_cvt"):
        (base / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / "A" / "x.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(base / "label_cvt" / "x.png")
    args = ["evaluate", "--dataset", "levir_cd", "--data-root", str(tmp_path), "--method", "segearth-ov3"]
    assert main([*args, "-o", str(tmp_path / "eval"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no second-date image" in err
