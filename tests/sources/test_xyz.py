"""XYZ tile services: a local server of 256² PNG tiles cut from a Web Mercator image; georeference of
the bbox, refused tiles as nodata (one line each), a resumed run fetches no tile twice, a server
that never answers fails with one line."""

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio

from frugalvl.errors import UserError
from frugalvl.segment.scene import SceneSettings, segment_scene
from frugalvl.sources import xyz
from frugalvl.testing.segmenters import ColourSegmenter

Z, HALF = 16, xyz.HALF_WORLD
PX = 2 * HALF / (256 << Z)  # metres per pixel at zoom 16
TX0, TY0, N = 33200, 22500, 4  # a 4×4 block of tiles (near Paris)


class CountingHandler(SimpleHTTPRequestHandler):
    seen: Counter = Counter()

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).seen[self.path] += 1
        super().do_GET()


@pytest.fixture
def tiles(tmp_path):
    """Serve the 4×4 tiles (tile (1, 2) missing: 404; tile (2, 1) an HTML page); yields (URL template, image)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (N * 256 // 24, N * 256 // 24, 3)).astype(np.uint8)
    image = cv2.resize(small, (N * 256, N * 256), interpolation=cv2.INTER_LINEAR)
    root = tmp_path / "web"
    for i in range(N):
        for j in range(N):
            folder = root / str(Z) / str(TX0 + i)
            folder.mkdir(parents=True, exist_ok=True)
            if (i, j) == (1, 2):
                continue
            path = folder / f"{TY0 + j}.png"
            if (i, j) == (2, 1):
                path.write_text("<html><body>Service unavailable</body></html>")
                continue
            cv2.imwrite(str(path), image[j * 256 : (j + 1) * 256, i * 256 : (i + 1) * 256, ::-1])
    CountingHandler.seen = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(CountingHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"xyz+http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png", image
    finally:
        server.shutdown()
        server.server_close()


def lonlat(col, row):
    """Lon/lat of a pixel corner of the tile block."""
    x = -HALF + (TX0 * 256 + col) * PX
    y = HALF - (TY0 * 256 + row) * PX
    return math.degrees(x / 6378137.0), math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)


def test_bbox_and_zoom_give_a_georeferenced_label_cog_refused_tiles_nodata(tmp_path, tiles, caplog):
    url, image = tiles
    w, n = lonlat(100.3, 60.2)
    e, s = lonlat(900.6, 980.4)
    caplog.set_level(logging.WARNING, logger="frugalvl.sources.xyz")
    result = segment_scene(ColourSegmenter.with_classes(), url, tmp_path / "out", tile=256, bbox=(w, s, e, n), zoom=Z)
    assert result.labels.name.startswith("xyz_127.0.0.1")
    fetched = Counter(CountingHandler.seen)
    refused = [r.getMessage() for r in caplog.records if "its pixels are nodata" in r.getMessage()]
    with rasterio.open(result.labels) as out:
        labels, t = out.read(1), out.transform
        assert out.crs.to_epsg() == 3857
        left, bottom, right, top = out.bounds
    assert abs(t.a - PX) < 1e-9 and abs(t.e + PX) < 1e-9
    bx0, by1 = -HALF + (TX0 * 256 + 100.3) * PX, HALF - (TY0 * 256 + 60.2) * PX
    bx1, by0 = -HALF + (TX0 * 256 + 900.6) * PX, HALF - (TY0 * 256 + 980.4) * PX
    for got, want in ((left, bx0), (right, bx1), (top, by1), (bottom, by0)):
        assert abs(got - want) <= PX  # the bbox to within a pixel
    c0, r0 = round((left + HALF) / PX) - TX0 * 256, round((HALF - top) / PX) - TY0 * 256
    h, w_ = labels.shape

    def block(i, j):  # the output pixels of tile (i, j)
        ys = slice(max(0, j * 256 - r0), max(0, (j + 1) * 256 - r0))
        xs = slice(max(0, i * 256 - c0), max(0, (i + 1) * 256 - c0))
        return labels[ys, xs]

    assert (block(1, 2) == 255).all() and (block(2, 1) == 255).all()
    assert (block(1, 1) != 255).all() and (block(2, 2) != 255).all()
    # the pixels read are the image's (RGB order kept), nodata where a tile was refused
    from frugalvl.segment.scene import open_scene

    with open_scene(url, SceneSettings(bbox=(w, s, e, n), zoom=Z), work=tmp_path / "cache") as src:
        assert (src.height, src.width) == (h, w_) and src.transform == t
        data, valid = src.read([1, 2, 3]), src.read_masks([1, 2, 3])[0] > 0
    expected = image[r0 : r0 + h, c0 : c0 + w_].transpose(2, 0, 1)
    assert np.array_equal(data[:, valid], expected[:, valid]) and (valid == (labels != 255)).all()
    assert max(fetched.values()) == 1  # every tile fetched once by the run (overlay included)
    assert len(refused) == 2 and any("HTTP 404" in m for m in refused) and any("not an image" in m for m in refused)


def test_kill_minus_9_then_resume_fetches_no_tile_twice_and_gives_the_same_bytes(tmp_path, tiles):
    url, _ = tiles
    w, n = lonlat(10.5, 10.5)
    e, s = lonlat(1000.5, 1000.5)
    script = textwrap.dedent(f"""
        import sys
        from frugalvl.segment.scene import segment_scene
        from frugalvl.testing.segmenters import SlowColourSegmenter
        from frugalvl.vocab import Vocabulary
        seg = SlowColourSegmenter(Vocabulary.parse("dark;red;green;blue;bright"), delay=float(sys.argv[2]))
        segment_scene(seg, {url!r}, sys.argv[1], tile=256, bbox={(w, s, e, n)!r}, zoom={Z}, max_requests=4)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "ref"), "0"], check=True, env=env)
    assert len(CountingHandler.seen) == N * N and max(CountingHandler.seen.values()) == 1
    CountingHandler.seen.clear()
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed"), "0.3"], env=env)
    parts = next(iter((tmp_path / "ref").glob("*.tif"))).stem
    parts_dir = tmp_path / "killed" / f".{parts}.parts"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts_dir.glob("r*.npz"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = sum(CountingHandler.seen.values())
    assert 0 < before < N * N and not (tmp_path / "killed" / f"{parts}.tif").exists()
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed"), "0"], check=True, env=env)
    assert len(CountingHandler.seen) == N * N and max(CountingHandler.seen.values()) == 1  # no tile twice
    for name in (f"{parts}.tif", f"{parts}_overlay.png"):
        assert (tmp_path / "ref" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name
    assert not parts_dir.exists()  # the tile cache went with the parts
    print(f"requests: killed run {before}, resumed run {sum(CountingHandler.seen.values()) - before}")


def test_server_that_never_answers_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(xyz, "TIMEOUT_S", 0.5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # accepts connections, never answers
        url = f"xyz+http://127.0.0.1:{sock.getsockname()[1]}/{{z}}/{{x}}/{{y}}.png"
        w, n = lonlat(10, 10)
        e, s = lonlat(300, 300)
        with pytest.raises(UserError, match="does not answer"):
            segment_scene(ColourSegmenter.with_classes(), url, tmp_path / "out", tile=256, bbox=(w, s, e, n), zoom=Z)


def test_bad_tile_service_inputs(tmp_path):
    with pytest.raises(ValueError, match="zoom 30 is out of range"):
        SceneSettings(zoom=30)
    url = "xyz+http://127.0.0.1:9/{z}/{x}/{y}.png"
    with pytest.raises(UserError, match="give a bbox"):
        segment_scene(ColourSegmenter.with_classes(), url, tmp_path / "out", zoom=3)
    with pytest.raises(UserError, match="needs a zoom or a resolution"):
        segment_scene(ColourSegmenter.with_classes(), url, tmp_path / "out", bbox=(2.0, 48.0, 2.1, 48.1))
    assert not (tmp_path / "out").exists()
    assert xyz.zoom_for_resolution(0.6, 0.0) == 18 and xyz.zoom_for_resolution(0.6, 60.0) == 17
