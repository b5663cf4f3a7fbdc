"""The app's JSON API through FastAPI's TestClient, with a tiny random CLIP (no network)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

VOCAB = "background;water,river,lake;forest,tree"


def library_result(clip_file, path, vocabulary: str, **settings):
    """Labels and scores the library itself gives (the CLI's path), to compare the app with."""
    from frugalvl.models.clip import load_clip
    from frugalvl.raster import read_image
    from frugalvl.segment.pipeline import segment_image
    from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
    from frugalvl.vocab import Vocabulary

    segmenter = SegEarthOV(
        load_clip(str(clip_file)), Vocabulary.parse(vocabulary), settings=SegEarthOVSettings(**settings)
    )
    image = read_image(path)
    result = segment_image(segmenter, image)
    labels = result.labels.astype(np.uint8)
    if image.nodata_mask is not None:
        labels[image.nodata_mask] = 255
    return image, labels, result.scores


def open_sample(client, name="landsat_small") -> dict:
    response = client.post("/api/images/sample", json={"name": name})
    assert response.status_code == 200, response.text
    return response.json()


def run_done(client, wait, **body) -> dict:
    response = client.post("/api/runs", json=body)
    assert response.status_code == 200, response.text
    run = wait(client, response.json())
    assert run["state"] == "done", run
    return run


def test_config_lists_samples_presets_and_methods(make_client):
    cfg = make_client().get("/api/config").json()
    assert {"landsat_small", "plain", "landsat_rgb_byte"} <= set(cfg["samples"])
    assert len(cfg["presets"]) == 23  # the 17 benchmarks of both papers and the 6 of SegEarth-OV3 v2
    levir = next(p for p in cfg["presets"] if p["name"] == "levir_cd")
    assert "segearth-ov" not in levir and levir["segearth-ov3"]["classes"] == "background;building"
    loveda = next(p for p in cfg["presets"] if p["name"] == "loveda")
    assert loveda["segearth-ov"]["classes"].startswith("background;building,roof,house;road")
    assert set(cfg["methods"]) == {"segearth-ov", "segearth-ov3"}


def test_whole_scene_run_matches_the_library(make_client, wait, tiny_clip_file, small_geotiff):
    import rasterio

    client = make_client()
    info = open_sample(client)
    assert info["georeferenced"] and info["crs"] == "EPSG:32618" and (info["width"], info["height"]) == (158, 143)
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    assert [c["name"] for c in run["classes"]] == ["background", "water", "forest"]
    image, expected, scores = library_result(tiny_clip_file, small_geotiff, VOCAB)

    response = client.get(f"/api/runs/{run['id']}/download/labels")
    assert response.status_code == 200
    with rasterio.MemoryFile(response.content) as mem, mem.open() as src:
        assert src.crs == image.crs and src.transform == image.transform
        assert json.loads(src.tags()["CLASS_NAMES"]) == ["background", "water", "forest"]
        assert src.profile["tiled"]  # written as a COG
        np.testing.assert_array_equal(src.read(1), expected)

    # areas: pixel counts over valid pixels, times the pixel area (1.5 km × 1.5 km here) in ha
    valid = expected != 255
    for i, area in enumerate(run["areas"]):
        count = int((expected[valid] == i).sum())
        assert area["pixels"] == count
        assert area["ha"] == pytest.approx(count * info["pixel_area_m2"] / 1e4, rel=1e-6)

    # a click: every class's score at the pixel under a map point, as the library computed them
    import rasterio.warp

    row, col = 70, 80
    x, y = image.transform * (col + 0.5, row + 0.5)
    (lng,), (lat,) = rasterio.warp.transform(image.crs, "EPSG:4326", [x], [y])
    got = client.get(f"/api/runs/{run['id']}/scores", params={"lat": lat, "lng": lng}).json()
    assert got["inside"] and (got["row"], got["col"]) == (row, col)
    np.testing.assert_allclose([s["score"] for s in got["scores"]], scores[:, row, col], atol=2e-3)
    assert got["label"] == expected[row, col]


def test_downloads_vectors_and_overlay(make_client, wait):
    import geopandas as gpd
    from PIL import Image

    client = make_client()
    info = open_sample(client)
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    assert run["files"] == ["labels", "overlay", "vectors"]
    overlay = Image.open(io.BytesIO(client.get(f"/api/runs/{run['id']}/download/overlay").content))
    assert overlay.height == info["height"] and overlay.width > info["width"]  # the legend is on the right
    vectors = client.get(f"/api/runs/{run['id']}/download/vectors")
    frame = gpd.read_file(io.BytesIO(vectors.content))
    assert frame.crs.to_epsg() == 32618
    # polygon areas per class sum to the class's pixel area
    for area in run["areas"]:
        total = frame.loc[frame["class"] == area["name"]].area.sum()
        assert total == pytest.approx(area["pixels"] * info["pixel_area_m2"], rel=1e-9, abs=1e-3)


def test_second_run_with_one_class_changed_reuses_caches_and_equals_a_fresh_run(
    make_client, wait, tiny_clip_file, small_geotiff
):
    client = make_client()
    hub = client.app.state.hub
    info = open_sample(client)
    run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    queries, misses = len(hub.query_cache), hub.token_cache.misses
    changed = "background;water,river,pond;forest,tree"
    run = run_done(client, wait, image=info["id"], vocabulary=changed)
    assert len(hub.query_cache) == queries + 1  # only "pond" was encoded
    assert hub.token_cache.misses == misses  # every window's image tokens came from the cache
    assert hub.token_cache.hits >= misses
    import rasterio

    _, expected, _ = library_result(tiny_clip_file, small_geotiff, changed)
    with rasterio.MemoryFile(client.get(f"/api/runs/{run['id']}/download/labels").content) as mem, mem.open() as src:
        np.testing.assert_array_equal(src.read(1), expected)


def test_visible_area_run_covers_the_window_only(make_client, wait, small_geotiff):
    import rasterio
    import rasterio.warp
    from affine import Affine

    client = make_client()
    info = open_sample(client)
    with rasterio.open(small_geotiff) as src:
        crs, transform = src.crs, src.transform
    # a view over columns 40..100 and rows 30..90
    west, north = transform * (40, 30)
    east, south = transform * (100, 90)
    w, s, e, n = rasterio.warp.transform_bounds(crs, "EPSG:4326", west, south, east, north)
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB, area="visible", bounds=[[s, w], [n, e]])
    x0, y0, x1, y1 = run["window"]
    assert x0 <= 40 and y0 <= 30 and x1 >= 100 and y1 >= 90 and (x1 - x0) < 158
    with rasterio.MemoryFile(client.get(f"/api/runs/{run['id']}/download/labels").content) as mem, mem.open() as src:
        assert (src.width, src.height) == (x1 - x0, y1 - y0)
        assert src.transform == transform * Affine.translation(x0, y0)
    outside = client.post(
        "/api/runs", json={"image": info["id"], "vocabulary": VOCAB, "area": "visible", "bounds": [[-10, 10], [-9, 11]]}
    )
    assert outside.status_code == 400 and "does not overlap" in outside.json()["error"]


