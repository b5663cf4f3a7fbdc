"""Class polygons: rasterised back they give the label raster; merged across bands; min-area; formats."""

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.transform import from_origin

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.vectors import polygonize, write_vectors


@pytest.fixture()
def label_tif(tmp_path):
    rng = np.random.default_rng(1)
    import cv2

    small = rng.integers(0, 4, (12, 10)).astype(np.uint8)
    labels = cv2.resize(small, (100, 120), interpolation=cv2.INTER_NEAREST)
    labels[5:9, 5:9] = 3  # a 16 px speck
    labels[100:, :20] = 255  # nodata
    path = tmp_path / "labels.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=120,
        width=100,
        count=1,
        dtype="uint8",
        nodata=255,
        crs="EPSG:32632",
        transform=from_origin(1000, 2000, 2.0, 2.0),
    ) as dst:
        dst.write(labels, 1)
    return path, labels


def test_polygons_rasterise_back_to_the_labels(tmp_path, label_tif):
    path, labels = label_tif
    out = write_vectors(path, tmp_path / "v.gpkg", ["a", "b", "c", "d"])
    frame = pyogrio.read_dataframe(out)
    assert set(frame["class"]) == {"a", "b", "c", "d"} and frame.crs.to_epsg() == 32632
    t = from_origin(1000, 2000, 2.0, 2.0)
    back = rasterize(
        zip(frame.geometry, frame["class_index"]), out_shape=labels.shape, transform=t, fill=255, dtype="uint8"
    )
    assert np.array_equal(back, labels)
    # areas: polygon area = pixel count × 4 m² per class
    for c in range(4):
        assert frame.loc[frame.class_index == c, "area"].sum() == pytest.approx(4.0 * (labels == c).sum())


def test_polygons_crossing_band_borders_are_merged(label_tif):
    path, _ = label_tif
    with rasterio.open(path) as src:
        whole = sorted((c, round(g.area), g.bounds) for c, g in polygonize(src, band_rows=1000))
        banded = sorted((c, round(g.area), g.bounds) for c, g in polygonize(src, band_rows=7))
    assert whole == banded


def test_min_area_simplify_and_formats(tmp_path, label_tif):
    path, labels = label_tif
    full = pyogrio.read_dataframe(write_vectors(path, tmp_path / "a.gpkg", ["a", "b", "c", "d"]))
    big = pyogrio.read_dataframe(write_vectors(path, tmp_path / "b.geojson", ["a", "b", "c", "d"], min_area=100.0))
    assert len(big) < len(full) and (big["area"] >= 100).all()
    assert full["area"].min() < 100
    simple = pyogrio.read_dataframe(write_vectors(path, tmp_path / "c.gpkg", ["a", "b", "c", "d"], simplify=3.0))
    assert simple.geometry.is_valid.all() and len(simple) == len(full)
    import geopandas as gpd

    pq = gpd.read_parquet(write_vectors(path, tmp_path / "d.parquet", ["a", "b", "c", "d"]))
    assert len(pq) == len(full) and pq.crs.to_epsg() == 32632
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    with pytest.raises(UserError, match="^min_area -1 must be zero or positive") as err:
        write_vectors(path, tmp_path / "e.gpkg", ["a"], min_area=-1)
    assert render_error(err.value).startswith("--min-area -1 ")
