"""Change between two dates in the app (routes/change.py): the JSON API through FastAPI's TestClient with the
informative tiny random SAM 3 (no network), and the page in headless Chromium (as test_browser.py)."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import threading
import time

import numpy as np
import pytest

from tests.app.conftest import LANDSAT
from tests.app.test_browser import browser_page, needs_chromium, start_server

VOCAB = "background;water;forest,tree;city"
SAM3 = "random-tiny"


@pytest.fixture(scope="module")
def sam3_bundle():
    from tests.segment.test_segearth_ov3 import informative_sam3

    return informative_sam3()


@pytest.fixture(scope="module")
def dates(tmp_path_factory):
    """Two 128² GeoTIFFs of the Landsat interior on one grid (EPSG:32618, the sample's ~300 m pixels): the second date has its
    bottom half replaced by another part of the scene."""
    import rasterio
    from rasterio.windows import Window, transform

    folder = tmp_path_factory.mktemp("dates")
    with rasterio.open(LANDSAT) as src:
        window = Window(300, 280, 128, 128)
        before = src.read(window=window)
        after = before.copy()
        after[:, 64:] = src.read(window=Window(300, 420, 128, 64))
        profile = dict(driver="GTiff", height=128, width=128, count=3, dtype="uint8", crs=src.crs)
        profile["transform"] = transform(window, src.transform)
    paths = []
    for name, data in (("before.tif", before), ("after.tif", after)):
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(data)
        paths.append(folder / name)
    return paths


@pytest.fixture
def client_with_dates(make_client, sam3_bundle, dates):
    """A client whose server has the tiny SAM 3 as its --sam3 model and both dates under its data root."""
    client = make_client(models={"sam3": SAM3})
    client.app.state.hub._models[("sam3", SAM3)] = sam3_bundle  # as if loaded from --sam3
    for path in dates:
        shutil.copy(path, make_client.root / path.name)
    first = open_path(client, "before.tif")
    second = open_path(client, "after.tif")
    return client, first, second


def open_path(client, path: str) -> dict:
    response = client.post("/api/images/path", json={"path": path})
    assert response.status_code == 200, response.text
    return response.json()


def wait_change(client, run: dict, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while run["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"change run still {run['state']} after {timeout} s"
        time.sleep(0.05)
        run = client.get(f"/api/change/{run['id']}").json()
    return run


def change_done(client, **body) -> dict:
    response = client.post("/api/change", json=body)
    assert response.status_code == 200, response.text
    run = wait_change(client, response.json())
    assert run["state"] == "done", run
    return run


def library_outputs(sam3_bundle, dates, outdir, vocabulary=VOCAB):
    """What `frugalvl change BEFORE AFTER --classes ... --semantic` writes, through the library's own calls."""
    from frugalvl.change import ChangeDetector
    from frugalvl.change.detector import default_segmentation_settings
    from frugalvl.change.pairs import Pair
    from frugalvl.change.run import detect_files
    from frugalvl.change.settings import ChangeOutputSettings
    from frugalvl.segment.segearth_ov3 import SegEarthOV3
    from frugalvl.vocab import Vocabulary

    segmenter = SegEarthOV3(sam3_bundle, Vocabulary.parse(vocabulary), default_segmentation_settings())
    outdir.mkdir()
    summary = detect_files(
        ChangeDetector(segmenter), [Pair(*dates)], outdir, progress=False, settings=ChangeOutputSettings(semantic=True)
    )
    assert not summary.failed
    return outdir


def read_raster(content: bytes):
    import rasterio

    with rasterio.MemoryFile(content) as mem, mem.open() as src:
        return src.read(1), src.crs, src.transform


def test_change_run_equals_the_command_line_and_its_table_adds_up(client_with_dates, sam3_bundle, dates, tmp_path):
    client, first, second = client_with_dates
    run = change_done(client, before=first["id"], after=second["id"], vocabulary=VOCAB, semantic=True)
    assert run["kind"] == "change" and (run["done"], run["total"]) == (2, 2)  # one whole pair: two dates scored
    expected = library_outputs(sam3_bundle, dates, tmp_path / "cli")
    assert set(run["files"]) == {
        "change", "overlay", "record", "polygons", "transitions", "fromto", "before_labels", "after_labels",
    }  # fmt: skip

    change, crs, transform = read_raster(client.get(f"/api/change/{run['id']}/download/change").content)
    want, want_crs, want_transform = read_raster((expected / "before_change.tif").read_bytes())
    np.testing.assert_array_equal(change, want)
    assert crs == want_crs and transform == want_transform and crs.to_epsg() == 32618
    for kind, name in (("fromto", "before_fromto.tif"), ("before_labels", "before_before_labels.tif")):
        got = read_raster(client.get(f"/api/change/{run['id']}/download/{kind}").content)[0]
        np.testing.assert_array_equal(got, read_raster((expected / name).read_bytes())[0])
    table = client.get(f"/api/change/{run['id']}/download/transitions").content
    assert table == (expected / "before_transitions.csv").read_bytes()
    record = json.loads(client.get(f"/api/change/{run['id']}/download/record").content)
    cli_record = json.loads((expected / "before_change_run.json").read_text())
    assert record["segmenter"]["method"] == "segearth-ov3-change" and record["segmenter"] == cli_record["segmenter"]
    assert record["settings"]["output"] == cli_record["settings"]["output"]

    # the summary and the table count the map's pixels, each of the grid's pixel area (~300 m pixels)
    pixel_ha = abs(transform.a * transform.e) / 1e4
    assert pixel_ha == pytest.approx(9.0, rel=1e-3)
    changed = int((change == 1).sum())
    assert changed > 0 and run["summary"]["changed_pixels"] == changed
    assert run["summary"]["ha"] == pytest.approx(changed * pixel_ha, abs=1e-4)
    assert sum(t["pixels"] for t in run["transitions"]) == changed
    rows = list(csv.DictReader(io.StringIO(table.decode())))
    assert [(t["from"], t["to"], t["pixels"]) for t in run["transitions"]] == [
        (r["from_class"], r["to_class"], int(r["pixels"])) for r in rows
    ]
    for t in run["transitions"]:
        assert t["ha"] == pytest.approx(t["pixels"] * pixel_ha, abs=1e-4)
    assert client.get(f"/api/change/{run['id']}/download/overlay").content[:8] == b"\x89PNG\r\n\x1a\n"
    gpkg = client.get(f"/api/change/{run['id']}/download/polygons")
    assert gpkg.status_code == 200 and gpkg.content[:16] == b"SQLite format 3\x00"


def tile_at(info: dict, z: int) -> tuple[int, int]:
    """The XYZ tile holding the centre of an image's bounds."""
    (south, west), (north, east) = info["bounds"]
    lat, lng = (south + north) / 2, (west + east) / 2
    n = 2**z
    x = int((lng + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def test_change_layers_are_red_and_from_to_colours(client_with_dates):
    from PIL import Image

    client, first, second = client_with_dates
    run = change_done(client, before=first["id"], after=second["id"], vocabulary=VOCAB, semantic=True)
    x, y = tile_at(first, 11)
    url = f"/api/change/{run['id']}/tiles/11/{x}/{y}.png"
    rgba = np.asarray(Image.open(io.BytesIO(client.get(url).content)).convert("RGBA")).reshape(-1, 4)
    opaque = {tuple(p) for p in rgba[rgba[:, 3] > 0]}
    assert opaque == {(255, 32, 32, 255)}  # change in red, the rest transparent
    rgba = np.asarray(Image.open(io.BytesIO(client.get(url + "?layer=fromto").content)).convert("RGBA")).reshape(-1, 4)
    colours = {tuple(int(t["colour"][i : i + 2], 16) for i in (1, 3, 5)) + (255,) for t in run["transitions"]}
    assert {tuple(p) for p in rgba[rgba[:, 3] > 0]} <= colours and (rgba[:, 3] > 0).any()
    bad = client.get(url + "?layer=labels")
    assert bad.status_code == 400 and "choose change or fromto" in bad.json()["error"]
    assert client.get(f"/api/change/{run['id']}/download/secrets").status_code == 404
    assert client.get(f"/api/runs/{run['id']}").json()["kind"] == "change"  # one list of runs per session


def test_same_date_twice_is_no_change_and_a_rerun_reuses_the_model_and_prompts(client_with_dates):
    client, first, second = client_with_dates
    run = change_done(client, before=first["id"], after=first["id"], vocabulary=VOCAB, semantic=True)
    assert run["summary"]["changed_pixels"] == 0 and run["transitions"] == []
    assert run["summary"]["valid_pixels"] == 128 * 128
    hub = client.app.state.hub
    queries, models = len(hub.query_cache), dict(hub._models)
    assert queries == 5
    run = change_done(client, before=first["id"], after=second["id"], vocabulary=VOCAB.replace("city", "town"))
    assert len(hub.query_cache) == queries + 1 and hub._models == models  # "town" only; SAM 3 loaded once
    assert "fromto" not in run["files"] and run["transitions"] == []  # without the semantic extras
    assert set(run["files"]) == {"change", "overlay", "record"}
    default = change_done(client, before=first["id"], after=second["id"])  # no classes: LEVIR-CD's
    assert [c["name"] for c in default["classes"]] == ["background", "building"]


def test_plain_images_compare_in_pixel_coordinates(client_with_dates, small_png):
    from PIL import Image

    client, _, _ = client_with_dates
    rgb = np.asarray(Image.open(small_png))
    ids = []
    for name, data in (("a.png", rgb), ("b.png", np.ascontiguousarray(rgb[:, ::-1]))):
        buf = io.BytesIO()
        Image.fromarray(data).save(buf, format="PNG")
        response = client.post("/api/images/upload", files={"file": (name, buf.getvalue(), "image/png")})
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    run = change_done(client, before=ids[0], after=ids[1], vocabulary=VOCAB, semantic=True)
    assert run["bounds"] == [[-80, 0], [0, 96]]
    change, crs, _ = read_raster(client.get(f"/api/change/{run['id']}/download/change").content)
    assert change.shape == (80, 96) and crs is None
    preview = np.asarray(Image.open(io.BytesIO(client.get(f"/api/change/{run['id']}/image.png").content)))
    assert preview.shape == (80, 96, 4)
    np.testing.assert_array_equal(preview[..., 3] > 0, change == 1)
    assert client.get(f"/api/change/{run['id']}/tiles/3/1/1.png").status_code == 404  # no map tiles without a CRS


def test_a_second_date_on_another_grid_is_read_onto_the_first(client_with_dates, sam3_bundle, dates, tmp_path):
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling

    client, first, _ = client_with_dates
    coarse = tmp_path / "after_coarse.tif"  # the second date at half the resolution: another grid, same place
    with rasterio.open(dates[1]) as src:
        data = src.read(out_shape=(3, 64, 64), resampling=Resampling.average)
        profile = dict(src.profile, height=64, width=64, transform=src.transform * Affine.scale(2))
    with rasterio.open(coarse, "w", **profile) as dst:
        dst.write(data)
    shutil.copy(coarse, client.app.state.config.data_roots[0] / coarse.name)
    second = open_path(client, coarse.name)
    assert (second["width"], second["height"]) == (64, 64)
    run = change_done(client, before=first["id"], after=second["id"], vocabulary=VOCAB, semantic=True)
    change, crs, transform = read_raster(client.get(f"/api/change/{run['id']}/download/change").content)
    expected = library_outputs(sam3_bundle, (dates[0], coarse), tmp_path / "cli")
    want, want_crs, want_transform = read_raster((expected / "before_change.tif").read_bytes())
    assert change.shape == (128, 128) and (crs, transform) == (want_crs, want_transform)
    np.testing.assert_array_equal(change, want)


def nothing_written(client) -> bool:
    return not [p for p in client.app.state.sessions.root.rglob("runs/*")]


def test_bad_change_inputs_are_one_line_and_write_nothing(client_with_dates, small_png):
    from PIL import Image

    client, first, second = client_with_dates
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, format="PNG")
    small = client.post("/api/images/upload", files={"file": ("small.png", buf.getvalue(), "image/png")}).json()
    with open(small_png, "rb") as f:
        plain = client.post("/api/images/upload", files={"file": ("plain.png", f, "image/png")}).json()

    refused = client.post("/api/change", json={"before": plain["id"], "after": small["id"]})
    assert refused.status_code == 400
    text = refused.json()["error"]
    assert "plain.png and small.png differ in size (96×80 px and 64×64 px)" in text and "\n" not in text
    missing = client.post("/api/change", json={"before": first["id"]})
    assert missing.status_code == 422 and missing.json()["error"] == "after: Field required"
    upload = client.post("/api/images/upload", files={"file": ("notes.txt", io.BytesIO(b"hello"), "text/plain")})
    assert upload.status_code == 400 and "unsupported file type" in upload.json()["error"]
    unknown = client.post("/api/change", json={"before": first["id"], "after": "notes"})
    assert unknown.status_code == 404 and "no image 'notes' in this session" in unknown.json()["error"]
    for bad, words in (
        ({"instance_iou_threshold": 2.0}, "instance_iou_threshold must be from 0 to 1"),
        ({"min_instance_area": -1}, "min_instance_area must be 0 or more"),
        ({"vocabulary": "building"}, "needs a background class and at least one other"),
        ({"vocabulary": ";".join(f"c{i}" for i in range(16)), "semantic": True}, "at most 15 classes"),
        ({"sam3": "/etc/sam3"}, "model-root"),
    ):
        response = client.post("/api/change", json={"before": first["id"], "after": second["id"], **bad})
        assert response.status_code == 400 and words in response.json()["error"], (bad, response.text)
    nan = client.post("/api/change", json={"before": first["id"], "after": second["id"], "prob_thd": "NaN"})
    assert nan.status_code == 422
    assert nothing_written(client)
    assert change_done(client, before=first["id"], after=second["id"])["state"] == "done"  # the app keeps working


def test_cancel_stops_a_change_run_before_the_next_date(client_with_dates, monkeypatch):
    from frugalvl.app import change_runs

    client, first, second = client_with_dates
    started, release = threading.Event(), threading.Event()
    original = change_runs.ObservedDates.query_scores

    def held(self, rgb, on_vision=None):
        started.set()
        release.wait(30)
        return original(self, rgb, on_vision)

    monkeypatch.setattr(change_runs.ObservedDates, "query_scores", held)
    run = client.post("/api/change", json={"before": first["id"], "after": second["id"]}).json()
    assert started.wait(60)  # the first date is being scored
    assert client.post(f"/api/change/{run['id']}/cancel").json()["id"] == run["id"]
    release.set()
    run = wait_change(client, run)
    assert run["state"] == "cancelled" and run["done"] < run["total"]
    assert client.get(f"/api/change/{run['id']}/download/change").status_code == 404


def test_change_runs_stay_in_their_session_and_need_the_pages_origin(client_with_dates, make_client):
    from fastapi.testclient import TestClient

    from tests.app.conftest import ORIGIN

    client, first, second = client_with_dates
    run = change_done(client, before=first["id"], after=second["id"])
    other = make_client(client.app)  # another browser on the same server
    for url in (
        f"/api/change/{run['id']}",
        f"/api/change/{run['id']}/download/change",
        f"/api/change/{run['id']}/image.png",
    ):
        assert other.get(url).status_code == 404
    assert other.post(f"/api/change/{run['id']}/cancel").status_code == 404
    assert other.post("/api/change", json={"before": first["id"], "after": second["id"]}).status_code == 404
    bare = TestClient(client.app, base_url=ORIGIN)  # no Origin: not the page's own request
    refused = bare.post("/api/change", json={"before": first["id"], "after": second["id"]})
    assert refused.status_code == 403 and len(client.app.state.sessions) == 2  # refused before any session


# --- the page ---------------------------------------------------------------------------------------------


@pytest.fixture
def served_change_app(sam3_bundle, dates, tmp_path):
    pytest.importorskip("uvicorn")
    from frugalvl.app import AppConfig, create_app

    app = create_app(AppConfig(models={"sam3": SAM3}, workdir=tmp_path / "work", samples=tuple(dates)))
    app.state.hub._models[("sam3", SAM3)] = sam3_bundle  # as if loaded from --sam3
    port, stop = start_server(app)
    yield f"http://127.0.0.1:{port}/"
    stop()


@needs_chromium
def test_change_between_two_dates_in_the_browser(served_change_app, tmp_path):
    import rasterio

    with browser_page(served_change_app, accept_downloads=True) as (page, errors):
        page.wait_for_selector("#sample option[value=after]", state="attached")
        for name in ("before", "after"):  # the two dates, opened as any image is
            page.select_option("#sample", name)
            page.click("#open-sample")
            page.wait_for_function(f"document.getElementById('image-info').textContent.startsWith('{name}.tif')")
        assert page.locator("#change-after option").count() == 2
        assert page.input_value("#change-before") != page.input_value("#change-after")

        page.fill("#vocabulary", VOCAB)
        page.click("#change-run")
        page.wait_for_selector("body[data-change-layer=change]", state="attached", timeout=90_000)
        assert page.locator("#change-state").inner_text().startswith("done in")
        assert page.locator("#map .leaflet-change-after-pane img.leaflet-tile-loaded").count() > 0  # second date
        change_tiles = "#map .leaflet-overlay-pane img.leaflet-tile-loaded[src*='/api/change/']"
        assert page.locator(change_tiles).count() > 0  # the change layer lies over both dates
        rows = page.locator("#change-table tbody tr")
        assert rows.count() > 0
        assert "ha" in page.inner_text("#change-summary") and "changed:" in page.inner_text("#change-summary")
        assert all(t.endswith("ha") for t in page.locator("#change-table td.num").all_inner_texts())

        # the swipe: drag the slider to a fifth of the map; the second date is clipped there, the map stays
        centre = page.evaluate("JSON.stringify(state.map.getCenter())")
        box = page.locator("#change-swipe").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.2, y, steps=8)
        page.mouse.up()
        ratio = float(page.evaluate("document.body.dataset.swipe"))
        assert 0.15 < ratio < 0.25, ratio
        assert page.evaluate("JSON.stringify(state.map.getCenter())") == centre
        clip = page.evaluate("state.map.getPane('change-after').style.clip")
        left = float(clip.split(",")[3].strip().rstrip("px)"))
        map_width = page.locator("#map").bounding_box()["width"]
        origin = page.evaluate("state.map.containerPointToLayerPoint([0, 0]).x")
        assert left - origin == pytest.approx(map_width * ratio, abs=2)

        # the from→to layer, then the change GeoTIFF downloaded
        page.check("input[name=change-layer][value=fromto]")
        page.wait_for_selector("#map img.leaflet-tile-loaded[src*='layer=fromto']", state="attached")
        with page.expect_download() as download:
            page.click("#change-download-change")
        saved = tmp_path / "change.tif"
        download.value.save_as(saved)
        with rasterio.open(saved) as src:
            assert src.crs.to_epsg() == 32618 and (src.width, src.height) == (128, 128)
        assert page.locator("#change-download-transitions").is_visible()
        page.screenshot(path=str(tmp_path / "change.png"))
        assert errors == [], errors

        # a refused setting: one line in the page, and the shown result stays
        page.click("#change-section details summary")
        page.fill("#instance_iou_threshold", "3")
        page.click("#change-run")
        page.wait_for_function("document.getElementById('message').textContent.includes('instance_iou_threshold')")
        assert page.evaluate("document.body.dataset.change") == "done"
        assert page.locator("#change-download-change").is_visible()
