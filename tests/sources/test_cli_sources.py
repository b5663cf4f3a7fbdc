"""``frugalvl segment`` with a STAC item, an area of interest and bands by name; bad sources in one line."""

import json

import numpy as np
import pytest
import rasterio

from frugalvl.cli import main
from frugalvl.testing.http import serve_folder
from frugalvl.testing.segmenters import write_test_scene
from tests.sources.test_stac import eo, item_dict


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def web(tmp_path):
    folder = tmp_path / "web"
    folder.mkdir()
    write_test_scene(folder / "scene.tif", 256, 256)
    with rasterio.open(folder / "scene.tif") as src:
        data, profile = src.read(), src.profile
    with rasterio.open(folder / "bgr.tif", "w", **profile) as dst:
        dst.write(data[::-1])
    assets = {"data": {"href": "bgr.tif", "eo:bands": eo("blue", "green", "red")}}
    (folder / "item.json").write_text(json.dumps(item_dict(assets, "ITEM_1")))
    return folder


def test_stac_item_with_bands_by_name_and_a_bbox(tmp_path, capsys, tiny_clip_file, web):
    common = ["-o", tmp_path / "o", "--classes", "a;b;c", "--clip", tiny_clip_file, "--no-progress", "--tile", "224"]
    code, out, err = run(capsys, "segment", web / "scene.tif", *common)
    assert code == 0, err
    # the same box in the scene's CRS: columns 40..200, rows 20..120 of the 0.5 m grid
    bbox = "500020,5599940,500100,5599990"
    code, out, err = run(
        capsys,
        "segment",
        web / "item.json",
        *common,
        "--bands",
        "red,green,blue",
        "--bbox",
        bbox,
        "--bbox-crs",
        "EPSG:32632",
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "o" / "scene.tif") as a, rasterio.open(tmp_path / "o" / "ITEM_1.tif") as b:
        full, part = a.read(1), b.read(1)
        col0, row0 = ~a.transform @ (b.transform.c, b.transform.f)
    r0, c0 = round(row0), round(col0)
    h, w = part.shape
    window = full[r0 : r0 + h, c0 : c0 + w]
    rows, cols = np.nonzero(part != 255)
    assert (rows.min() + r0, rows.max() + r0 + 1, cols.min() + c0, cols.max() + c0 + 1) == (20, 120, 40, 200)
    assert np.array_equal(part[part != 255], window[part != 255])


@pytest.mark.parametrize(
    "source,extra,fragment",
    [
        ("not_item.json", [], "is not a STAC item"),
        ("item.json", ["--bands", "nir,red,green"], "no band named 'nir'"),
        ("{base}/missing.json", [], "cannot fetch STAC item"),
        ("scene.tif", ["--bbox", "10,10,10.1,10.1"], "does not intersect"),
        ("item.json", ["--assets", "visual"], "no asset 'visual'"),
    ],
)
def test_bad_sources_are_one_line_exit_2_and_write_nothing(
    tmp_path, capsys, tiny_clip_file, web, source, extra, fragment
):
    (web / "not_item.json").write_text(json.dumps({"type": "Catalog", "id": "x", "links": []}))
    with serve_folder(web) as base:
        code, out, err = run(
            capsys,
            "segment",
            source.format(base=base) if source.startswith("{") else web / source,
            "-o",
            tmp_path / "o",
            "--classes",
            "a;b",
            "--clip",
            tiny_clip_file,
            "--no-progress",
            *extra,
        )
    assert code == 2 and fragment in out + err and "Traceback" not in out + err
    assert (
        not [p for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")] if (tmp_path / "o").exists() else True
    )


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--zoom", "30"], "--zoom 30 is out of range"),
        (["--zoom", "3"], "give a bbox"),
        (["--max-requests", "0"], "--max-requests 0 must be at least 1"),
        (["--aoi", "missing.geojson"], "--aoi missing.geojson does not exist"),
    ],
)
def test_tile_service_bad_options_are_one_line_exit_2(tmp_path, capsys, tiny_clip_file, extra, fragment):
    url = "xyz+http://127.0.0.1:9/{z}/{x}/{y}.png"
    args = ["-o", tmp_path / "o", "--classes", "a;b", "--clip", tiny_clip_file, "--no-progress", *extra]
    code, out, err = run(capsys, "segment", url, *args)
    assert code == 2 and fragment in out + err and "Traceback" not in out + err
    assert not (tmp_path / "o").exists() or not [p for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")]
