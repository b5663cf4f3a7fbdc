"""``segment --exemplars``: vector files in pixel or map coordinates, prototype files, the run record,
and bad inputs as one line with exit 2 (docs/methods/exemplars.md)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from shapely.geometry import Point, Polygon, box

from frugalvl.cli import main
from frugalvl.errors import UserError
from frugalvl.segment.exemplars import load_exemplar_file, read_exemplars
from tests.conftest import EXAMPLES, landsat_file

TIF = EXAMPLES / "landsat_rgb_byte.tif"


def run(capsys, *args):
    capsys.readouterr()  # only this command's output (writing the test files may warn)
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write(path, geometries, crs=None, **columns):
    gpd.GeoDataFrame(columns, geometry=list(geometries), crs=crs).to_file(path)
    return path


def map_box(col0, row0, col1, row1):
    """A box given in pixels of the example GeoTIFF, in its map coordinates."""
    with rasterio.open(TIF) as src:
        (x0, y0), (x1, y1) = src.transform * (col0, row0), src.transform * (col1, row1)
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), src.crs


def test_pixel_exemplars_on_a_png_add_a_class_and_rerun_when_changed(tmp_path, capsys, tiny_clip_file):
    img = landsat_file(tmp_path / "in")
    ex = write(
        tmp_path / "ex.geojson", [box(10, 10, 60, 40), box(100, 100, 130, 120)], **{"class": ["solar panel", "land"]}
    )
    protos = tmp_path / "p.npz"
    args = [
        "segment",
        img,
        "-o",
        tmp_path / "out",
        "--classes",
        "water;land",
        "--clip",
        tiny_clip_file,
        "--no-progress",
    ]
    code, out, err = run(capsys, *args, "--exemplars", ex, "--save-prototypes", protos)
    assert code == 0, err
    stem = img.stem
    names = json.loads(Image.open(tmp_path / "out" / f"{stem}.png").text["class_names"])
    assert names == ["water", "land", "solar panel"]
    record = json.loads((tmp_path / "out" / f"{stem}_run.json").read_text())
    source = record["segmenter"]["prototypes"]["source"]
    assert source["file"] == str(ex) and [e[:2] for e in source["examples"]] == [["solar panel", True], ["land", True]]
    assert record["segmenter"]["queries"] == ["water", "land"]  # the example-only class has no text query
    assert protos.is_file()
    code, out, _ = run(capsys, *args, "--exemplars", ex)
    assert code == 0 and "0 segmented, 1 already done" in out  # same exemplars: nothing to redo
    write(ex, [box(10, 10, 60, 41), box(100, 100, 130, 120)], **{"class": ["solar panel", "land"]})
    code, out, err = run(capsys, *args, "--exemplars", ex)
    assert code == 2 and "overwrite" in err  # a changed exemplar file changes the record
    # the saved prototypes apply to another image and give the same classes
    other = landsat_file(tmp_path / "in2", "other.png")
    code, _, err = run(
        capsys,
        "segment",
        other,
        "-o",
        tmp_path / "out2",
        "--classes",
        "water;land",
        "--clip",
        tiny_clip_file,
        "--no-progress",
        "--exemplars",
        protos,
    )
    assert code == 0, err
    assert json.loads(Image.open(tmp_path / "out2" / "other.png").text["class_names"])[-1] == "solar panel"


def test_map_exemplars_on_a_geotiff(tmp_path, capsys, tiny_clip_file):
    geom, crs = map_box(20, 20, 60, 50)
    ex = write(tmp_path / "ex.gpkg", [geom], crs=crs, **{"class": ["cloud"], "positive": [True]})
    code, _, err = run(
        capsys,
        "segment",
        TIF,
        "-o",
        tmp_path,
        "--classes",
        "water;land",
        "--clip",
        tiny_clip_file,
        "--no-progress",
        "--exemplars",
        ex,
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "landsat_rgb_byte.tif") as out:
        assert out.read(1)[out.read(1) != 255].max() <= 2
    read = read_exemplars(ex, *rasterio.open(TIF).shape, crs, rasterio.open(TIF).transform)
    assert [round(v) for v in read.items[0].box] == [20, 20, 60, 50]


def _bad(tmp_path, kind):
    img_shape = (512, 512)
    if kind == "outside":
        return write(tmp_path / "e.geojson", [box(600, 600, 700, 700)], **{"class": ["a"]}), "outside"
    if kind == "no class":
        return write(tmp_path / "e.geojson", [box(1, 1, 9, 9)], name=["a"]), "no 'class' attribute"
    if kind == "empty polygon":
        return write(tmp_path / "e.geojson", [Polygon([(1, 1), (5, 5), (9, 9)])], **{"class": ["a"]}), "empty polygon"
    if kind == "point":
        return write(tmp_path / "e.geojson", [Point(3, 3)], **{"class": ["a"]}), "draw a box"
    if kind == "crs on a png":
        return write(tmp_path / "e.gpkg", [box(1, 1, 9, 9)], crs="EPSG:32633", **{"class": ["a"]}), "not georeferenced"
    assert img_shape
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["outside", "no class", "empty polygon", "point", "crs on a png"])
def test_bad_exemplars_are_one_line_exit_2(tmp_path, capsys, tiny_clip_file, kind):
    img = landsat_file(tmp_path / "in")
    ex, fragment = _bad(tmp_path, kind)
    code, _, err = run(
        capsys,
        "segment",
        img,
        "-o",
        tmp_path / "o",
        "--classes",
        "a;b",
        "--clip",
        tiny_clip_file,
        "--no-progress",
        "--exemplars",
        ex,
    )
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_crs_on_a_geotiff_is_one_line(tmp_path, capsys, tiny_clip_file):
    ex = write(tmp_path / "e.gpkg", [box(1, 1, 9, 9)], **{"class": ["a"]})
    code, _, err = run(
        capsys,
        "segment",
        TIF,
        "-o",
        tmp_path / "o",
        "--classes",
        "a;b",
        "--clip",
        tiny_clip_file,
        "--no-progress",
        "--exemplars",
        ex,
    )
    assert code == 2 and "has no CRS" in err and len(err.strip().splitlines()) == 1


def test_positive_attribute_and_bad_values(tmp_path):
    ex = write(
        tmp_path / "e.geojson", [box(1, 1, 9, 9)] * 3, **{"class": ["a", "a", "b"], "positive": ["true", "0", None]}
    )
    assert load_exemplar_file(ex).positive == (True, False, True)
    bad = write(tmp_path / "f.geojson", [box(1, 1, 9, 9)], **{"class": ["a"], "positive": ["maybe"]})
    with pytest.raises(UserError, match="true or false"):
        load_exemplar_file(bad)
    assert np.array_equal(read_exemplars(ex, 20, 20).items[0].mask(20, 20)[1:9, 1:9], np.ones((8, 8), bool))


def test_scene_path_prototypes_come_from_the_tile_holding_each_exemplar(tmp_path, tiny_clip_model):
    """One tile covering the scene gives the image path's prototypes (same pixels, same stretch); with
    small tiles each exemplar is placed in the tile holding it, in that tile's frame."""
    from frugalvl.segment.exemplars_run import attach_exemplars, place
    from frugalvl.segment.scene_settings import SceneSettings, SegmentRunSettings
    from frugalvl.segment.segearth_ov import SegEarthOV
    from frugalvl.vocab import Vocabulary

    with rasterio.open(TIF) as src:
        h, w = src.shape
    g1, crs = map_box(20, 20, 60, 50)
    g2, _ = map_box(w - 60, h - 50, w - 20, h - 20)
    ex = write(tmp_path / "ex.gpkg", [g1, g2], crs=crs, **{"class": ["cloud", "water"]})
    seg = SegEarthOV(tiny_clip_model, Vocabulary.parse("water;land", strip="newline"))
    image = attach_exemplars(seg, ex, [TIF], SegmentRunSettings())
    whole = SegmentRunSettings(scene=SceneSettings(tile=max(h, w)), tile_all=True)
    scene = attach_exemplars(seg, ex, [TIF], whole)
    assert np.allclose(scene.prototypes.vectors, image.prototypes.vectors, atol=1e-5)
    from frugalvl.segment.exemplars import load_exemplar_file

    tiled = SegmentRunSettings(scene=SceneSettings(tile=256, overlap=0), tile_all=True)
    (placed,) = place(load_exemplar_file(ex), [TIF], tiled)
    (first, rgb1), (second, rgb2) = placed.parts
    assert [round(v) for v in first.items[0].box] == [20, 20, 60, 50] and rgb1.shape[:2] == (256, 256)
    x0, y0, x1, y1 = (round(v) for v in second.items[0].box)
    assert (x1 - x0, y1 - y0) == (40, 30) and rgb2.shape[:2] == (second.height, second.width)
    ox, oy = w - 60 - x0, h - 50 - y0  # the tile's offset: the box is whole inside it
    assert ox > 0 and oy > 0 and x1 <= second.width and y1 <= second.height
    with rasterio.open(TIF) as src:  # the tile's pixels are the scene's at that offset
        band = src.read(1, window=((oy, oy + second.height), (ox, ox + second.width)))
    assert np.corrcoef(band.ravel().astype(float), rgb2[..., 0].ravel().astype(float))[0, 1] > 0.99