def test_tiles_show_class_colours_and_hide_toggled_classes(make_client, wait):
    from PIL import Image

    from frugalvl.app.tiles import ORIGIN

    client = make_client()
    info = open_sample(client)
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    # the tile holding the image centre at zoom 9
    import math

    (s, w), (n, e) = info["bounds"]
    lat, lng = (s + n) / 2, (w + e) / 2
    z = 9
    x = int((lng + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    base = np.array(Image.open(io.BytesIO(client.get(f"/api/images/{info['id']}/tiles/{z}/{x}/{y}.png").content)))
    assert base.shape == (256, 256, 4) and base[..., 3].max() == 255
    colours = {tuple(int(v) for v in bytes.fromhex(c["colour"][1:])) for c in run["classes"]}
    tile = np.array(Image.open(io.BytesIO(client.get(f"/api/runs/{run['id']}/tiles/{z}/{x}/{y}.png").content)))
    shown = {tuple(p[:3]) for p in tile.reshape(-1, 4) if p[3] == 255}
    assert shown and shown <= colours
    top = max(run["areas"], key=lambda a: a["pixels"])["name"]
    hide = next(c for c in run["classes"] if c["name"] == top)
    hidden = np.array(
        Image.open(
            io.BytesIO(
                client.get(f"/api/runs/{run['id']}/tiles/{z}/{x}/{y}.png", params={"hide": str(hide["index"])}).content
            )
        )
    )
    colour = tuple(bytes.fromhex(hide["colour"][1:]))
    assert not any(tuple(p[:3]) == colour for p in hidden.reshape(-1, 4) if p[3] == 255)
    assert (hidden[..., 3] == 255).sum() < (tile[..., 3] == 255).sum()
    # a tile far away is transparent
    far = np.array(Image.open(io.BytesIO(client.get(f"/api/runs/{run['id']}/tiles/{z}/0/0.png").content)))
    assert far[..., 3].max() == 0
    assert ORIGIN > 0


def test_plain_image_upload_runs_in_pixel_coordinates(make_client, wait, small_png, tiny_clip_file):
    from PIL import Image

    client = make_client()
    with open(small_png, "rb") as f:
        info = client.post("/api/images/upload", files={"file": ("my scene.png", f, "image/png")}).json()
    assert not info["georeferenced"] and (info["width"], info["height"]) == (96, 80)
    preview = Image.open(io.BytesIO(client.get(f"/api/images/{info['id']}/image.png").content))
    assert preview.size == (96, 80)
    assert client.get(f"/api/images/{info['id']}/tiles/1/0/0.png").status_code == 404
    run = run_done(client, wait, image=info["id"], vocabulary="water;grass")
    assert run["bounds"] == [[-80, 0], [0, 96]]
    labels = np.array(Image.open(io.BytesIO(client.get(f"/api/runs/{run['id']}/download/labels").content)))
    _, expected, scores = library_result(tiny_clip_file, small_png, "water;grass")
    np.testing.assert_array_equal(labels, expected)
    got = client.get(f"/api/runs/{run['id']}/scores", params={"lat": -10.5, "lng": 60.2}).json()  # CRS.Simple
    assert (got["row"], got["col"]) == (10, 60)
    np.testing.assert_allclose([s["score"] for s in got["scores"]], scores[:, 10, 60], atol=2e-3)


def test_cancel_stops_a_tiled_run(make_client, wait):
    client = make_client(tile=64)
    info = open_sample(client)
    run = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB}).json()
    client.post(f"/api/runs/{run['id']}/cancel")
    run = wait(client, run)
    assert run["state"] == "cancelled" and run["done"] < run["total"]
    assert client.get(f"/api/runs/{run['id']}/download/labels").status_code == 404
    assert run_done(client, wait, image=info["id"], vocabulary=VOCAB)["total"] == 9  # tiles of 64 px, overlap 16


