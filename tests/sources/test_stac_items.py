"""Several STAC items as one mosaic (a Python list, a list file, ``--stac-items``), and a remote
item's id as its output stem."""

import json

import numpy as np
import pytest
import rasterio

from frugalvl.cli import main
from frugalvl.errors import UserError
from frugalvl.raster import input_stem
from frugalvl.segment.scene import input_identity, segment_scene
from frugalvl.sources.stac import items_source, mosaic_members
from frugalvl.testing.http import serve_folder
from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene
from tests.sources.test_stac import item_dict, labels_of


@pytest.fixture
def halves(tmp_path):
    """A scene 256 px wide and two items, each the GeoTIFF of one half (west: columns 0..100, east: 100..256)."""
    web = tmp_path / "web"
    web.mkdir()
    write_test_scene(web / "scene.tif", 200, 256)
    with rasterio.open(web / "scene.tif") as src:
        full, profile = src.read(), src.profile
    for name, x0, x1 in (("west", 0, 100), ("east", 100, 256)):
        t = profile["transform"] @ rasterio.Affine.translation(x0, 0)
        with rasterio.open(web / f"{name}.tif", "w", **{**profile, "width": x1 - x0, "transform": t}) as dst:
            dst.write(full[:, :, x0:x1])
        (web / f"{name}.json").write_text(json.dumps(item_dict({"visual": {"href": f"{name}.tif"}}, name.upper())))
    return web


def test_two_items_over_two_halves_equal_the_whole_file(tmp_path, halves):
    whole = segment_scene(ColourSegmenter.with_classes(), halves / "scene.tif", tmp_path / "whole", tile=128)
    expected, transform, crs = labels_of(whole)
    (halves / "both.json").write_text(json.dumps(["west.json", "east.json"]))  # a list file, relative paths
    as_list = segment_scene(
        ColourSegmenter.with_classes(), [halves / "west.json", halves / "east.json"], tmp_path / "list", tile=128
    )
    as_file = segment_scene(ColourSegmenter.with_classes(), halves / "both.json", tmp_path / "file", tile=128)
    assert as_list.labels.name == "WEST_mosaic2.tif"  # the first item's id, and how many items
    assert as_file.labels.name == "both.tif"
    for result in (as_list, as_file):
        got, t, c = labels_of(result)
        assert got.shape == expected.shape and t == transform and c == crs
        assert np.array_equal(got, expected) and (got != 255).all()


def test_stac_items_flag_over_http_and_the_remote_id_as_stem(tmp_path, capsys, tiny_clip_file, halves):
    common = ["-o", tmp_path / "o", "--classes", "a;b;c", "--clip", tiny_clip_file, "--no-progress", "--tile", "224"]
    with serve_folder(halves) as base:
        west, east = f"{base}/west.json", f"{base}/east.json"
        assert input_stem(west) == "WEST"  # the item's id, not the URL's file name
        assert input_stem(f"{base}/missing.json") == "missing"  # no item there: the file name
        code = main([str(a) for a in ["segment", halves / "scene.tif", *common]])
        assert code == 0, capsys.readouterr().err
        code = main([str(a) for a in ["segment", east, "--stac-items", west, east, *common]])
        _, err = capsys.readouterr()
        assert code == 0, err
        ident = input_identity(items_source([west, east]))
        assert [i["url"] for i in ident["stac_items"]] == [west, east] and ident["stac_items"][0]["head_sha256"]
    with rasterio.open(tmp_path / "o" / "scene.tif") as a, rasterio.open(tmp_path / "o" / "WEST_mosaic2.tif") as b:
        assert a.transform == b.transform and np.array_equal(a.read(1), b.read(1))
    with rasterio.open(tmp_path / "o" / "EAST.tif") as east_only:  # the east item alone, as its id
        assert east_only.width == 156 and (east_only.read(1) != 255).all()


def test_bad_item_lists_are_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="no STAC items given"):
        items_source([])
    with pytest.raises(UserError, match="is not a list of STAC items"):
        mosaic_members("stac-items:[1, 2]")
    with pytest.raises(UserError, match="does not exist"):
        segment_scene(ColourSegmenter.with_classes(), [tmp_path / "nope.json"], tmp_path / "out")
    assert main(["segment", "-o", str(tmp_path / "o"), "--classes", "a;b"]) == 2
    assert "give inputs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