def test_exemplar_outside_the_area_of_interest_is_one_line(tmp_path, capsys, tiny_clip_file):
    with rasterio.open(TIF) as src:
        h, w, crs = src.height, src.width, src.crs
    aoi, _ = map_box(0, 0, w // 2, h // 2)
    inside, _ = map_box(10, 10, 40, 40)
    outside, _ = map_box(w - 40, h - 40, w - 10, h - 10)  # in the image, not in the area of interest
    bbox = ",".join(str(v) for v in aoi.bounds)
    common = ["segment", TIF, "--classes", "a;b", "--clip", tiny_clip_file, "--no-progress"]
    common += ["--bbox", bbox, "--bbox-crs", crs.to_string()]
    ok = write(tmp_path / "in.gpkg", [inside], crs=crs, **{"class": ["a"]})
    code, _, err = run(capsys, *common, "-o", tmp_path / "o1", "--exemplars", ok)
    assert code == 0, err
    bad = write(tmp_path / "out.gpkg", [inside, outside], crs=crs, **{"class": ["a", "b"]})
    code, _, err = run(capsys, *common, "-o", tmp_path / "o2", "--exemplars", bad)
    assert code == 2 and "exemplar 1 of" in err and "outside" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (
            ["--save-prototypes", "p.npz"],
            "--save-prototypes FILE and --exemplar-tokens-everywhere need --exemplars FILE",
        ),
        (
            ["--exemplars", "{ex}", "--exemplar-tokens-everywhere"],
            "--exemplar-tokens-everywhere applies to SegEarth-OV3",
        ),
        (["--exemplars", "missing.gpkg"], "does not exist"),
    ],
)
def test_exemplar_options_checked_before_the_model_loads(tmp_path, capsys, extra, fragment):
    img = landsat_file(tmp_path / "in")
    ex = write(tmp_path / "e.gpkg", [box(1, 1, 9, 9)], **{"class": ["a"]})
    extra = [a.format(ex=ex) for a in extra]
    args = ["segment", img, "-o", tmp_path / "o", "--classes", "a;b", "--clip", tmp_path / "no-such-clip.pt"]
    code, _, err = run(capsys, *args, "--no-progress", *extra)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
