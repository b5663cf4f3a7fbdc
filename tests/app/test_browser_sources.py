"""A tile service opened in a real browser (Debian's headless Chromium driven by Playwright): the
remote-source box reads the area, the map shows it, a run segments it."""

from __future__ import annotations

import re

import pytest

from tests.app.test_browser import browser_page, needs_chromium, start_server
from tests.sources.test_xyz import Z, lonlat, tiles  # noqa: F401 (the tile server fixture)

pytestmark = needs_chromium


def test_open_an_xyz_area_and_segment_it_in_the_browser(tiny_clip_file, tmp_path, tiles):  # noqa: F811
    pytest.importorskip("uvicorn")
    from frugalvl.app import AppConfig, create_app

    url, _ = tiles
    app = create_app(AppConfig(models={"clip": str(tiny_clip_file)}, workdir=tmp_path / "work"))
    port, stop = start_server(app)
    w, n = lonlat(100, 60)
    e, s = lonlat(600, 500)
    try:
        with browser_page(f"http://127.0.0.1:{port}/") as (page, errors):
            page.wait_for_selector("#method option", state="attached")
            page.fill("#source-url", url)
            page.fill("#source-bbox", f"{w},{s},{e},{n}")
            page.fill("#source-zoom", str(Z))
            page.click("#source-open")
            page.wait_for_selector("body[data-image]", state="attached")
            info = page.inner_text("#image-info")
            assert info.startswith("xyz_127.0.0.1") and "EPSG:3857" in info
            assert re.search(r"(499|500|501)×(439|440|441) px", info), info  # the bbox to within a pixel
            page.wait_for_selector("#map img.leaflet-tile-loaded[src*='/api/images/']", state="attached")
            # the map view as the area: inside the opened bbox, four numbers
            page.click("#source-view")
            box = [float(v) for v in page.input_value("#source-bbox").split(",")]
            assert len(box) == 4 and box[0] < box[2] and box[1] < box[3]
            page.fill("#vocabulary", "dark;bright")
            page.click("#run")
            page.wait_for_selector("body[data-layer=ready]", state="attached", timeout=90_000)
            assert page.locator("#legend .name").all_inner_texts() == ["dark", "bright"]
            # a refused source: one line in the page
            page.fill("#source-url", "file:///etc/passwd")
            page.click("#source-open")
            page.wait_for_function("document.getElementById('message').textContent.includes('the app opens')")
    finally:
        stop()
    assert all("status of 400" in m for m in errors), errors
