"""The command: end to end with a stand-in segmenter, the 3D evaluation, and one line per bad input."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from frugalvl.cli import main
from frugalvl.testing.pointcloud import LabelColourSegmenter, write_ply

from .conftest import read_ply


@pytest.fixture
def fake_method(monkeypatch):
    made = []

    def segmenter_from_cli(args):
        seg = LabelColourSegmenter.for_classes(args.classes)
        made.append((args, seg))
        return seg

    import frugalvl.commands.label_3d as cli

    real = cli.method_module
    fake = lambda name: types.SimpleNamespace(
        add_arguments=real(name).add_arguments, segmenter_from_cli=segmenter_from_cli
    )
    monkeypatch.setattr(cli, "method_module", fake)
    return made


def label(s, out, *extra):
    return main(["label-3d", str(s["photos"]), "--cameras", str(s["block"]), "--cloud", str(s["cloud"]), "-o", str(out), "--no-progress", *extra])  # fmt: skip


def test_label_3d_end_to_end_and_evaluate(synthetic, tmp_path, fake_method, capsys):
    assert label(synthetic, tmp_path, "--classes", "ground;building", "--visibility", "zbuffer") == 0
    printed = capsys.readouterr().out
    assert "4 photos voted (4 segmented now), 0 skipped" in printed and "cloud_labels.ply" in printed
    out = read_ply(tmp_path / "cloud_labels.ply")
    assert ((out["pred_label"] == synthetic["truth"]) | (out["pred_label"] == -1)).mean() > 0.97
    assert main(["evaluate", "--points", str(tmp_path / "cloud_labels.ply"), "-o", str(tmp_path / "ev")]) == 0
    report = capsys.readouterr().out
    assert "ground" in report and "mIoU" in report
    result = json.loads((tmp_path / "ev" / "points" / "cloud_labels.json").read_text())
    seen = out["pred_label"] >= 0
    # truth 0/1 taken as is; unseen points (-1) count as a wrong prediction of every class they belong to
    t, p = synthetic["truth"], out["pred_label"]
    for c, name in enumerate(["ground", "building"]):
        expected = ((p == c) & (t == c)).sum() / ((p == c) | (t == c)).sum()
        assert result["IoU"][name] == pytest.approx(expected)
    assert seen.any()


def test_the_preset_gives_the_official_thresholds(synthetic, tmp_path, fake_method):
    assert label(synthetic, tmp_path, "--preset", "stpls3d") == 0
    args, seg = fake_method[0]
    out = read_ply(tmp_path / "cloud_labels.ply")
    ground = out["pred_label"] == 0
    assert ground.any() and (out["red"][ground] == 153).all() and (out["blue"][ground] == 153).all()
    record = json.loads((tmp_path / "cloud_labels_run.json").read_text())
    assert record["settings"]["class_weights"] == [1, 1, 2, 2, 3, 1]
    assert (args.prob_thd, args.bg_idx, args.confidence_threshold, args.slide_crop) == (0.1, 5, 0.1, 0)
    assert seg.vocabulary.names == ["ground", "tree", "car", "light pole", "fence", "building"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_missing_photo_is_skipped_with_one_line(synthetic, tmp_path, fake_method, capsys):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(synthetic["photos"], photos)
    (photos / "photo_2.png").unlink()
    s = dict(synthetic, photos=photos)
    assert label(s, tmp_path / "o", "--classes", "ground;building") == 0
    assert one_line(capsys) == f"photo photo_2.png named in the camera block is not in {photos}: skipped"


def test_mismatched_photo_size_is_skipped_and_nothing_usable_exits_2(synthetic, tmp_path, fake_method, capsys):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in synthetic["photos"].iterdir():
        Image.open(p).resize((100, 75)).save(photos / p.name)
    assert label(dict(synthetic, photos=photos), tmp_path / "o", "--classes", "ground;building") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[:4] == [
        f"photo photo_{i}.png is 100×75 px but its photogroup says 200×150: skipped "
        "(give the photos the block was made from)"
        for i in range(4)
    ]
    assert err[4].startswith("frugalvl: error: none of the block's 4 chosen photos is usable") and len(err) == 5


def test_ply_without_xyz_exits_2_before_any_model(synthetic, tmp_path, fake_method, capsys):
    from plyfile import PlyData, PlyElement

    data = np.zeros(3, [("a", "f4"), ("b", "f4"), ("c", "f4")])
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "bad.ply"))
    assert label(dict(synthetic, cloud=tmp_path / "bad.ply"), tmp_path / "o", "--classes", "ground;building") == 2
    assert one_line(capsys).endswith("has no x, y, z property: give a cloud with x, y, z coordinates")
    assert fake_method == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("not xml at all", "is not XML"),
        ("<document><Camera/></document>", "holds no Block/Photogroups/Photogroup (root <document>)"),
        (
            "<BlocksExchange><Block><Photogroups><Photogroup><FocalLength>24</FocalLength></Photogroup>"
            "</Photogroups></Block></BlocksExchange>",
            "gives no FocalLengthPixels",
        ),
    ],
)
def test_camera_block_in_another_format_exits_2(synthetic, tmp_path, fake_method, capsys, text, expected):
    (tmp_path / "b.xml").write_text(text)
    assert label(dict(synthetic, block=tmp_path / "b.xml"), tmp_path / "o", "--classes", "ground;building") == 2
    assert expected in one_line(capsys)
    assert fake_method == []


def test_bad_option_values_name_the_option(synthetic, tmp_path, fake_method, capsys):
    assert label(synthetic, tmp_path, "--classes", "ground;building", "--zbuffer-scale", "2") == 2
    assert one_line(capsys) == "frugalvl: error: --zbuffer-scale must be in (0, 1], got 2.0"
    with pytest.raises(SystemExit) as exc:
        label(synthetic, tmp_path, "--classes", "a;b", "--class-weights", "1,x")
    assert exc.value.code == 2
    assert "argument --class-weights: '1,x' is not a comma-separated list" in capsys.readouterr().err


def test_evaluate_maps_stpls3d_fine_ids(tmp_path):
    from frugalvl.evaluate.points import map_truth, point_iou

    fine = {15: 0, 2: 1, 5: 2, 11: 3, 14: 4, 1: 5}
    np.testing.assert_array_equal(map_truth(np.array([15, 2, 5, 11, 14, 1, 0, 20]), fine), [0, 1, 2, 3, 4, 5, -1, -1])
    np.testing.assert_array_equal(map_truth(np.array([1, 2, 3]), fine), [0, 1, 2])  # 1-based -> 0-based
    np.testing.assert_array_equal(map_truth(np.array([0, 2, 3]), fine), [0, 2, 3])
    iou = point_iou(np.array([0, 0, 1, 1, -1]), np.array([0, 1, 1, -1, 1]), 3)
    np.testing.assert_allclose(iou[:2], [1 / 2, 1 / 3])  # class 1: pred {2,(3 has no truth)}, truth {1,2,4}
    assert np.isnan(iou[2])
    xyz = np.zeros((4, 3))
    write_ply(tmp_path / "c.ply", xyz, np.array([15, 17, 2, 99]))
    from plyfile import PlyData, PlyElement

    data = PlyData.read(str(tmp_path / "c.ply"))["vertex"].data
    out = np.empty(4, data.dtype.descr + [("pred_label", "i2")])
    for n in data.dtype.names:
        out[n] = data[n]
    out["pred_label"] = [0, 1, 1, 3]
    PlyData([PlyElement.describe(out, "vertex")]).write(str(tmp_path / "c.ply"))
    from frugalvl.evaluate.points import evaluate_points

    result = evaluate_points(tmp_path / "c.ply")
    assert result.points == 3 and result.class_names[0] == "ground"
    np.testing.assert_allclose(result.iou[:2], [1 / 2, 1 / 2])
    assert result.miou == pytest.approx(1 / 2)


@pytest.mark.parametrize("argv", [["--help"], ["label-3d", "--help"], ["evaluate", "--help"]])
def test_help_imports_no_point_cloud_library(argv):
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\nfrom frugalvl.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass\n"
        "print(','.join(sorted(m for m in ('plyfile', 'laspy', 'lazrs', 'torch') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("", "torch") and "ply" not in out.stdout and "las" not in out.stdout


def test_segearth_ov3_with_the_stpls3d_preset_end_to_end(synthetic, tmp_path, capsys):
    """The real segmenter (a tiny random SAM 3) through the command: the official settings reach it."""
    pytest.importorskip("transformers")
    from frugalvl.testing.sam3 import random_sam3

    bundle = random_sam3("tiny", seed=0)
    folder = tmp_path / "sam3"
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    argv = ["--preset", "stpls3d", "--sam3", str(folder), "--max-images", "2"]
    assert label(synthetic, tmp_path / "o", *argv) == 0
    assert "2 photos voted (2 segmented now), 0 skipped" in capsys.readouterr().out
    out = read_ply(tmp_path / "o" / "cloud_labels.ply")
    assert out["pred_label"].min() >= -1 and out["pred_label"].max() <= 5
    record = json.loads((tmp_path / "o" / "masks" / "photo_0_run.json").read_text())
    text = json.dumps(record)
    assert '"prob_thd": 0.1' in text and '"confidence_threshold": 0.1' in text and '"bg_idx": 5' in text
    assert label(synthetic, tmp_path / "o", *argv) == 0  # resumed: nothing segmented again
    assert "2 photos voted (0 segmented now)" in capsys.readouterr().out