def test_a_refused_run_leaves_the_run_in_progress_alone(make_client, wait):
    client = make_client(tile=64)
    info = open_sample(client)
    run = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB}).json()
    for bad in ({"clip": "/etc/ViT-B-16.pt"}, {"prob_thd": 2.0}, {"vocabulary": " ; "}):
        refused = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB, **bad})
        assert refused.status_code in (400, 422), refused.text
    run = wait(client, run)
    assert run["state"] == "done" and run["done"] == run["total"] == 9


# --- safety ---------------------------------------------------------------------------------------------


def test_server_paths_stay_under_the_data_roots(make_client, wait, small_geotiff, tmp_path):
    import shutil

    client = make_client()
    root = make_client.root
    shutil.copy(small_geotiff, root / "scene.tif")
    outside = tmp_path / "secret.tif"
    shutil.copy(small_geotiff, outside)
    (root / "link.tif").symlink_to(outside)
    assert client.post("/api/images/path", json={"path": "scene.tif"}).status_code == 200
    assert client.post("/api/images/path", json={"path": str(root / "scene.tif")}).status_code == 200
    for bad in ["../secret.tif", str(outside), "link.tif", "sub/../../secret.tif", "/etc/passwd"]:
        response = client.post("/api/images/path", json={"path": bad})
        assert response.status_code == 400, bad
        assert "outside the folders" in response.json()["error"]
    # a model path typed in the page is checked the same way, when the run is asked for
    info = open_sample(client)
    run = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB, "clip": "../secret/ViT.pt"})
    assert run.status_code == 400 and "outside the folders" in run.json()["error"]


