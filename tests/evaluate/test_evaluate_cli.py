"""``frugalvl evaluate`` end to end: --predictions, method runs (with a fake method), resume, --all."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main
from frugalvl.evaluate.datasets import dataset_spec, find_samples
from frugalvl.raster import RasterImage, read_image, write_labels
from frugalvl.segment.base import labels_from_scores
from tests.evaluate.eval_fixtures import FakeSegmenter, fake_method_module, write_pair


def _results(outdir: Path, dataset: str, run: str) -> dict:
    return json.loads((outdir / dataset / run / "results.json").read_text())


def _raw_labels(root: Path, dataset: str = "potsdam") -> list[np.ndarray]:
    """The stored label values, read independently of the package's reader."""
    spec = dataset_spec(dataset)
    return [np.asarray(Image.open(p)) for p in sorted((root / spec.ann_dir).iterdir())]


def _write_predictions(root: Path, pred_dir: Path, make_labels, dataset: str = "potsdam") -> None:
    """Label maps as ``frugalvl segment`` writes them (``<stem>.png`` with class names)."""
    spec = dataset_spec(dataset)
    for sample in find_samples(spec, root):
        image = RasterImage(rgb=np.zeros((1, 1, 3), np.uint8), path=sample.image)
        write_labels(pred_dir, image, make_labels(sample), list(spec.label_names))


def test_perfect_predictions_score_100(potsdam_root: Path, tmp_path: Path):
    from frugalvl.evaluate.datasets import read_label

    spec = dataset_spec("potsdam")
    preds = tmp_path / "preds"
    _write_predictions(
        potsdam_root, preds, lambda s: np.where((lab := read_label(s.label, spec.encoding)) == 255, 0, lab)
    )
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "--dataset",
            "potsdam",
            "--data-root",
            str(potsdam_root),
            "--predictions",
            str(preds),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    res = _results(out, "potsdam", "predictions-preds")
    assert res["images"] == 4 and res["complete"]
    assert res["metrics"]["mIoU"] == pytest.approx(100.0)
    assert res["metrics"]["aAcc"] == pytest.approx(100.0)
    # clutter (class 5) is absent from these labels and from the predictions: NaN -> null, not in the mean
    assert res["per_class"][5]["IoU"] is None
    rows = list(csv.DictReader((out / "potsdam" / "predictions-preds" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == list(spec.label_names)


def test_constant_tiff_predictions_give_the_hand_computed_value(potsdam_root: Path, tmp_path: Path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    spec = dataset_spec("potsdam")
    for sample in find_samples(spec, potsdam_root):
        import rasterio

        with rasterio.open(
            preds / f"{sample.stem}.tif", "w", driver="GTiff", width=256, height=256, count=1, dtype="uint8"
        ) as dst:
            dst.write(np.ones((1, 256, 256), np.uint8))  # everything "building"
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "potsdam",
                "--data-root",
                str(potsdam_root),
                "--predictions",
                str(preds),
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    raw = np.concatenate([r.ravel() for r in _raw_labels(potsdam_root)])
    counts = np.bincount(raw[raw > 0].astype(np.int64) - 1, minlength=6)  # reduce_zero_label by hand
    present = (counts > 0) | (np.arange(6) == 1)
    expected_iou = counts[1] / counts.sum()
    res = _results(out, "potsdam", "predictions-preds")
    assert res["metrics"]["mIoU"] == pytest.approx(100 * expected_iou / present.sum())
    assert res["metrics"]["aAcc"] == pytest.approx(100 * expected_iou)
    assert res["per_class"][1]["IoU"] == pytest.approx(100 * expected_iou)
    printed = capsys.readouterr().out
    assert "impervious surface" in printed and "SegEarth-OV (paper)" in printed and "47.1?" in printed


def test_method_run_equals_segment_then_predictions(potsdam_root: Path, tmp_path: Path, monkeypatch):
    made: list = []
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: fake_method_module(made))
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--dataset", "potsdam", "--data-root", str(potsdam_root), "-o", str(out), "--no-progress"])
        == 0
    )
    ((args, segmenter),) = made
    assert args.preset == "potsdam" and args.classes is None and args.classes_file is None
    assert segmenter.calls == 4
    by_method = _results(out, "potsdam", "segearth-ov")

    # The same fake method writing label files, then scored with --predictions: identical numbers.
    spec = dataset_spec("potsdam")
    fake = FakeSegmenter(list(spec.label_names))
    preds = tmp_path / "preds"
    _write_predictions(
        potsdam_root, preds, lambda s: labels_from_scores(fake.class_scores(read_image(s.image).rgb)).numpy()
    )
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "potsdam",
                "--data-root",
                str(potsdam_root),
                "--predictions",
                str(preds),
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    by_files = _results(out, "potsdam", "predictions-preds")
    assert by_files["confusion_matrix"] == by_method["confusion_matrix"]
    assert by_files["metrics"] == by_method["metrics"]


def test_interrupted_run_resumes_without_recomputing(potsdam_root: Path, tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--dataset", "potsdam", "--data-root", str(potsdam_root), "-o", str(out), "--no-progress"]
    made: list = []
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: fake_method_module(made, fail_after=2))
    assert main(argv) == 130  # killed after two images
    assert not (out / "potsdam" / "segearth-ov" / "results.json").exists()

    made.clear()
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: fake_method_module(made))
    assert main(argv) == 0
    assert made[0][1].calls == 2  # only the two images not done before
    assert "(2 from earlier runs)" in capsys.readouterr().out
    resumed = _results(out, "potsdam", "segearth-ov")

    made.clear()
    assert main(argv) == 0
    assert made == []  # everything cached: the model is not even built

    fresh_out = tmp_path / "fresh"
    assert main([*argv[:-3], "-o", str(fresh_out), "--no-cache", "--no-progress"]) == 0
    fresh = _results(fresh_out, "potsdam", "segearth-ov")
    assert resumed["confusion_matrix"] == fresh["confusion_matrix"] and resumed["metrics"] == fresh["metrics"]


def test_other_settings_do_not_reuse_the_cache(potsdam_root: Path, tmp_path: Path, monkeypatch):
    made: list = []
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: fake_method_module(made))
    argv = ["evaluate", "--dataset", "potsdam", "--data-root", str(potsdam_root), "-o", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--prob-thd", "0.5"]) == 0
    assert [s.calls for _, s in made] == [4, 4]


def test_another_checkpoint_at_the_same_path_does_not_reuse_the_cache(potsdam_root: Path, tmp_path: Path, monkeypatch):
    made: list = []
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: fake_method_module(made))
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"first checkpoint")
    argv = [
        "evaluate",
        "--dataset",
        "potsdam",
        "--data-root",
        str(potsdam_root),
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
        "--clip",
        str(weights),
    ]
    assert main(argv) == 0
    assert main(argv) == 0  # same file: everything from the cache, no segmenter even built
    assert [s.calls for _, s in made] == [4]
    weights.write_bytes(b"another checkpoint, same path")
    assert main(argv) == 0
    assert [s.calls for _, s in made] == [4, 4]


