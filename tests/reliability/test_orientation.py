"""Round 3, class 11: a photo is read the same whole and in tiles (``--tile``): its EXIF orientation applied in
both, its transparent pixels (alpha 0) nodata in both (frugalvl.orientation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image, ImageOps

from frugalvl.orientation import alpha_nodata, exif_orientation, orient
from frugalvl.raster import read_image
from frugalvl.segment.pipeline import segment_files
from frugalvl.segment.scene_settings import SceneSettings, SegmentRunSettings
from frugalvl.testing.segmenters import ColourSegmenter


def _blocks() -> np.ndarray:
    """60×100 px: red left half, green top right, blue bottom right (every orientation looks different)."""
    arr = np.zeros((60, 100, 3), np.uint8)
    arr[:, :50] = (250, 20, 20)
    arr[:30, 50:] = (20, 240, 20)
    arr[30:, 50:] = (20, 20, 240)
    return arr


def _with_orientation(path: Path, arr: np.ndarray, orientation: int, **save) -> Path:
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), **save)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(tmp_path, orientation):
    """An independent reference: Pillow's transpose for each of the eight EXIF orientations."""
    arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = _with_orientation(tmp_path / "p.png", arr, orientation)
    assert exif_orientation(path) == orientation
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal(orient(arr, orientation), expected)
    assert np.array_equal(orient(arr.transpose(2, 0, 1), orientation, channels_first=True), expected.transpose(2, 0, 1))


def _labels(path: Path, out: Path, tile: int | None) -> np.ndarray:
    settings = SegmentRunSettings(tile_all=True, scene=SceneSettings(tile=tile)) if tile else SegmentRunSettings()
    summary = segment_files(ColourSegmenter.with_classes(), [path], out, settings, progress=False)
    assert not summary.failed, summary.failed
    found = [p for p in (out / f"{path.stem}.tif", out / f"{path.stem}.png") if p.exists()]
    with rasterio.open(found[0]) as src:
        return src.read(1)


def test_a_jpeg_with_an_exif_orientation_is_segmented_upright_whole_and_in_tiles(tmp_path):
    arr = _blocks()
    photo = _with_orientation(tmp_path / "photo.jpg", arr, 6, quality=95)  # stored on its side: turn 90° clockwise
    whole, tiled = _labels(photo, tmp_path / "whole", None), _labels(photo, tmp_path / "tiled", 64)
    upright = np.rot90(arr, -1)  # the view: 100 rows × 60 columns
    assert whole.shape == tiled.shape == upright.shape[:2] == (100, 60)
    assert read_image(photo).rgb.shape == (100, 60, 3)
    assert (whole == tiled).mean() > 0.995  # two JPEG decoders (OpenCV, GDAL) differ by a few pixels only
    # red (the stored left half) is at the top after the turn, in both paths
    for labels in (whole, tiled):
        top, bottom = labels[:45], labels[55:]
        assert np.bincount(top.ravel()).argmax() != np.bincount(bottom.ravel()).argmax()
        assert (labels[:45] == labels[10, 30]).mean() > 0.99


def test_transparent_pixels_of_an_rgba_png_are_nodata_whole_and_in_tiles(tmp_path):
    rgba = np.dstack([_blocks(), np.full((60, 100), 255, np.uint8)])
    rgba[10:20, 10:40, 3] = 0  # transparent
    rgba[40:50, 60:70, 3] = 128  # half transparent: data
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    whole, tiled = _labels(path, tmp_path / "whole", None), _labels(path, tmp_path / "tiled", 64)
    assert np.array_equal(whole, tiled)
    expected = rgba[..., 3] == 0
    assert np.array_equal(whole == 255, expected)
    assert np.array_equal(alpha_nodata(path), expected)
    assert alpha_nodata(tmp_path / "rgba.png", 6).shape == (100, 60)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    assert alpha_nodata(tmp_path / "rgb.png") is None  # no alpha channel: no nodata
