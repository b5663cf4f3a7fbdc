"""``frugalvl change`` end to end on the tiny SAM 3: outputs, resuming, folders, GeoTIFFs, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from frugalvl.change import ChangeDetector, ChangeSettings
from frugalvl.cli import main
from frugalvl.models.sam3 import load_sam3
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from frugalvl.vocab import Vocabulary
from tests.change.conftest import pair


def png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def geotiff(path: Path, rgb: np.ndarray, x0: float = 500000.0, y0: float = 4000000.0, crs: str = "EPSG:32633") -> Path:
    profile = dict(driver="GTiff", height=rgb.shape[0], width=rgb.shape[1], count=3, dtype="uint8", crs=crs)
    with rasterio.open(path, "w", transform=from_origin(x0, y0, 10.0, 10.0), **profile) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    return path


@pytest.fixture(scope="module")
def class_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("classes") / "cls_levir_cd.txt"
    path.write_text("background\nbuilding")  # the official file: two lines, no trailing newline
    return path


def change(*args) -> int:
    return main(["change", *map(str, args), "--no-progress"])


def test_pair_of_pngs_writes_the_change_map_and_the_overlay_and_resumes(sam3_dir, class_file, tmp_path, capsys):
    before, after = pair()
    a, b = png(tmp_path / "scene.png", before), png(tmp_path / "scene_later.png", after)
    out = tmp_path / "out"
    common = ["-o", out, "--method", "segearth-ov3", "--sam3", sam3_dir, "--classes-file", class_file]
    assert change(a, b, *common) == 0
    with rasterio.open(out / "scene_change.tif") as src:
        assert (src.count, src.dtypes[0], src.shape, src.nodata, src.crs) == (1, "uint8", (64, 64), 255, None)
        written = src.read(1)
    detector = ChangeDetector(
        SegEarthOV3(load_sam3(sam3_dir), Vocabulary.parse("background;building"), SegEarthOV3Settings(0.5, 0.4)),
        ChangeSettings(0.3, 0),
    )
    assert np.array_equal(written, detector.detect(before, after).change)  # the LEVIR-CD defaults
    assert written.any()
    with Image.open(out / "scene_change_overlay.png") as img:
        assert img.size == (2 * 64 + 8, 64)
    record = json.loads((out / "scene_change_run.json").read_text())
    assert record["segmenter"]["method"] == "segearth-ov3-change"
    assert record["segmenter"]["change"]["instance_iou_threshold"] == 0.3
    stamp = (out / "scene_change.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert change(a, b, *common) == 0  # done: skipped
    assert "1 already done" in capsys.readouterr().out
    assert (out / "scene_change.tif").stat().st_mtime_ns == stamp
    assert change(a, b, *common, "--instance-iou-threshold", "0.5") == 2  # other settings: one line
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar
    assert err.startswith("frugalvl: error:") and "instance_iou_threshold: 0.3 -> 0.5" in err
    # an official setting changes the result as it should: identical dates never change
    assert change(a, a, "-o", tmp_path / "same", "--sam3", sam3_dir, "--classes", "background;building") == 0
    with rasterio.open(tmp_path / "same" / "scene_change.tif") as src:
        assert not src.read(1).any()


def test_folders_pair_by_name_and_geotiffs_keep_the_before_grid(sam3_dir, tmp_path):
    before, after = pair()
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    for name in ("t1.tif", "t2.tif"):
        geotiff(tmp_path / "A" / name, before)
        geotiff(tmp_path / "B" / name, after, x0=500020.0)  # shifted by 2 px: read through a warped VRT
    out = tmp_path / "out"
    assert change(tmp_path / "A", tmp_path / "B", "-o", out, "--sam3", sam3_dir) == 0
    for stem in ("t1", "t2"):
        with rasterio.open(out / f"{stem}_change.tif") as src:
            assert src.crs == "EPSG:32633" and src.transform == from_origin(500000.0, 4000000.0, 10.0, 10.0)
            data = src.read(1)
        assert set(np.unique(data)) <= {0, 1, 255}
        assert (data[:, :2] == 255).all() and (data[:, 2:] != 255).all()  # the after date starts 2 px east


def bad(args, capsys) -> str:
    assert change(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_inputs_stop_with_one_line_and_write_nothing(sam3_dir, tmp_path, capsys):
    before, after = pair()
    out = tmp_path / "out"
    a = png(tmp_path / "a.png", before)
    big = png(tmp_path / "big.png", np.ascontiguousarray(np.repeat(after, 2, 0)))
    assert "differ in size" in bad([a, big, "-o", out, "--sam3", sam3_dir], capsys)
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    png(tmp_path / "A" / "x.png", before)
    png(tmp_path / "A" / "y.png", before)
    png(tmp_path / "B" / "x.png", after)
    assert "y.png has no partner" in bad([tmp_path / "A", tmp_path / "B", "-o", out, "--sam3", sam3_dir], capsys)
    far = geotiff(tmp_path / "far.tif", after, x0=100000.0, y0=100000.0, crs="EPSG:32633")
    near = geotiff(tmp_path / "near.tif", before)
    assert "do not overlap" in bad([near, far, "-o", out, "--sam3", sam3_dir], capsys)
    assert "--instance-iou-threshold must be from 0 to 1" in bad(
        [a, a, "-o", out, "--instance-iou-threshold", "2"], capsys
    )
    assert "--tile must be at least 16" in bad([a, a, "-o", out, "--tile", "8"], capsys)
    assert not out.exists()


def test_progress_json_reports_the_pair_its_tiles_and_the_assembly(sam3_dir, tmp_path, capsys):
    """``change --progress json``: the events of docs/progress.md on stderr (the QGIS plugin reads them);
    the same outputs as a run without progress."""
    before, after = pair(64)
    a, b = geotiff(tmp_path / "a.tif", before[:32]), geotiff(tmp_path / "b.tif", after[:32])
    common = [a, b, "--sam3", sam3_dir, "--classes", "background;building", "--tile", "16"]
    assert main(["change", *map(str, common), "-o", str(tmp_path / "json"), "--progress", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    pairs = [(e["event"], e["done"], e["total"]) for e in events if e.get("level") == 0]
    assert pairs[0] == ("start", 0, 1) and pairs[-1] == ("close", 1, 1)
    tiles = [(e["event"], e["done"]) for e in events if e.get("level") == 1]
    assert tiles == [("start", 0), *[("advance", n) for n in range(1, 9)], ("close", 8)]  # 32×64 in 16² tiles
    assert all(e["unit"] == "tile" and e["total"] == 8 for e in events if e.get("level") == 1)
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases[-1] == "assemble" and "load" in phases  # the model load, then the assembly after the tiles
    assert change(*common, "-o", tmp_path / "plain") == 0
    with (
        rasterio.open(tmp_path / "json" / "a_change.tif") as x,
        rasterio.open(tmp_path / "plain" / "a_change.tif") as y,
    ):
        assert np.array_equal(x.read(), y.read())
