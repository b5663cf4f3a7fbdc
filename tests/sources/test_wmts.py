"""WMTS services: a local server (capabilities + 256² PNG tiles cut by the test from a UTM image, RESTful
and KVP), the georeference of the tile matrix, refused tiles as nodata (one line each), a resumed run
fetching nothing twice, the tile matrix chosen by zoom or resolution, bad capabilities in one line."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pytest
import rasterio

from frugalvl.errors import UserError
from frugalvl.raster import input_stem
from frugalvl.segment.scene import SceneSettings, open_scene, segment_scene
from frugalvl.testing.segmenters import ColourSegmenter

X0, Y0 = 500000.0, 5600000.0  # top-left corner of the tile matrix set (EPSG:32632)
N = 4  # tiles per side at matrix "1" (0.5 m); 2 at matrix "0" (1 m)
REFUSED = {(1, 2): 404, (2, 1): "html"}  # (col, row) of matrix "1"

CAPABILITIES = """<?xml version="1.0" encoding="UTF-8"?>
<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1"
  xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">
 <ows:OperationsMetadata><ows:Operation name="GetTile"><ows:DCP><ows:HTTP>
  <ows:Get xlink:href="{base}/wmts?"/></ows:HTTP></ows:DCP></ows:Operation></ows:OperationsMetadata>
 <Contents>
  <Layer><ows:Identifier>ortho</ows:Identifier><Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>
   <Format>image/png</Format><TileMatrixSetLink><TileMatrixSet>UTM32</TileMatrixSet></TileMatrixSetLink>
   <ResourceURL format="image/png" resourceType="tile" template="{base}/rest/{{Layer}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"/>
  </Layer>
  <Layer><ows:Identifier>ortho_kvp</ows:Identifier><Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>
   <Format>image/png</Format><TileMatrixSetLink><TileMatrixSet>UTM32</TileMatrixSet></TileMatrixSetLink>
   <TileMatrixSetLink><TileMatrixSet>other</TileMatrixSet></TileMatrixSetLink>
  </Layer>
  <TileMatrixSet><ows:Identifier>UTM32</ows:Identifier><ows:SupportedCRS>urn:ogc:def:crs:EPSG::32632</ows:SupportedCRS>
   <TileMatrix><ows:Identifier>0</ows:Identifier><ScaleDenominator>3571.428571428571</ScaleDenominator>
    <TopLeftCorner>500000 5600000</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight>
    <MatrixWidth>2</MatrixWidth><MatrixHeight>2</MatrixHeight></TileMatrix>
   <TileMatrix><ows:Identifier>1</ows:Identifier><ScaleDenominator>1785.7142857142856</ScaleDenominator>
    <TopLeftCorner>500000 5600000</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight>
    <MatrixWidth>4</MatrixWidth><MatrixHeight>4</MatrixHeight></TileMatrix>
  </TileMatrixSet>
 </Contents>
