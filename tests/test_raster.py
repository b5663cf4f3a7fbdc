import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.raster import find_images, read_class_names, read_image, write_labels, write_overlay, write_probs
from tests.conftest import EXAMPLES, landsat_file


def test_png_matches_opencv_decode(tmp_path):
    import cv2

    path = landsat_file(tmp_path)
    img = read_image(path)
    assert img.rgb.shape == (512, 512, 3) and img.rgb.dtype == np.uint8
    assert np.array_equal(img.rgb, cv2.imread(str(path))[..., ::-1])
    assert not img.georeferenced and img.nodata_mask is None


def test_geotiff_keeps_crs_transform_and_nodata():
    img = read_image(EXAMPLES / "landsat_rgb_byte.tif")
    assert img.georeferenced and img.crs.to_epsg() == 32618
    assert img.rgb.shape == (718, 791, 3)
    assert img.nodata_mask is not None and img.nodata_mask[0, 0] and not img.nodata_mask[359, 395]


def test_16bit_single_band_is_stretched_and_replicated(tmp_path):
    path = tmp_path / "pan.tif"
    data = np.arange(100 * 120, dtype=np.uint16).reshape(1, 100, 120) * 3
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=120,
        height=100,
        count=1,
        dtype="uint16",
        crs="EPSG:32616",
        transform=from_origin(0, 0, 0.5, 0.5),
    ) as dst:
        dst.write(data)
    img = read_image(path)
    assert img.rgb.shape == (100, 120, 3)
    assert np.array_equal(img.rgb[..., 0], img.rgb[..., 2])
    # 2nd/98th percentiles map to 0/255; values beyond are clipped
    assert img.rgb.min() == 0 and img.rgb.max() == 255
    assert img.rgb[0, 0, 0] == 0 and img.rgb[-1, -1, 0] == 255


def test_band_selection_errors(tmp_path):
    with pytest.raises(UserError, match="band"):
        read_image(EXAMPLES / "landsat_rgb_byte.tif", bands=[4, 3, 2])


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="not a valid image"):
        read_image(bad)
    bad_tif = tmp_path / "broken.tif"
    bad_tif.write_bytes(b"II*\x00garbage")
    with pytest.raises(UserError, match="cannot read"):
        read_image(bad_tif)
    with pytest.raises(UserError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(UserError, match="does not exist"):
        find_images([tmp_path / "nope"])


def test_write_labels_geotiff_round_trip(tmp_path):
    img = read_image(EXAMPLES / "landsat_rgb_byte.tif")
    labels = np.random.default_rng(0).integers(0, 3, img.rgb.shape[:2])
    path = write_labels(tmp_path, img, labels, ["a", "b", "c"])
    assert path.name == "landsat_rgb_byte.tif"
    with rasterio.open(path) as src:
        assert src.crs == img.crs and src.transform == img.transform
        out = src.read(1)
        assert src.nodata == 255
    assert np.all(out[img.nodata_mask] == 255)
    assert np.array_equal(out[~img.nodata_mask], labels[~img.nodata_mask])
    assert read_class_names(path) == ["a", "b", "c"]


def test_write_labels_png_and_probs_and_overlay(tmp_path):
    img = read_image(landsat_file(tmp_path / "in"))
    labels = np.zeros((512, 512), dtype=np.int64)
    labels[100:200] = 2
    path = write_labels(tmp_path, img, labels, ["x", "y", "z"])
    from PIL import Image

    assert path.suffix == ".png"
    assert np.array_equal(np.array(Image.open(path)), labels)
    assert json.loads(Image.open(path).text["class_names"]) == ["x", "y", "z"]
    probs = np.random.rand(3, 512, 512).astype(np.float32)
    assert np.array_equal(np.load(write_probs(tmp_path, img.stem, probs)), probs)
    overlay = Image.open(write_overlay(tmp_path, img, labels, ["x", "y", "z"]))
    assert overlay.height == 512 and overlay.width > 512  # legend on the right
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left


def test_huge_header_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(UserError, match="100000×100000"):
        read_image(bomb)
    big = tmp_path / "big.png"  # valid header above the whole-image limit: pointed to the tiled path
    big.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5000, 5000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    )
    with pytest.raises(UserError, match=r"in tiles \(tile 512\)") as err:
        read_image(big)
    assert "in tiles (--tile 512)" in render_error(err.value)


def test_urls_are_kept_and_named():
    from frugalvl.raster import input_name, input_stem, is_url

    url = "https://example.org/data/scene.cog.tif?token=1"
    assert find_images([url]) == [url] and is_url(url) and not is_url("scene.tif")
    assert input_name(url) == "scene.cog.tif" and input_stem(url) == "scene.cog"
    assert input_stem("/x/y/a.b.tif") == "a.b"


def test_probs_of_a_georeferenced_image_are_a_uint8_cog(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    from frugalvl.raster import write_probs_cog

    img = read_image(EXAMPLES / "landsat_rgb_byte.tif")
    scores = np.random.default_rng(0).random((2, *img.rgb.shape[:2])).astype(np.float32)
    path = write_probs_cog(tmp_path, img, scores, ["water", "land"])
    assert path.name == "landsat_rgb_byte_probs.tif" and cog_validate(str(path))[0]
    with rasterio.open(path) as src:
        assert src.crs == img.crs and src.transform == img.transform and src.descriptions == ("water", "land")
        assert np.array_equal(src.read(), np.rint(scores * 255).astype(np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