def test_no_server_paths_without_a_data_root(make_client):
    client = make_client(data_roots=())
    response = client.post("/api/images/path", json={"path": "/etc/hostname"})
    assert response.status_code == 400 and "data-root" in response.json()["error"]
    assert client.get("/api/config").json()["server_paths"] is False


def test_sessions_are_isolated(make_client, wait):
    alice = make_client()
    bob = make_client(app=alice.app)
    info = open_sample(alice)
    run = run_done(alice, wait, image=info["id"], vocabulary=VOCAB)
    bob.get("/api/config")
    assert bob.cookies.get("frugalvl_session") not in (None, alice.cookies.get("frugalvl_session"))
    for url in [
        f"/api/images/{info['id']}",
        f"/api/images/{info['id']}/tiles/9/142/218.png",
        f"/api/runs/{run['id']}",
        f"/api/runs/{run['id']}/download/labels",
        f"/api/runs/{run['id']}/scores?lat=24&lng=-77",
    ]:
        assert bob.get(url).status_code == 404, url
        assert alice.get(url).status_code == 200, url
    response = bob.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB})
    assert response.status_code == 404
    assert bob.post(f"/api/runs/{run['id']}/cancel").status_code == 404


def test_expired_sessions_and_shutdown_delete_their_files(make_client, wait, tmp_path):
    client = make_client(session_ttl_s=3600)
    info = open_sample(client)
    run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    store = client.app.state.sessions
    folders = [p for p in store.root.iterdir()]
    assert len(folders) == 1 and any(folders[0].rglob("*.tif"))
    import time

    store.expire(now=time.monotonic() + 7200)
    assert not folders[0].exists() and len(store) == 0
    assert client.get(f"/api/images/{info['id']}").status_code == 404  # a new session does not see it
    open_sample(client)
    client.app.state.close()
    assert not any(store.root.iterdir())


def test_upload_limit_and_bad_files_leave_the_app_running(make_client, small_png):
    client = make_client(max_upload_mb=0.1)
    for size in (300_000, 130_000):  # refused from the declared length; refused while streaming (within the slack)
        big = io.BytesIO(b"\0" * size)
        response = client.post("/api/images/upload", files={"file": ("big.png", big, "image/png")})
        assert response.status_code == 413 and "more than this server accepts" in response.json()["error"]
    response = client.post("/api/images/upload", files={"file": ("notes.txt", io.BytesIO(b"hello"), "text/plain")})
    assert response.status_code == 400 and "unsupported file type" in response.json()["error"]
    response = client.post("/api/images/upload", files={"file": ("broken.png", io.BytesIO(b"not a png"), "image/png")})
    assert response.status_code == 400 and "not a valid image" in response.json()["error"]
    with open(small_png, "rb") as f:
        assert client.post("/api/images/upload", files={"file": ("ok.png", f, "image/png")}).status_code == 200
    uploads = [p for p in client.app.state.sessions.root.rglob("*") if p.is_file()]
    assert [p.name for p in uploads] == ["ok.png"]  # rejected uploads left nothing behind


def test_bad_run_inputs_give_a_message_and_the_app_keeps_running(make_client, wait):
    client = make_client()
    info = open_sample(client)
    empty = client.post("/api/runs", json={"image": info["id"], "vocabulary": " ; "})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    none = client.post("/api/runs", json={"image": info["id"], "vocabulary": ""})
    assert none.status_code == 400 and "vocabulary is empty" in none.json()["error"]
    # model fields are checked when the run is asked for, not when it loads
    missing = client.post(
        "/api/runs",
        json={"image": info["id"], "vocabulary": VOCAB, "clip": str(make_client.root / "missing-ViT-B-16.pt")},
    )
    assert missing.status_code == 400 and "missing-ViT-B-16.pt" in missing.json()["error"]
    escape = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB, "clip": "/etc/ViT-B-16.pt"})
    assert escape.status_code == 400 and "outside the folders" in escape.json()["error"]
    bad_method = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB, "method": "nope"})
    assert bad_method.status_code == 400 and "unknown method" in bad_method.json()["error"]
    assert client.post("/api/images/sample", json={"name": "nope"}).status_code == 400
    run_done(client, wait, image=info["id"], vocabulary=VOCAB)  # still works