</Capabilities>
"""


class WMTSHandler(SimpleHTTPRequestHandler):
    """Serves ``/caps.xml``, RESTful ``/rest/<layer>/<matrix>/<row>/<col>.png`` and KVP ``/wmts?...``,
    counting every request by (kind, matrix, row, col)."""

    seen: Counter = Counter()

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path == "/wmts":
            q = {k.upper(): v[0] for k, v in parse_qs(parts.query).items()}
            if q.get("REQUEST") == "GetTile":
                self.path = f"/rest/{q['LAYER']}/{q['TILEMATRIX']}/{q['TILEROW']}/{q['TILECOL']}.png"
            else:
                self.path = "/caps.xml"
        type(self).seen[self.path.replace("ortho_kvp", "ortho")] += 1
        super().do_GET()


@pytest.fixture
def wmts(tmp_path):
    """Yields (base URL, the 1024² RGB image at 0.5 m whose top-left corner is (X0, Y0))."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (N * 256 // 24, N * 256 // 24, 3)).astype(np.uint8)
    image = cv2.resize(small, (N * 256, N * 256), interpolation=cv2.INTER_LINEAR)
    half = cv2.resize(image, (N * 128, N * 128), interpolation=cv2.INTER_AREA)
    root = tmp_path / "web"
    for layer in ("ortho", "ortho_kvp"):
        for matrix, img, n in (("0", half, N // 2), ("1", image, N)):
            for row in range(n):
                folder = root / "rest" / layer / matrix / str(row)
                folder.mkdir(parents=True, exist_ok=True)
                for col in range(n):
                    what = REFUSED.get((col, row)) if matrix == "1" else None
                    if what == 404:
                        continue
                    path = folder / f"{col}.png"
                    if what == "html":
                        path.write_text("<html><body>Service unavailable</body></html>")
                        continue
                    cv2.imwrite(str(path), img[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256, ::-1])
    WMTSHandler.seen = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(WMTSHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (root / "caps.xml").write_text(CAPABILITIES.format(base=base))
    try:
        yield base, image
    finally:
        server.shutdown()
        server.server_close()


BBOX = (X0 + 50.25, Y0 - 490.1, X0 + 450.3, Y0 - 30.2)  # EPSG:32632, inside the 512 m square


def test_bbox_and_zoom_give_the_tile_matrix_grid_refused_tiles_nodata(tmp_path, wmts, caplog):
    base, image = wmts
    rest = f"wmts+{base}/caps.xml?layer=ortho&tilematrixset=UTM32"
    kvp = f"wmts+{base}/wmts?SERVICE=WMTS&REQUEST=GetCapabilities&layer=ortho_kvp&tilematrixset=UTM32"
    assert input_stem(rest).startswith("wmts_127.0.0.1") and input_stem(rest).endswith("caps.xml_ortho")
    caplog.set_level(logging.WARNING, logger="frugalvl.sources.tiles")
    kw = dict(tile=256, bbox=BBOX, bbox_crs="EPSG:32632", zoom=1)
    result = segment_scene(ColourSegmenter.with_classes(), rest, tmp_path / "rest", **kw)
    refused = [r.getMessage() for r in caplog.records if "its pixels are nodata" in r.getMessage()]
    assert len(refused) == 2 and any("HTTP 404" in m for m in refused) and any("not an image" in m for m in refused)
    assert max(WMTSHandler.seen.values()) == 1  # capabilities and every tile fetched once
    assert WMTSHandler.seen["/caps.xml"] == 1
    with rasterio.open(result.labels) as out:
        labels, t = out.read(1), out.transform
        assert out.crs.to_epsg() == 32632
        left, bottom, right, top = out.bounds
    assert t.a == 0.5 and t.e == -0.5
    for got, want in zip((left, bottom, right, top), BBOX, strict=True):
        assert abs(got - want) <= 0.5  # the bbox to within a pixel
    c0, r0 = round((left - X0) / 0.5), round((Y0 - top) / 0.5)
    h, w = labels.shape

    def block(col, row):  # the output pixels of tile (col, row) of matrix "1"
        ys = slice(max(0, row * 256 - r0), max(0, (row + 1) * 256 - r0))
        xs = slice(max(0, col * 256 - c0), max(0, (col + 1) * 256 - c0))
        return labels[ys, xs]

    assert (block(1, 2) == 255).all() and (block(2, 1) == 255).all()
    assert (block(1, 1) != 255).all() and (block(2, 2) != 255).all()
    settings = SceneSettings(**kw)
    with open_scene(rest, settings, work=tmp_path / "cache") as src:
        assert (src.height, src.width) == (h, w) and src.transform == t
        data, valid = src.read([1, 2, 3]), src.read_masks([1, 2, 3])[0] > 0
    expected = image[r0 : r0 + h, c0 : c0 + w].transpose(2, 0, 1)
    assert np.array_equal(data[:, valid], expected[:, valid]) and (valid == (labels != 255)).all()
    # the same layer through KVP GetTile requests: the same labels
    via_kvp = segment_scene(ColourSegmenter.with_classes(), kvp, tmp_path / "kvp", **kw)
    with rasterio.open(via_kvp.labels) as out:
        assert np.array_equal(out.read(1), labels) and out.transform == t
    # --resolution 1 (metres) picks matrix "0"
    with open_scene(rest, SceneSettings(bbox=BBOX, bbox_crs="EPSG:32632", resolution=0.9), work=tmp_path / "c0") as src:
        assert src.transform.a == 1.0 and src.crs.to_epsg() == 32632


def test_kill_minus_9_then_resume_fetches_nothing_twice(tmp_path, wmts):
    base, _ = wmts
    url = f"wmts+{base}/caps.xml?layer=ortho"  # one tile matrix set: it may be left out
    script = textwrap.dedent(f"""
        import sys
        from frugalvl.segment.scene import segment_scene
        from frugalvl.testing.segmenters import SlowColourSegmenter
        from frugalvl.vocab import Vocabulary
        seg = SlowColourSegmenter(Vocabulary.parse("dark;red;green;blue;bright"), delay=float(sys.argv[2]))
        segment_scene(seg, {url!r}, sys.argv[1], tile=256, bbox={BBOX!r}, bbox_crs="EPSG:32632", zoom=1,
                      max_requests=2)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "ref"), "0"], check=True, env=env)
    total = sum(WMTSHandler.seen.values())
    assert max(WMTSHandler.seen.values()) == 1 and total == 1 + N * N  # capabilities + 16 tiles
    WMTSHandler.seen.clear()
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed"), "0.4"], env=env)
    stem = next(iter((tmp_path / "ref").glob("*.tif"))).stem
    parts = tmp_path / "killed" / f".{stem}.parts"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts.glob("r*.npz"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = sum(WMTSHandler.seen.values())
    assert 0 < before < total and not (tmp_path / "killed" / f"{stem}.tif").exists()
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed"), "0"], check=True, env=env)
    assert max(WMTSHandler.seen.values()) == 1 and sum(WMTSHandler.seen.values()) == total  # nothing twice
    for name in (f"{stem}.tif", f"{stem}_overlay.png"):
        assert (tmp_path / "ref" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name
    print(f"requests: killed run {before}, resumed run {total - before} (capabilities + tiles)")


def test_bad_wmts_sources_are_one_line(tmp_path, wmts):
    base, _ = wmts
    seg = ColourSegmenter.with_classes()
    kw = dict(tile=256, bbox=BBOX, bbox_crs="EPSG:32632", zoom=1)
    cases = [
        (f"wmts+{base}/caps.xml", "give \\?layer=NAME, one of ortho, ortho_kvp"),
        (f"wmts+{base}/caps.xml?layer=roads", "no layer 'roads'"),
        (f"wmts+{base}/caps.xml?layer=ortho_kvp", "give \\?tilematrixset=NAME, one of UTM32, other"),
        (f"wmts+{base}/caps.xml?layer=ortho_kvp&tilematrixset=other", "'other' is not described"),
        (f"wmts+{base}/missing.xml?layer=ortho", "cannot fetch the WMTS capabilities"),
        (f"wmts+{base}/rest/ortho/1/0/0.png?layer=ortho", "not XML"),
        ("wmts+file:///etc/passwd", "a WMTS source is wmts\\+https://"),
    ]
    for url, message in cases:
        with pytest.raises(UserError, match=message):
            segment_scene(seg, url, tmp_path / "out", **kw)
    with pytest.raises(UserError, match="zoom 7 is out of range: give a zoom between 0 and 1"):
        segment_scene(seg, f"wmts+{base}/caps.xml?layer=ortho", tmp_path / "out", **{**kw, "zoom": 7})
    with pytest.raises(UserError, match="give a bbox"):
        segment_scene(seg, f"wmts+{base}/caps.xml?layer=ortho", tmp_path / "out", zoom=1)
    (tmp_path / "web" / "bomb.xml").write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    with pytest.raises(UserError, match="DOCTYPE"):
        segment_scene(seg, f"wmts+{base}/bomb.xml?layer=ortho", tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


GEOGRAPHIC = """<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1">
 <Contents>
  <Layer><ows:Identifier>world</ows:Identifier><Format>image/jpeg</Format>
   <TileMatrixSetLink><TileMatrixSet>{set}</TileMatrixSet><TileMatrixSetLimits>
    <TileMatrixLimits><TileMatrix>{set}:1</TileMatrix><MinTileRow>0</MinTileRow><MaxTileRow>0</MaxTileRow>
     <MinTileCol>1</MinTileCol><MaxTileCol>2</MaxTileCol></TileMatrixLimits></TileMatrixSetLimits></TileMatrixSetLink>
   <ResourceURL format="image/jpeg" resourceType="tile" template="http://127.0.0.1:9/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.jpg"/>
  </Layer>
  <TileMatrixSet><ows:Identifier>{set}</ows:Identifier><ows:SupportedCRS>{crs}</ows:SupportedCRS>
   <TileMatrix><ows:Identifier>{set}:0</ows:Identifier><ScaleDenominator>279541132.0143589</ScaleDenominator>
    <TopLeftCorner>{corner}</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight>
    <MatrixWidth>2</MatrixWidth><MatrixHeight>1</MatrixHeight></TileMatrix>
   <TileMatrix><ows:Identifier>{set}:1</ows:Identifier><ScaleDenominator>139770566.00717944</ScaleDenominator>
    <TopLeftCorner>{corner}</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight>
    <MatrixWidth>4</MatrixWidth><MatrixHeight>2</MatrixHeight></TileMatrix>
  </TileMatrixSet>
 </Contents>
</Capabilities>"""


@pytest.mark.parametrize(
    "crs,corner",
    [("urn:ogc:def:crs:EPSG::4326", "90 -180"), ("urn:ogc:def:crs:OGC:1.3:CRS84", "-180 90")],
)
def test_geographic_sets_read_the_corner_in_axis_order_and_limits_ask_for_nothing(tmp_path, crs, corner):
    """EPSG:4326 writes the corner latitude first, CRS84 longitude first: both are the world's top-left.
    Tiles outside the layer's limits are nodata and never asked for (the server at port 9 would fail)."""
    from rasterio.windows import Window

    from frugalvl.sources.wmts import open_wmts

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "capabilities.xml").write_text(GEOGRAPHIC.format(set="WGS", crs=crs, corner=corner))
    url = "wmts+http://127.0.0.1:9/caps.xml?layer=world"
    ds = open_wmts(url, 1, None, cache, 2)
    deg = 139770566.00717944 * 0.28e-3 / (2 * np.pi * 6378137.0 / 360)  # 0.3515625° per pixel
    assert ds.crs.to_string() in ("EPSG:4326", "OGC:CRS84") and (ds.width, ds.height) == (1024, 512)
    assert ds.transform.c == -180 and ds.transform.f == 90 and abs(ds.transform.a - deg) < 1e-12
    assert abs(ds.transform.a * 1024 - 360) < 1e-9  # four 256-px tiles span the world
    outside = ds.read([1, 2, 3], window=Window(0, 256, 256, 256))  # row 1: beyond MaxTileRow 0
    assert not outside.any() and not ds.read_masks(1, window=Window(0, 256, 256, 256)).any()
    assert ds.requests == 0
    assert open_wmts(url, 0, None, cache, 2).width == 512  # zoom 0: the matrix "WGS:0"
    # pixels of 78.27 km ("WGS:0") and 39.14 km ("WGS:1"): the nearest on a log scale
    assert (
        open_wmts(url, None, 50_000.0, cache, 2).width == 1024 and open_wmts(url, None, 60_000.0, cache, 2).width == 512
    )
