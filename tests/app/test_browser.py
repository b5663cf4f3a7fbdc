"""The app in a real browser: Debian's headless Chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Chromium is not installed at /usr/bin/chromium: "
    "install it with `sudo apt-get install -y chromium` to run the browser tests",
)
pytestmark = needs_chromium


@contextlib.contextmanager
def browser_page(url: str, **page_options) -> Iterator[tuple[Any, list[str]]]:
    """A 1280×800 page of headless Chromium at ``url`` (90 s timeouts) and the list its console errors
    and page errors are appended to; the browser is closed on the way out."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, **page_options)
            page.set_default_timeout(90_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            yield page, errors
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app):
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; returns (port, stop)."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(10)
        app.state.close()

    return port, stop


@pytest.fixture
def served_app(tiny_clip_file, tmp_path):
    """The app served by uvicorn on 127.0.0.1 in a thread; yields its URL."""
    pytest.importorskip("uvicorn")
    from frugalvl.app import AppConfig, create_app

    app = create_app(AppConfig(models={"clip": str(tiny_clip_file)}, workdir=tmp_path / "work", max_upload_mb=1.0))
    port, stop = start_server(app)
    yield f"http://127.0.0.1:{port}/"
    stop()


def test_segment_the_bundled_sample_in_the_browser(served_app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    import rasterio

    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            page.set_default_timeout(90_000)  # a busy CI machine
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served_app)
            page.wait_for_selector("#sample option[value=landsat_rgb_byte]", state="attached")
            page.select_option("#sample", "landsat_rgb_byte")
            page.click("#open-sample")
            page.wait_for_selector("body[data-image]", state="attached")
            assert "EPSG:32618" in page.inner_text("#image-info")

            page.fill("#vocabulary", "background;water,river,lake;forest,tree")
            page.click("#run")
            page.wait_for_selector("body[data-layer=ready]", state="attached", timeout=90_000)
            assert page.locator("#legend .name").all_inner_texts() == ["background", "water", "forest"]
            assert page.locator("#legend td.num").count() == 6

            # toggle a class: the result layer reloads without it
            page.locator("#legend input[data-class='1']").uncheck()
            page.wait_for_selector("#map img.leaflet-tile-loaded[src*='hide=1']", state="attached")
            assert "off" in page.locator("#legend tbody tr").nth(1).get_attribute("class")
            page.fill("#opacity", "0.5")

            # click the map centre: every class's score there
            page.click("#map", position={"x": 470, "y": 400})
            page.wait_for_selector("#pixel table tr:nth-child(3)", state="attached")
            assert page.locator("#pixel td").count() == 6

            with page.expect_download() as download:
                page.click("#download-labels")
            saved = tmp_path / "labels.tif"
            download.value.save_as(saved)
            with rasterio.open(saved) as src:
                assert src.crs.to_epsg() == 32618 and (src.width, src.height) == (791, 718)
            page.screenshot(path=str(tmp_path / "app.png"))
            assert errors == [], errors

            # bad input: a message in the page, and the app keeps working
            page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
            page.wait_for_function("document.getElementById('message').textContent.includes('unsupported file type')")
            page.fill("#vocabulary", " ; ")
            page.evaluate("document.getElementById('panel').scrollTop = 10000")  # scrolled down to the result
            page.click("#run")
            page.wait_for_function("document.getElementById('message').textContent.includes('empty')")
            top = page.locator("#message").bounding_box()
            assert top is not None and 0 <= top["y"] < 800  # the error shows where the user is, not above the fold
            page.click("#panel details summary")
            page.fill("#clip", "/nowhere/ViT-B-16.pt")
            page.fill("#vocabulary", "water;land")
            page.click("#run")  # refused when asked for: the model field names no file the server may read
            page.wait_for_function("document.getElementById('message').textContent.includes('model-root')")
            assert page.evaluate("document.body.dataset.run") != "failed"
            # the refused run left the last result on the map, its legend and downloads in place
            assert page.locator("#legend .name").all_inner_texts() == ["background", "water", "forest"]
            assert page.locator("#download-labels").is_visible()
            page.fill("#clip", "")
            page.click("#run")
            page.wait_for_function(
                "[...document.querySelectorAll('#legend .name')].map((e) => e.textContent).join(';') === 'water;land'",
                timeout=90_000,
            )
            page.wait_for_selector("body[data-layer=ready]", state="attached", timeout=90_000)
            assert page.locator("#legend .name").all_inner_texts() == ["water", "land"]
            assert re.fullmatch(r"done in \d+(\.\d)? s", page.inner_text("#run-state"))  # rounded
            # the downloads are in view without scrolling the panel
            assert page.locator("#download-labels").is_visible()
            box, panel = page.locator("#download-labels").bounding_box(), page.locator("#panel").bounding_box()
            assert box is not None and panel is not None and box["y"] + box["height"] <= panel["y"] + panel["height"]
            page.screenshot(path=str(tmp_path / "app_after_errors.png"))
        finally:
            browser.close()
    # only the refused requests themselves may log (Chromium logs every 4xx response)
    assert all("status of 400" in e for e in errors), errors


def test_a_rebound_dns_name_and_another_origin_cannot_drive_the_api(tiny_clip_file, small_png, tmp_path):
    """DNS rebinding (a name the attacker controls resolving to this server) and a page of another
    origin posting to the API, in a real browser: both refused; the server's own page works."""
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("uvicorn")
    from frugalvl.app import AppConfig, create_app

    app = create_app(AppConfig(models={"clip": str(tiny_clip_file)}, workdir=tmp_path / "work"))
    port, stop = start_server(app)
    rules = "--host-resolver-rules=MAP rebind.test 127.0.0.1"  # what the attacker's DNS answers
    post = """async (url) => {
        try {
            const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify({name: "landsat_rgb_byte"})});
            return r.status;
        } catch (e) { return "blocked"; }
    }"""
    # a form upload is a "simple" request: a browser sends it to any origin without asking first
    upload = """async ([url, b64]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const form = new FormData();
        form.append("file", new Blob([bytes], {type: "image/png"}), "a.png");
        try {
            const r = await fetch(url, {method: "POST", body: form, mode: url.startsWith("/") ? "same-origin" : "no-cors"});
            return r.type === "opaque" ? "opaque" : r.status;
        } catch (e) { return "blocked"; }
    }"""
    png = base64.b64encode(small_png.read_bytes()).decode()

    def images() -> int:
        return sum(len(s.images) for s in list(app.state.sessions._sessions.values()))

    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*ARGS, rules])
            try:
                page = browser.new_page()
                page.set_default_timeout(60_000)
                # the attacker's name, rebound to 127.0.0.1: the page and the API refuse it
                response = page.goto(f"http://rebind.test:{port}/")
                assert response is not None and response.status == 403
                assert page.evaluate("async () => (await fetch('/api/config')).status") == 403
                assert page.evaluate(post, "/api/images/sample") == 403
                assert page.evaluate(upload, ["/api/images/upload", png]) == 403
                # another origin (localhost is a name of this server, but not the origin of 127.0.0.1's
                # page) sends the upload (the browser does not stop it): the server refuses it
                page.goto(f"http://localhost:{port}/")
                assert page.evaluate(upload, [f"http://127.0.0.1:{port}/api/images/upload", png]) == "opaque"
                assert images() == 0
                # the server's own page posts with its own Origin and is served
                page.goto(f"http://127.0.0.1:{port}/")
                assert page.evaluate(post, "/api/images/sample") == 200
                assert page.evaluate(upload, ["/api/images/upload", png]) == 200
                assert images() == 2
            finally:
                browser.close()
    finally:
        stop()