def test_limit_then_full_run(potsdam_root: Path, tmp_path: Path, monkeypatch):
    made: list = []
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: fake_method_module(made))
    argv = ["evaluate", "--dataset", "potsdam", "--data-root", str(potsdam_root), "-o", str(tmp_path), "--no-progress"]
    assert main([*argv, "--limit", "3"]) == 0
    partial = _results(tmp_path, "potsdam", "segearth-ov")
    assert (partial["images"], partial["images_total"], partial["complete"]) == (3, 4, False)
    assert main(argv) == 0
    assert [s.calls for _, s in made] == [3, 1]
    assert _results(tmp_path, "potsdam", "segearth-ov")["complete"]


def test_missing_dataset_folder_is_one_line_and_exit_2(tmp_path: Path, capsys):
    rc = main(["evaluate", "--dataset", "vaihingen", "--data-root", str(tmp_path), "--predictions", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vaihingen/img_dir/val" in err and "vaihingen/ann_dir/val" in err


def test_prediction_problems_are_user_errors(potsdam_root: Path, tmp_path: Path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    argv = [
        "evaluate",
        "--dataset",
        "potsdam",
        "--data-root",
        str(potsdam_root),
        "--predictions",
        str(preds),
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "no prediction for image" in capsys.readouterr().err
    for sample in find_samples(dataset_spec("potsdam"), potsdam_root):
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(preds / f"{sample.stem}.png")
    assert main(argv) == 2
    assert "must have the label's size" in capsys.readouterr().err


def test_all_prints_the_two_paper_tables(potsdam_root: Path, tmp_path: Path, capsys):
    # a second, generated benchmark: WHU aerial buildings, raw 0/255 masks
    rng = np.random.default_rng(0)
    for i in range(2):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 4 + i : 20] = 255
        write_pair(potsdam_root, "whu_aerial", f"tile_{i}", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), mask)
    preds = tmp_path / "preds"
    (preds / "whu_aerial").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.ones((32, 32), np.uint8)).save(preds / "whu_aerial" / f"tile_{i}.png")
    _write_predictions(potsdam_root, preds / "potsdam", lambda s: np.zeros((256, 256), np.uint8))
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "--all",
                "--data-root",
                str(potsdam_root),
                "--predictions",
                str(preds),
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Table 1: multi-class" in printed and "Table 2: single-class" in printed
    assert "WHU-Aer" in printed and "Potsdam" in printed
    summary = json.loads((out / "summary-predictions-preds.json").read_text())
    assert [r["dataset"] for r in summary] == ["potsdam", "whu_aerial"]
    whu = summary[1]
    # all-building prediction: foreground IoU = building pixels / all pixels, by hand
    assert whu["headline"] == "IoU(building)"
    assert whu["value"] == pytest.approx(100 * (16 * 16 + 16 * 15) / (2 * 32 * 32))
    assert (out / "summary-predictions-preds.csv").read_text().startswith("dataset,group,run")


def test_all_keeps_going_past_a_broken_dataset(potsdam_root: Path, tmp_path: Path, capsys):
    spec = dataset_spec("wbs_si")  # only one of its 499 listed images is there
    write_pair(potsdam_root, "wbs_si", spec.split[0], np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    preds = tmp_path / "preds"
    _write_predictions(potsdam_root, preds / "potsdam", lambda s: np.zeros((256, 256), np.uint8))
    (preds / "wbs_si").mkdir()
    rc = main(
        [
            "evaluate",
            "--all",
            "--data-root",
            str(potsdam_root),
            "--predictions",
            str(preds),
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 2
    assert "Table 1: multi-class" in captured.out
    assert "wbs_si: 498 of 499 listed images are missing" in captured.err


def test_real_segearth_ov_run_equals_segment_then_predictions(potsdam_root: Path, tmp_path: Path, tiny_clip_file):
    """No stand-in: the real SegEarth-OV segmenter (tiny random CLIP) through evaluate and through segment."""
    out = tmp_path / "out"
    model = ["--method", "segearth-ov", "--clip", str(tiny_clip_file)]
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "potsdam",
                "--data-root",
                str(potsdam_root),
                "-o",
                str(out),
                "--no-progress",
                *model,
            ]
        )
        == 0
    )
    by_method = json.loads(next(out.glob("potsdam/segearth-ov*/results.json")).read_text())
    preds = tmp_path / "preds"
    images = sorted((potsdam_root / dataset_spec("potsdam").img_dir).iterdir())
    assert main(["segment", *map(str, images), "-o", str(preds), "--preset", "potsdam", "--no-progress", *model]) == 0
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "potsdam",
                "--data-root",
                str(potsdam_root),
                "--predictions",
                str(preds),
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    by_files = _results(out, "potsdam", "predictions-preds")
    assert by_files["confusion_matrix"] == by_method["confusion_matrix"]
    assert sum(map(sum, by_method["confusion_matrix"])) > 0


def test_all_loads_the_model_once_for_every_dataset(potsdam_root: Path, tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_pair(
            potsdam_root,
            "whu_aerial",
            f"tile_{i}",
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            np.zeros((32, 32), np.uint8),
        )
    made, loads = [], []
    module = fake_method_module(made)
    module.load_models = lambda args: loads.append(args.method) or "the-model"
    monkeypatch.setattr("frugalvl.commands.segment.method_module", lambda name: module)
    assert (
        main(["evaluate", "--all", "--data-root", str(potsdam_root), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    )
    assert loads == ["segearth-ov"]  # one load ...
    assert sorted(args.preset for args, _ in made) == ["potsdam", "whu_aerial"]  # ... two segmenters
