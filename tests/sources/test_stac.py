"""STAC items as scenes: assets read by range requests from a local server, bands chosen by common
name in any order, assets at 10 m and 20 m on one grid, bad items in one line."""

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from frugalvl.errors import UserError
from frugalvl.segment.scene import SceneSettings, open_scene, segment_scene
from frugalvl.testing.http import RangeHandler, serve_folder
from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene

COMMON = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08"}


def item_dict(assets, item_id="S2_TEST_ITEM"):
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[9, 50], [9.1, 50], [9.1, 50.1], [9, 50.1], [9, 50]]]},
        "bbox": [9, 50, 9.1, 50.1],
        "properties": {"datetime": "2024-06-01T10:00:00Z"},
        "links": [],
        "assets": assets,
    }


def eo(*names):
    return [{"name": COMMON.get(n, n), "common_name": n} for n in names]


def labels_of(result):
    with rasterio.open(result.labels) as src:
        return src.read(1), src.transform, src.crs


def test_item_over_http_equals_the_file_and_bands_by_name_in_another_order(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    scene = web / "scene.tif"
    write_test_scene(scene, 300, 260)
    with rasterio.open(scene) as src:
        rgb, profile = src.read(), src.profile
    # a 4-band asset stored as nir, blue, red, green
    nir = (rgb.astype(int).sum(0) // 3).astype(np.uint8)[None]
    with rasterio.open(web / "four.tif", "w", **{**profile, "count": 4}) as dst:
        dst.write(np.concatenate([nir, rgb[2:3], rgb[0:1], rgb[1:2]]))
    direct = segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "direct", tile=128)
    with serve_folder(web) as base:
        (web / "visual.json").write_text(
            json.dumps(item_dict({"visual": {"href": f"{base}/scene.tif", "eo:bands": eo("red", "green", "blue")}}))
        )
        (web / "four.json").write_text(
            json.dumps(item_dict({"data": {"href": "four.tif", "eo:bands": eo("nir", "blue", "red", "green")}}))
        )
        via_url = segment_scene(ColourSegmenter.with_classes(), f"{base}/visual.json", tmp_path / "url", tile=128)
        RangeHandler.requests_seen = []
        by_name = segment_scene(
            ColourSegmenter.with_classes(),
            web / "four.json",
            tmp_path / "four",
            tile=128,
            bands=("red", "green", "blue"),
        )
        assert RangeHandler.requests_seen == []  # a local item's relative href is a local file
        with pytest.raises(UserError, match="no band named 'swir16'"):
            segment_scene(
                ColourSegmenter.with_classes(), web / "four.json", tmp_path / "x", bands=("swir16", "red", "green")
            )
        with pytest.raises(UserError, match="cannot fetch STAC item"):
            segment_scene(ColourSegmenter.with_classes(), f"{base}/missing.json", tmp_path / "x")
    assert by_name.labels.name == "S2_TEST_ITEM.tif"  # a local item's id is its output stem
    expected, transform, crs = labels_of(direct)
    for result in (via_url, by_name):
        got, t, c = labels_of(result)
        assert np.array_equal(got, expected) and t == transform and c == crs
    assert not (tmp_path / "x").exists()


def write_band(path, value_fn, size, res, nodata=None):
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w]
    data = value_fn(yy * res, xx * res).astype(np.uint16)
    profile = dict(driver="GTiff", height=h, width=w, count=1, dtype="uint16", crs="EPSG:32632", tiled=True)
    profile.update(blockxsize=64, blockysize=64, transform=from_origin(500000, 5600000, res, res), nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])
    return data


