"""Exemplars in a real browser (docs/app.md#exemplars): draw a box, give it a new class, re-run; the legend
and the GeoJSON download include it, and a page reload keeps it. Debian's headless Chromium through
Playwright, as in test_browser.py. ``FRUGALVL_APP_SCREENSHOT=docs/images/app_exemplars.png`` also saves the
screenshot the README shows."""

from __future__ import annotations

import os
from pathlib import Path

from tests.app.test_browser import browser_page, needs_chromium, served_app  # noqa: F401 - served_app: the fixture

pytestmark = needs_chromium


def test_draw_a_box_assign_a_class_rerun_and_download(served_app, tmp_path):  # noqa: F811
    from frugalvl.segment.exemplars import load_exemplar_file

    with browser_page(served_app, accept_downloads=True) as (page, errors):
        page.wait_for_selector("#sample option[value=landsat_rgb_byte]", state="attached")
        page.select_option("#sample", "landsat_rgb_byte")
        page.click("#open-sample")
        page.wait_for_selector("body[data-image]", state="attached")
        page.fill("#vocabulary", "background;water,river,lake;forest,tree")

        # no class yet: a message, no drawing
        page.click("#ex-box")
        page.wait_for_function("document.getElementById('message').textContent.includes('class')")
        page.fill("#ex-class", "cloud")
        page.click("#ex-box")
        page.wait_for_selector("body[data-drawing=box]", state="attached")
        page.mouse.move(760, 330)
        page.mouse.down()
        page.mouse.move(820, 370, steps=4)
        page.mouse.move(850, 400, steps=4)
        page.mouse.up()
        page.wait_for_selector("#ex-list li", state="attached")
        assert page.locator("#ex-list .name").all_inner_texts() == ["cloud"]
        assert page.locator("#map path.leaflet-interactive").count() >= 1  # drawn on the map
        assert page.get_attribute("body", "data-drawing") == ""

        # a negative polygon of a known class: three clicks and a double-click on the last corner
        page.fill("#ex-class", "water")
        page.check("#ex-negative")
        page.click("#ex-polygon")
        page.wait_for_selector("body[data-drawing=polygon]", state="attached")
        for x, y in [(600, 500), (680, 520)]:
            page.mouse.click(x, y)
        page.mouse.dblclick(640, 580)
        page.wait_for_selector("#ex-list li:nth-child(2)", state="attached")
        assert page.locator("#ex-list .name").all_inner_texts() == ["cloud", "water (not this)"]
        page.uncheck("#ex-negative")

        page.click("#run")
        page.wait_for_selector("body[data-layer=ready]", state="attached", timeout=90_000)
        assert page.locator("#legend .name").all_inner_texts() == ["background", "water", "forest", "cloud"]
        shot = os.environ.get("FRUGALVL_APP_SCREENSHOT")
        if shot:
            page.set_viewport_size({"width": 1280, "height": 1020})
            page.fill("#opacity", "0.45")
            page.dispatch_event("#opacity", "input")
            page.evaluate("document.getElementById('exemplars').scrollIntoView({block: 'start'})")
            page.wait_for_timeout(800)
            page.screenshot(path=shot)
            small_png(Path(shot))
            page.set_viewport_size({"width": 1280, "height": 800})

        with page.expect_download() as download:
            page.click("#ex-download")
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name == "landsat_rgb_byte_exemplars.geojson"
        file = load_exemplar_file(saved)  # the CLI's reader
        assert file.names == ("cloud", "water") and file.positive == (True, False)
        assert file.frame.crs.to_epsg() == 32618 and file.frame.geometry[1].geom_type == "Polygon"

        # a reload: the session still holds the image and its exemplar
        page.reload()
        page.wait_for_selector("#ex-list li:nth-child(2)", state="attached")
        assert page.locator("#ex-list .name").all_inner_texts() == ["cloud", "water (not this)"]
        page.click("#ex-list li:nth-child(2) button")
        page.wait_for_selector("#ex-list li:nth-child(2)", state="detached")
        page.click("#ex-list li button")
        page.wait_for_selector("#ex-list li", state="detached")
        assert page.locator("#ex-download").is_hidden()
        assert errors == [], errors


def small_png(path: Path) -> None:
    """The screenshot as a palette PNG (the README's image stays well under 150 kB)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def test_screenshot_is_small_when_present():
    shot = Path(__file__).resolve().parents[2] / "docs" / "images" / "app_exemplars.png"
    if shot.exists():
        assert shot.stat().st_size < 150_000
