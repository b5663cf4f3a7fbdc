"""Round 3, class 7, beyond http(s) (test_promises.py): inputs read through GDAL's virtual files (``/vsicurl/``,
``s3://``, ``gs://``), tile services and WMTS sources are identified by their content, so a changed source at the same
address is never resumed with stale tiles nor reported done.

``/vsicurl/`` runs GDAL's real stat and read layer against the local range-request server; there is no
local S3, so ``s3://`` replaces that layer (:func:`frugalvl.sources.remote.vsi_stat`) with a stand-in
whose answers change like a re-uploaded object's.
"""

from __future__ import annotations

import hashlib
import os
import time

import cv2
import numpy as np
import pytest

from frugalvl.errors import UserError
from frugalvl.segment.scene import input_identity, scene_record, segment_scene
from frugalvl.segment.scene_settings import SceneSettings
from frugalvl.sources import remote
from frugalvl.testing.http import serve_folder
from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene
from tests.sources.test_wmts import WMTSHandler, wmts  # noqa: F401 - wmts: a fixture
from tests.sources.test_xyz import TX0, TY0, CountingHandler, Z, lonlat, tiles  # noqa: F401 - tiles: a fixture


def test_a_vsicurl_input_is_identified_by_size_and_first_bytes_through_gdal(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    scene = web / "scene.tif"
    write_test_scene(scene, 120, 120)
    with serve_folder(web) as base:
        path = f"/vsicurl/{base}/scene.tif"
        first = input_identity(path)
        head = scene.read_bytes()[: remote.HEAD_BYTES]
        assert first["url"] == path and first["size"] == scene.stat().st_size
        assert first["head_sha256"] == hashlib.sha256(head).hexdigest()
        assert remote.vsi_stat(path)["headers"]["content-length"] == str(scene.stat().st_size)  # GDAL's HEADERS
        assert "etag" in first and "last_modified" in first  # this server sends neither: None, still recorded
        assert input_identity(path) == first  # same content: same identity (a resume)
        write_test_scene(scene, 120, 120, nodata_box=(0, 40, 0, 40))  # same address, other content
        second = input_identity(path)
        assert second["head_sha256"] != first["head_sha256"]
        assert second["size"] == scene.stat().st_size


class FakeObjectStore:
    """What GDAL's ``/vsis3/`` layer would answer for one object, re-uploadable."""

    def __init__(self, body: bytes, etag: str) -> None:
        self.body, self.etag, self.asked = body, etag, []

    def __call__(self, path: str):
        self.asked.append(path)
        if path != "/vsis3/bucket/scenes/scene.tif":
            return None
        headers = {"etag": self.etag, "last-modified": "Mon, 07 Dec 2026 04:00:00 GMT"}
        return {"size": len(self.body), "headers": headers, "head": self.body[: remote.HEAD_BYTES]}


def test_an_s3_input_is_identified_by_etag_size_and_first_bytes(monkeypatch, tmp_path):
    store = FakeObjectStore(b"II*\0" + bytes(range(256)) * 300, '"v1"')
    monkeypatch.setattr(remote, "vsi_stat", store)
    url = "s3://bucket/scenes/scene.tif"
    first = input_identity(url)
    assert store.asked == ["/vsis3/bucket/scenes/scene.tif"]  # asked through GDAL's S3 layer
    assert first == {
        "url": url,
        "etag": '"v1"',
        "last_modified": "Mon, 07 Dec 2026 04:00:00 GMT",
        "size": len(store.body),
        "head_sha256": hashlib.sha256(store.body[: remote.HEAD_BYTES]).hexdigest(),
    }
    store.etag = '"v2"'  # re-uploaded, same bytes at the start: the ETag tells
    assert input_identity(url)["etag"] == '"v2"'
    store.body = b"II*\0" + bytes(300)  # other bytes, other size
    changed = input_identity(url)
    assert changed["size"] != first["size"] and changed["head_sha256"] != first["head_sha256"]
    # a record made before the change is not this run's: a scene would not resume from it
    record = scene_record(ColourSegmenter.with_classes(), url, SceneSettings())
    assert record["settings"]["input"] == changed != first
    assert input_identity("s3://bucket/missing.tif") == {"url": "s3://bucket/missing.tif"}  # no answer: address


def test_gs_and_vsi_paths_go_through_gdal_too(monkeypatch):
    asked = []
    monkeypatch.setattr(remote, "vsi_stat", lambda path: asked.append(path))
    for name in ("gs://b/k.tif", "/vsiaz/c/k.tif"):
        assert input_identity(name) == {"url": name}
    assert asked == ["/vsigs/b/k.tif", "/vsiaz/c/k.tif"]


def test_a_changed_tile_service_is_not_resumed_with_stale_tiles(tmp_path, tiles):  # noqa: F811 - the fixture
    url, image = tiles
    w, n = lonlat(20.5, 20.5)
    e, s = lonlat(1000.5, 1000.5)
    settings = dict(tile=256, bbox=(w, s, e, n), zoom=Z)
    out = tmp_path / "out"
    first = segment_scene(ColourSegmenter.with_classes(), url, out, **settings)
    assert first is not None
    record_input = scene_record(ColourSegmenter.with_classes(), url, SceneSettings(**settings))["settings"]["input"]
    probe = f"{Z}/{TX0 + 1}/{TY0 + 1}"  # the tile under the bbox centre (pixel 510.5 of the 4×4 block)
    assert record_input["probe"] == probe and record_input["size"] and record_input["last_modified"]
    gets = sum(CountingHandler.seen.values())
    assert segment_scene(ColourSegmenter.with_classes(), url, out, **settings) is None  # unchanged: done
    assert sum(CountingHandler.seen.values()) == gets  # the probe is a HEAD request: no tile fetched again
    # the service now serves other imagery at the probe tile
    web = tmp_path / "web"
    tile_path = web / str(Z) / str(TX0 + 1) / f"{TY0 + 1}.png"
    cv2.imwrite(str(tile_path), np.full((256, 256, 3), 255, np.uint8))
    later = time.time() + 5
    os.utime(tile_path, (later, later))
    with pytest.raises(UserError, match="made with other settings .*input"):
        segment_scene(ColourSegmenter.with_classes(), url, out, **settings)
    redone = segment_scene(ColourSegmenter.with_classes(), url, out, overwrite=True, **settings)
    assert redone is not None
    assert CountingHandler.seen[f"/{probe}.png"] == 2  # fetched again, not taken from the old run's cache


def test_a_wmts_source_is_identified_by_its_capabilities_without_fetching_them(tmp_path, wmts):  # noqa: F811
    base, _ = wmts
    name = f"wmts+{base}/caps.xml?layer=ortho&tilematrixset=UTM32"
    caps = tmp_path / "web" / "caps.xml"
    first = input_identity(name)
    assert first["url"] == name and first["capabilities"]["size"] == caps.stat().st_size
    assert first["capabilities"]["last_modified"]
    assert sum(WMTSHandler.seen.values()) == 0  # a HEAD request: the capabilities are not fetched for it
    caps.write_text(caps.read_text() + "\n<!-- new imagery -->\n")
    assert input_identity(name)["capabilities"]["size"] != first["capabilities"]["size"]