def test_preset_vocabulary_and_thresholds_apply(make_client, wait):
    client = make_client()
    info = open_sample(client)
    run = run_done(client, wait, image=info["id"], vocabulary="", preset="loveda")
    assert [c["name"] for c in run["classes"]] == [
        "background",
        "building",
        "road",
        "water",
        "barren",
        "forest",
        "agricultural",
    ]


# --- pure helpers ------------------------------------------------------------------------------------------


def test_resolve_allowed_and_file_names(tmp_path):
    from frugalvl.app.safety import model_spec_path, resolve_allowed, safe_filename
    from frugalvl.errors import UserError

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    assert resolve_allowed("a/../a", [root]) == (root / "a").resolve()
    for bad in ["..", "a/../../x", "/", "", "x\x00y"]:
        with pytest.raises(UserError):
            resolve_allowed(bad, [root])
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\dir\\my scene?.TIF") == "my_scene.TIF"
    assert model_spec_path("ViT-B-16") is None and model_spec_path("facebook/sam3") is None
    assert model_spec_path("ViT-B-32:laion2b_s34b_b79k") is None and model_spec_path("hf-hub:org/repo") is None
    assert model_spec_path("ViT-B-32:/w/remote.pt") == ("ViT-B-32:", "/w/remote.pt")
    assert model_spec_path("local-dir:/m") == ("local-dir:", "/m")
    assert model_spec_path("/models/sam3") == ("", "/models/sam3")


def test_command_line_checks_its_options(tmp_path, capsys):
    import argparse

    from frugalvl.commands import app as command
    from frugalvl.errors import UserError

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["app", "--data-root", str(tmp_path)])
    assert command.config_from_args(args).host == "127.0.0.1"  # generated options: None = the field's default
    assert command.config_from_args(args).data_roots == (tmp_path.resolve(),)
    with pytest.raises(UserError, match="not a folder"):
        command.config_from_args(parser.parse_args(["app", "--data-root", str(tmp_path / "nope")]))
    with pytest.raises(UserError, match="max-upload-mb"):
        command.config_from_args(parser.parse_args(["app", "--max-upload-mb", "0"]))


def test_command_line_model_paths_are_made_absolute(tmp_path, monkeypatch):
    """``frugalvl app`` serves from an empty working folder: the operator's relative model paths are
    resolved first (hub names stay as they are)."""
    import argparse

    from frugalvl.commands import app as command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "clip.pt").write_bytes(b"x")
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["app", "--clip", "weights/clip.pt", "--sam3", "facebook/sam3", "--upsampler", "up.pt"])
    models = command.config_from_args(args).models
    assert models["clip"] == str(tmp_path / "weights" / "clip.pt") and models["sam3"] == "facebook/sam3"
    assert models["upsampler"] == str(tmp_path / "up.pt")
    assert command.absolute_model_spec("ViT-B-32:laion2b_s34b_b79k") == "ViT-B-32:laion2b_s34b_b79k"
    assert command.absolute_model_spec("ViT-B-16:weights/clip.pt") == f"ViT-B-16:{tmp_path / 'weights' / 'clip.pt'}"


def test_segearth_ov3_runs_share_prompt_features_and_match_the_library(make_client, wait, small_geotiff):
    import rasterio

    from frugalvl.raster import read_image
    from frugalvl.segment.pipeline import segment_image
    from frugalvl.segment.segearth_ov3 import SegEarthOV3
    from frugalvl.testing.sam3 import random_sam3
    from frugalvl.vocab import Vocabulary

    client = make_client(models={"sam3": "random-tiny"})
    bundle = random_sam3("tiny", seed=0)
    hub = client.app.state.hub
    hub._models[("sam3", "random-tiny")] = bundle  # as if loaded from --sam3
    info = open_sample(client)
    run_done(client, wait, image=info["id"], method="segearth-ov3", vocabulary="water;forest,tree;city")
    assert len(hub.query_cache) == 4
    changed = "water;forest,wood;city"
    run = run_done(client, wait, image=info["id"], method="segearth-ov3", vocabulary=changed)
    assert len(hub.query_cache) == 5  # "wood" only
    image = read_image(small_geotiff)
    expected = segment_image(SegEarthOV3(bundle, Vocabulary.parse(changed)), image).labels.astype(np.uint8)
    expected[image.nodata_mask] = 255
    with rasterio.MemoryFile(client.get(f"/api/runs/{run['id']}/download/labels").content) as mem, mem.open() as src:
        np.testing.assert_array_equal(src.read(1), expected)


