"""Round 3, class 11: the docs' promises hold: vector files rewritten (a resumed run) are byte-identical (segment's
and change's),
and a byte-order mark is not part of the first class of a class file."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from frugalvl.vectors import write_vectors
from frugalvl.vocab import Vocabulary


def test_a_geopackage_written_twice_is_byte_identical(tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 5:40] = 1
    labels[40:60, 30:60] = 2
    src = tmp_path / "l.tif"
    profile = dict(driver="GTiff", height=64, width=64, count=1, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(src, "w", transform=from_origin(500000, 4000000, 1, 1), **profile) as dst:
        dst.write(labels, 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_vectors(src, tmp_path / "a" / "scene.gpkg", ["x", "y", "z"]).read_bytes()
    time.sleep(1.1)  # GeoPackages carry a last-change timestamp (seconds and more)
    second = write_vectors(src, tmp_path / "b" / "scene.gpkg", ["x", "y", "z"]).read_bytes()
    assert first == second


def test_the_change_polygons_written_twice_are_byte_identical(tmp_path):
    """`frugalvl change --semantic`'s GeoPackage too (a resumed pair rewrites it)."""
    from frugalvl.change.semantic import write_polygons

    codes = np.zeros((64, 64), np.uint16)
    codes[10:30, 5:40] = 1 * 3 + 2  # from class 1 to class 2
    codes[40:60, 30:60] = 2 * 3 + 0
    src = tmp_path / "fromto.tif"
    profile = dict(driver="GTiff", height=64, width=64, count=1, dtype="uint16", crs="EPSG:32633")
    with rasterio.open(src, "w", transform=from_origin(500000, 4000000, 1, 1), **profile) as dst:
        dst.write(codes, 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_polygons(src, tmp_path / "a" / "s_change.gpkg", ["x", "y", "z"]).read_bytes()
    time.sleep(1.1)
    second = write_polygons(src, tmp_path / "b" / "s_change.gpkg", ["x", "y", "z"]).read_bytes()
    assert first == second


@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b""])
def test_a_byte_order_mark_is_stripped_from_a_class_file(tmp_path, bom):
    path = tmp_path / "classes.txt"
    path.write_bytes(bom + b"water,river\nbuilding\n")
    vocab = Vocabulary.from_file(path)
    assert vocab.names == ["water", "building"]


def test_a_changed_remote_input_is_not_reused(tmp_path):
    """Round 3, class 7: a URL input is identified by content; a changed file at the same address is
    recognised like a changed local file (the run stops and names the difference, overwrite redoes it)."""
    from frugalvl.errors import UserError
    from frugalvl.segment.scene import remote_identity, segment_scene
    from frugalvl.testing.http import serve_folder
    from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene

    web = tmp_path / "web"
    web.mkdir()
    scene = web / "scene.tif"
    write_test_scene(scene, 200, 200)
    out = tmp_path / "out"
    with serve_folder(web) as base:
        url = f"{base}/scene.tif"
        first = remote_identity(url)
        assert first["size"] == scene.stat().st_size and len(first["head_sha256"]) == 64
        assert segment_scene(ColourSegmenter.with_classes(), url, out, tile=128) is not None
        assert segment_scene(ColourSegmenter.with_classes(), url, out, tile=128) is None  # unchanged: done
        write_test_scene(scene, 200, 200, nodata_box=(0, 50, 0, 50))  # same address, other content
        assert remote_identity(url)["head_sha256"] != first["head_sha256"]
        with pytest.raises(UserError, match="made with other settings"):
            segment_scene(ColourSegmenter.with_classes(), url, out, tile=128)
        changed = remote_identity(url)
        assert segment_scene(ColourSegmenter.with_classes(), url, out, tile=128, overwrite=True) is not None
    record = json.loads((out / "scene_run.json").read_text())
    assert record["settings"]["input"] == changed
