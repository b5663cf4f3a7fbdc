"""An area of interest on the scene path: a bbox or polygons in another CRS; the full run's labels
inside, nodata outside, tiles outside never read or segmented; bands by name."""

import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask

from frugalvl.errors import UserError
from frugalvl.segment.scene import SceneSettings, segment_scene
from frugalvl.sources.aoi import aligned_window, parse_bbox
from frugalvl.sources.bands import parse_bands, resolve_bands
from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene

X0, Y0, RES = 500000.0, 5600000.0, 0.5  # write_test_scene's origin and pixel size (EPSG:32632)


def read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.transform, src.crs


def write_polygon_4326(path, utm_polygon):
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[utm_polygon], crs="EPSG:32632").to_crs("EPSG:4326").to_file(path, driver="GeoJSON")


def test_aoi_polygon_in_another_crs_keeps_the_full_run_inside_and_nodata_outside(tmp_path):
    from shapely.geometry import Polygon

    scene = tmp_path / "scene.tif"
    write_test_scene(scene, 400, 380)
    full = segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "full", tile=128)
    # a diamond in the scene's CRS (pixel rows ~150..330, columns ~200..360), saved in EPSG:4326
    diamond = Polygon(
        [(X0 + 140.13, Y0 - 75.07), (X0 + 180.21, Y0 - 120.11), (X0 + 140.17, Y0 - 165.03), (X0 + 100.09, Y0 - 120.19)]
    )
    aoi = tmp_path / "aoi.geojson"
    write_polygon_4326(aoi, diamond)
    seg = ColourSegmenter.with_classes()
    part = segment_scene(seg, scene, tmp_path / "aoi", tile=128, aoi=str(aoi))
    labels, transform, crs = read(part.labels)
    full_labels, full_transform, full_crs = read(full.labels)
    assert crs == full_crs and transform.a == full_transform.a and transform.e == full_transform.e
    col0, row0 = (transform.c - X0) / RES, (Y0 - transform.f) / RES
    assert col0 == int(col0) and row0 == int(row0)  # on the scene's pixel grid
    r0, c0 = int(row0), int(col0)
    h, w = labels.shape
    inside = geometry_mask([diamond], out_shape=(h, w), transform=transform, invert=True)
    assert inside.sum() > 10000 and (~inside).sum() > 1000
    assert np.array_equal(labels[inside], full_labels[r0 : r0 + h, c0 : c0 + w][inside])
    assert (labels[~inside] == 255).all()
    # the crop holds whole tiles of the full grid: 2×2 of the 4×4 tiles (stride 96) meet the diamond
    assert part.tiles_run == len(seg.calls) < full.tiles_run
    assert sum(part.pixels.values()) == inside.sum()


def test_bbox_in_lonlat_crops_to_the_box(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    scene = tmp_path / "scene.tif"
    write_test_scene(scene, 300, 300)
    utm = box(X0 + 30.1, Y0 - 100.1, X0 + 90.1, Y0 - 40.1)  # rows 80..200, columns 60..180
    bbox = tuple(gpd.GeoSeries([utm], crs="EPSG:32632").to_crs("EPSG:4326").total_bounds)
    res = segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "out", tile=64, bbox=bbox)
    labels, transform, _ = read(res.labels)
    valid = labels != 255
    rows, cols = np.nonzero(valid)
    # the box's pixels (its lon/lat bounds are a little larger than the UTM box) and nothing far outside
    x_min, y_max = transform @ (cols.min(), rows.min())
    x_max, y_min = transform @ (cols.max() + 1, rows.max() + 1)
    assert abs(x_min - (X0 + 30.1)) < 3 and abs(x_max - (X0 + 90.1)) < 3
    assert abs(y_max - (Y0 - 40.1)) < 3 and abs(y_min - (Y0 - 100.1)) < 3


def test_aoi_that_misses_the_scene_is_one_line_and_writes_nothing(tmp_path):
    scene = tmp_path / "scene.tif"
    write_test_scene(scene, 128, 128)
    with pytest.raises(UserError, match="does not intersect"):
        segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "out", bbox=(10.0, 10.0, 10.1, 10.1))
    assert not (tmp_path / "out").exists()


def test_aligned_window_takes_whole_tiles_of_the_scene_grid():
    # 400 px, tile 128, overlap 32: starts 0, 96, 192, 272; cores [0,112) [112,208) [208,304) [304,400)
    assert aligned_window((150, 250, 0, 10), 400, 400, 128, 32) == (96, 0, 320 - 96, 128)
    assert aligned_window((390, 400, 390, 400), 400, 400, 128, 32) == (272, 272, 128, 128)
    assert aligned_window((5, 7, 5, 9), 400, 400, None, None) == (5, 5, 2, 4)


def test_bbox_and_band_parsing():
    assert parse_bbox("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)
    for bad in ("1,2,3", "3,2,1,4", "a,b,c,d"):
        with pytest.raises(ValueError):
            parse_bbox(bad)
    assert parse_bands("4,3,2") == (4, 3, 2) and parse_bands("Red,green,NIR") == ("red", "green", "nir")
    with pytest.raises(ValueError):
        parse_bands("red,,blue")


def test_bands_by_name_from_band_descriptions(tmp_path):
    scene = tmp_path / "scene.tif"
    write_test_scene(scene, 200, 200)
    with rasterio.open(scene) as src:
        data, profile = src.read(), src.profile
    shuffled = tmp_path / "bgr.tif"
    with rasterio.open(shuffled, "w", **profile) as dst:
        dst.write(data[::-1])
        dst.descriptions = ("Blue", "Green", "Red")
    with rasterio.open(shuffled) as src:
        assert resolve_bands(src, ("red", "green", "blue"), "bgr.tif") == [3, 2, 1]
        with pytest.raises(UserError, match="no band named 'nir'"):
            resolve_bands(src, ("nir", "red", "green"), "bgr.tif")
    a = segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "a", tile=128)
    b = segment_scene(
        ColourSegmenter.with_classes(), shuffled, tmp_path / "b", tile=128, bands=("red", "green", "blue")
    )
    assert np.array_equal(read(a.labels)[0], read(b.labels)[0])
    assert SceneSettings(bands=("red", "green", "blue")).needs_scene_path
