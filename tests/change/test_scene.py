"""Whole scenes tile by tile, and the ``--semantic`` extras: tiles equal separate pairs, polygons and areas agree
with the from→to raster, and a run killed with SIGKILL resumes to the same bytes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize

from frugalvl.change import ChangeDetector, ChangeSettings
from frugalvl.cli import main
from frugalvl.models.sam3 import load_sam3
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from frugalvl.vocab import Vocabulary
from tests.change.conftest import pair
from tests.change.test_cli import geotiff

CLASSES = "background;building;road"


def scene_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A 32×64 pair of GeoTIFFs (two 32² tiles) in a metric CRS with 10 m pixels."""
    before, _ = pair()
    before = np.ascontiguousarray(before[16:48])
    after = before.copy()
    after[8:, 20:] = 255 - after[8:, 20:]  # a large change across both tiles
    return geotiff(tmp_path / "s.tif", before), geotiff(tmp_path / "s_later.tif", after), before, after


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_tiles_equal_separate_pairs_and_the_extras_agree(sam3_dir, tmp_path):
    a, b, before, after = scene_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["change", str(a), str(b), "-o", str(out), "--sam3", str(sam3_dir), "--classes", CLASSES,
                 "--tile", "32", "--semantic", "--no-progress"]) == 0  # fmt: skip
    vocab = Vocabulary.parse(CLASSES)
    detector = ChangeDetector(SegEarthOV3(load_sam3(sam3_dir), vocab, SegEarthOV3Settings(0.5, 0.4)), ChangeSettings())
    left = detector.detect(before[:, :32], after[:, :32])
    right = detector.detect(before[:, 32:], after[:, 32:])
    change = read(out / "s_change.tif")
    assert np.array_equal(change, np.hstack([left.change, right.change]))
    assert np.array_equal(read(out / "s_before_labels.tif"), np.hstack([left.labels_before, right.labels_before]))
    assert np.array_equal(read(out / "s_after_labels.tif"), np.hstack([left.labels_after, right.labels_after]))
    assert change.any() and not (out / ".s_change.parts").exists()
    # from→to: 1 + from·3 + to where changed, 0 elsewhere
    fromto = read(out / "s_fromto.tif")
    labels_before, labels_after = read(out / "s_before_labels.tif"), read(out / "s_after_labels.tif")
    expected = np.where(change == 1, 1 + labels_before.astype(int) * 3 + labels_after, 0)
    assert np.array_equal(fromto, expected)
    # polygons rasterised back give the from→to raster
    polygons = pyogrio.read_dataframe(out / "s_change.gpkg")
    with rasterio.open(out / "s_fromto.tif") as src:
        transform, shape, pixel = src.transform, src.shape, abs(src.transform.a * src.transform.e)
    codes = [1 + f * 3 + t for f, t in zip(polygons["from_index"], polygons["to_index"], strict=True)]
    burnt = rasterize(zip(polygons.geometry, codes, strict=True), out_shape=shape, transform=transform, fill=0)
    assert np.array_equal(burnt, fromto)
    # areas are pixels × pixel area (10 m pixels: 100 m²), in the polygons and in the table
    with open(out / "s_transitions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert sum(int(r["pixels"]) for r in table) == int((change == 1).sum())
    names = vocab.names
    for row in table:
        f, t = names.index(row["from_class"]), names.index(row["to_class"])
        n = int((fromto == 1 + f * 3 + t).sum())
        assert int(row["pixels"]) == n
        assert float(row["area_m2"]) == pytest.approx(n * pixel) and float(row["area_ha"]) == pytest.approx(
            n * pixel / 1e4
        )
        mine = polygons[(polygons["from_index"] == f) & (polygons["to_index"] == t)]
        assert mine["area"].sum() == pytest.approx(n * pixel) and mine.geometry.area.sum() == pytest.approx(n * pixel)


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tif", ".csv", ".png")}


def test_a_killed_scene_run_resumes_to_the_same_bytes(sam3_dir, tmp_path):
    a, b, _, _ = scene_pair(tmp_path)
    args = ["change", str(a), str(b), "--sam3", str(sam3_dir), "--classes", CLASSES, "--tile", "16", "--semantic",
            "--no-progress"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "frugalvl", *args, "-o", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    parts = killed / ".s_change.parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("*.npy")))
    assert 2 <= done_before < 8 and not (killed / "s_change_run.json").exists()
    assert main([*args, "-o", str(killed)]) == 0
    assert outputs(killed) == outputs(tmp_path / "whole")
    whole, again = (pyogrio.read_dataframe(f / "s_change.gpkg") for f in (tmp_path / "whole", killed))
    assert whole.drop(columns="geometry").equals(again.drop(columns="geometry"))
    assert list(whole.geometry.to_wkb()) == list(again.geometry.to_wkb())


def test_urls_are_read_as_scenes_and_give_the_local_bytes(sam3_dir, tmp_path):
    from frugalvl.testing.http import serve_folder

    a, b, _, _ = scene_pair(tmp_path)
    args = ["--sam3", str(sam3_dir), "--classes", CLASSES, "--tile", "32", "--no-progress"]
    assert main(["change", str(a), str(b), "-o", str(tmp_path / "local"), *args]) == 0
    with serve_folder(tmp_path) as base:
        assert main(["change", f"{base}/{a.name}", f"{base}/{b.name}", "-o", str(tmp_path / "remote"), *args]) == 0
    assert outputs(tmp_path / "remote") == outputs(tmp_path / "local")