def test_frugalvl_app_refuses_a_bad_data_root_with_exit_2(tmp_path, capsys):
    from frugalvl.cli import main

    assert main(["app", "--data-root", str(tmp_path / "nope"), "--port", "1"]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_one_palette_for_the_tiled_and_untiled_label_files_and_the_app_legend(make_client, wait, tmp_path):
    """The app's legend, the tiled label COG it writes and an untiled label file of the same vocabulary
    carry the same colours: the name-based ones (water blue, forest green), not an index palette."""
    import rasterio

    from frugalvl.palette import class_colours
    from frugalvl.raster import RasterImage, write_labels

    client = make_client()
    info = open_sample(client)
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    names = [c["name"] for c in run["classes"]]
    legend = [tuple(bytes.fromhex(c["colour"][1:])) for c in run["classes"]]
    with rasterio.MemoryFile(client.get(f"/api/runs/{run['id']}/download/labels").content) as mem, mem.open() as src:
        tiled = [src.colormap(1)[i][:3] for i in range(len(names))]
        assert src.colormap(1)[255][3] == 0  # nodata transparent in QGIS
    image = RasterImage(
        rgb=np.zeros((8, 8, 3), np.uint8),
        path=tmp_path / "x.tif",
        crs="EPSG:32618",
        transform=rasterio.Affine(30, 0, 0, 0, -30, 0),
    )
    with rasterio.open(write_labels(tmp_path, image, np.zeros((8, 8), np.int64), names)) as src:
        untiled = [src.colormap(1)[i][:3] for i in range(len(names))]
    assert legend == tiled == untiled == class_colours(names)
    water, forest = legend[names.index("water")], legend[names.index("forest")]
    assert water[2] > water[0] + 60 and forest[1] > forest[0] + 30  # blue water, green forest


def test_basemap_is_off_by_default_and_passed_to_the_page(make_client):
    assert make_client().get("/api/config").json()["basemap"] is None  # no network unless asked
    url = "https://tiles.example.org/{z}/{x}/{y}.png"
    assert make_client(basemap=url).get("/api/config").json()["basemap"] == url


def test_app_command_generates_the_basemap_option():
    import argparse

    from frugalvl.commands.app import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert "--basemap" in parser._subparsers._group_actions[0].choices["app"].format_help()  # type: ignore[union-attr]
    args = parser.parse_args(["app", "--basemap", "https://t/{z}/{x}/{y}.png"])
    assert config_from_args(args).basemap == "https://t/{z}/{x}/{y}.png"
    assert config_from_args(parser.parse_args(["app"])).basemap is None


def test_the_status_line_names_the_loading_phases(make_client, wait, monkeypatch):
    """While the model loads and the prompts are encoded, the run's status says so (not 'tile 0 of 1')."""
    from frugalvl.app import jobs

    seen: list[str] = []
    original = jobs.RunPhases.phase

    def spy(self, name, item=""):
        original(self, name, item)
        seen.append(self.run.phase)

    monkeypatch.setattr(jobs.RunPhases, "phase", spy)
    client = make_client()
    info = open_sample(client)
    run = run_done(client, wait, image=info["id"], vocabulary="water;land")
    assert any(p.startswith("loading CLIP ") for p in seen), seen
    assert any(p.startswith("encoding 160 text prompts") for p in seen), seen
    assert any(p.startswith("assembling the label map of ") for p in seen), seen
    assert seen.index(next(p for p in seen if p.startswith("encoding"))) < len(seen) - 1
    assert run["state"] == "done" and "phase" in run
