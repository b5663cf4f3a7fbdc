"""Round 3, class 8: labels that are never silently wrong.

NaN pixels are nodata (and never poison the stretch); the label nodata value lies outside the vocabulary
(65535 for uint16 maps) and is written in the file; areas are in m² for every CRS (geodesic for
geographic ones).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from frugalvl.areas import class_areas, row_areas
from frugalvl.cli import main
from frugalvl.raster import RasterImage, nodata_label, read_image, write_labels
from frugalvl.vectors import write_vectors


def _float_tif(path, data: np.ndarray, crs="EPSG:32633", transform=None, nodata=None):
    transform = transform or from_origin(500000, 4000000, 10, 10)
    profile = dict(
        driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype.name
    )
    profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _bands(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(4)
    return (rng.random((3, h, w)) * 1000 + 50).astype(np.float32)


def test_nan_pixels_are_nodata_and_do_not_poison_the_stretch(tmp_path):
    """The issue's case: a NaN block made the stretch NaN and the whole image background."""
    data = _bands()
    with_nan = data.copy()
    with_nan[:, :, 32:] = np.nan  # the right half has no data
    with_nan[1, 5, 3] = np.inf  # one pixel, one band
    a = read_image(_float_tif(tmp_path / "nan.tif", with_nan))
    # independent expectation: the same valid pixels alone, written without the NaN half
    b_data = data[:, :, :32].copy()
    b_data[:, 5, 3] = 0.0
    b = read_image(_float_tif(tmp_path / "left.tif", b_data, nodata=0.0))
    expected_mask = np.zeros((48, 64), bool)
    expected_mask[:, 32:] = True
    expected_mask[5, 3] = True
    assert a.nodata_mask is not None and np.array_equal(a.nodata_mask, expected_mask)
    valid = ~expected_mask[:, :32]
    assert np.array_equal(a.rgb[:, :32][valid], b.rgb[valid])
    assert a.rgb[:, :32][valid].std() > 10  # a real stretch, not a constant image


@pytest.mark.parametrize("tile", [None, "224"])
def test_segment_labels_nan_pixels_as_nodata_with_and_without_tiles(tmp_path, tiny_clip_file, capsys, tile):
    data = _bands(64, 64)
    data[:, 40:, :] = np.nan
    img = _float_tif(tmp_path / "scene.tif", data)
    out = tmp_path / "out"
    args = ["segment", str(img), "-o", str(out), "--classes", "water;land", "--clip", str(tiny_clip_file)]
    assert main([*args, "--no-progress", *(["--tile", tile] if tile else [])]) == 0, capsys.readouterr()
    with rasterio.open(out / "scene.tif") as src:
        labels = src.read(1)
        assert src.nodata == 255
    assert np.all(labels[40:] == 255) and np.all(labels[:40] < 2)


def test_label_nodata_lies_outside_a_vocabulary_of_300_classes(tmp_path):
    """The issue's case: with 256+ classes nodata 255 collided with class 255."""
    names = [f"c{i}" for i in range(300)]
    assert nodata_label(2) == 255 and nodata_label(254) == 255 and nodata_label(255) == 65535
    labels = np.full((20, 30), 255, np.int64)  # class 255 everywhere...
    labels[:, 20:] = 299
    mask = np.zeros((20, 30), bool)
    mask[:5] = True  # ... but the top rows have no data
    image = RasterImage(rgb=np.zeros((20, 30, 3), np.uint8), path=tmp_path / "x.tif", crs=rasterio.CRS.from_epsg(32633))
    image.transform = from_origin(0, 0, 1, 1)
    image.nodata_mask = mask
    path = write_labels(tmp_path, image, labels, names)
    with rasterio.open(path) as src:
        got, nodata = src.read(1), src.nodata
    assert got.dtype == np.uint16 and nodata == 65535
    assert np.all(got[:5] == 65535) and np.all(got[5:, :20] == 255) and np.all(got[5:, 20:] == 299)
    vec = write_vectors(path, tmp_path / "x.geojson", names)
    classes = sorted(f["properties"]["class_index"] for f in json.loads(vec.read_text())["features"])
    assert classes == [255, 299]
    # without a nodata mask a uint16 map still declares its nodata value (a PNG in its text chunk)
    image.crs = image.transform = None
    image.nodata_mask = None
    png = write_labels(tmp_path, image, labels, names)
    from PIL import Image

    assert Image.open(png).text["nodata"] == "65535"


def _band_area(lat1: float, lat2: float, dlon: float, a: float = 6378137.0, f: float = 1 / 298.257223563) -> float:
    """Area of a lat/lon cell on an ellipsoid, from the closed form of the authalic integral."""
    e2 = f * (2 - f)
    e = math.sqrt(e2)
    b2 = a * a * (1 - e2)

    def q(phi: float) -> float:
        s = math.sin(math.radians(phi))
        return s / (1 - e2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return abs(b2 / 2 * (q(lat2) - q(lat1)) * math.radians(dlon))


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0])
def test_geographic_pixel_areas_are_geodesic_m2(lat):
    t = from_origin(10.0, lat + 0.5, 0.01, 0.01)  # north-up, 0.01° pixels
    per_row, unit = row_areas(t, rasterio.CRS.from_epsg(4326), 0, 50)
    assert unit == "m²"
    for r in (0, 25, 49):
        top = lat + 0.5 - 0.01 * r
        assert per_row[r] == pytest.approx(_band_area(top - 0.01, top, 0.01), rel=1e-6)


def test_projected_areas_in_feet_are_converted_to_m2():
    crs = rasterio.CRS.from_epsg(2227)  # California zone 3, US survey feet
    per_row, unit = row_areas(from_origin(0, 0, 10, 10), crs, 0, 3)
    assert unit == "m²" and per_row[0] == pytest.approx(100 * (1200 / 3937) ** 2, rel=1e-9)


def test_class_areas_sum_row_areas():
    labels = np.array([[0, 1, 255], [1, 1, 0]])
    assert class_areas(labels, None, 2, np.array([2.0, 3.0])) == {0: 5.0, 1: 8.0}


def test_segment_table_gives_m2_and_ha_for_epsg_4326(tmp_path, tiny_clip_file, capsys):
    """The issue's case: the table said 0.0 (degrees²) for an EPSG:4326 input."""
    data = (np.random.default_rng(1).random((3, 40, 40)) * 255).astype(np.uint8)
    t = from_origin(5.0, 45.0, 0.0001, 0.0001)
    img = tmp_path / "geo.tif"
    with rasterio.open(
        img, "w", driver="GTiff", height=40, width=40, count=3, dtype="uint8", crs="EPSG:4326", transform=t
    ) as d:
        d.write(data)
    assert (
        main(
            [
                "segment",
                str(img),
                "-o",
                str(tmp_path / "o"),
                "--classes",
                "a;b",
                "--clip",
                str(tiny_clip_file),
                "--no-progress",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert "area m²" in table[0] and "ha" in table[0]
    total = sum(float(line.split()[3]) for line in table[1:3])
    expected = sum(_band_area(45.0 - 0.0001 * (r + 1), 45.0 - 0.0001 * r, 0.0001) for r in range(40)) * 40
    assert total == pytest.approx(expected, rel=1e-3)  # the table prints 0.1 m² steps