def test_assets_at_10_and_20_m_on_one_grid_with_scale_and_offset(tmp_path):
    red = write_band(tmp_path / "B04.tif", lambda y, x: 1000 + x, 256, 10)
    write_band(tmp_path / "B03.tif", lambda y, x: 1000 + y, 256, 10)
    write_band(tmp_path / "B8A.tif", lambda y, x: 2000 + x + y, 128, 20)
    raster = [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]
    assets = {
        "B04": {"href": "B04.tif", "eo:bands": eo("red"), "raster:bands": raster},
        "B03": {"href": "B03.tif", "eo:bands": eo("green"), "raster:bands": raster},
        "B8A": {"href": "B8A.tif", "eo:bands": [{"name": "B8A", "common_name": "nir08"}], "raster:bands": raster},
    }
    item = tmp_path / "item.json"
    item.write_text(json.dumps(item_dict(assets)))
    settings = SceneSettings(bands=("nir08", "red", "green"))
    with open_scene(item, settings) as src:
        assert (src.height, src.width) == (256, 256) and src.transform == from_origin(500000, 5600000, 10, 10)
        assert src.dtypes[0] == "float32"
        data = src.read([1, 2])
        # red at 10 m is read as is, scaled: 0.0001 * DN - 0.1
        assert np.allclose(data[1], red * 0.0001 - 0.1, atol=1e-6)
        # nir08 at 20 m, bilinear: 2000 + (y - 10) + (x - 10) at a centre (y, x) in metres; 10 m pixel
        # (100, 60) is centred at (1005, 605) between four 20 m centres
        assert np.allclose(data[0][100, 60], (2000 + 995 + 595) * 0.0001 - 0.1, atol=2e-5)
    with open_scene(item, SceneSettings(bands=("nir08", "red", "green"), resolution=20.0)) as src:
        assert (src.height, src.width) == (128, 128)
    result = segment_scene(
        ColourSegmenter.with_classes(), item, tmp_path / "out", tile=128, bands=("nir08", "red", "green")
    )
    labels, transform, _ = labels_of(result)
    assert labels.shape == (256, 256) and transform.a == 10 and (labels != 255).all()


@pytest.mark.parametrize(
    "content,fragment",
    [
        ({"type": "Catalog", "id": "c", "links": []}, "is not a STAC item"),
        ({"type": "FeatureCollection", "features": []}, "without items"),
        ({"type": "FeatureCollection", "features": [{"type": "Feature"}]}, "is not a STAC item"),
        ("[1, 2]", "is not a STAC item"),
        ("{not json", "is not JSON"),
    ],
)
def test_json_that_is_not_an_item_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "thing.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(UserError, match=fragment):
        segment_scene(ColourSegmenter.with_classes(), path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_default_without_visual_is_red_green_blue_and_missing_asset_is_named(tmp_path):
    write_band(tmp_path / "B04.tif", lambda y, x: 1000 + x, 64, 10)
    assets = {"B04": {"href": "B04.tif", "eo:bands": eo("red")}}
    item = tmp_path / "item.json"
    item.write_text(json.dumps(item_dict(assets)))
    with pytest.raises(UserError, match="no band named 'green'"):
        open_scene(item, SceneSettings())
    with pytest.raises(UserError, match="no asset 'visual'"):
        open_scene(item, SceneSettings(assets=("visual",)))
    with open_scene(item, SceneSettings(assets=("B04",))) as src:
        assert src.count == 1 and src.descriptions == ("red",)


def test_an_item_collection_is_a_mosaic_in_its_order(tmp_path):
    scene = tmp_path / "scene.tif"
    write_test_scene(scene, 256, 256)
    with rasterio.open(scene) as src:
        full, profile = src.read(), src.profile
    other = full.copy()
    other[:, :, 96:160] = 255 - other[:, :, 96:160]  # the overlap differs between the two items

    def write(path, data, x0, x1):
        t = profile["transform"] * rasterio.Affine.translation(x0, 0)
        with rasterio.open(path, "w", **{**profile, "width": x1 - x0, "transform": t}) as dst:
            dst.write(data[:, :, x0:x1])

    write(tmp_path / "west.tif", full, 0, 160)
    write(tmp_path / "east.tif", other, 96, 256)
    write(tmp_path / "east_on_top.tif", other, 0, 256)
    with rasterio.open(tmp_path / "east_on_top.tif", "r+") as dst:
        dst.write(full[:, :, :96], window=rasterio.windows.Window(0, 0, 96, 256))
    west = item_dict({"visual": {"href": "west.tif"}}, "WEST")
    east = item_dict({"visual": {"href": "east.tif"}}, "EAST")
    for order, reference in (((west, east), scene), ((east, west), tmp_path / "east_on_top.tif")):
        (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": list(order)}))
        out = tmp_path / f"out_{order[0]['id']}"
        mosaic = segment_scene(ColourSegmenter.with_classes(), tmp_path / "items.json", out, tile=128)
        direct = segment_scene(ColourSegmenter.with_classes(), reference, tmp_path / f"ref_{order[0]['id']}", tile=128)
        assert mosaic.labels.name == "items.tif"
        got, t, _ = labels_of(mosaic)
        expected, t_ref, _ = labels_of(direct)
        assert t == t_ref and np.array_equal(got, expected)
