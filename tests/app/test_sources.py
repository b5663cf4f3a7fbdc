"""Remote sources in the app: a STAC item over a local range server and an XYZ service over a local
tile server read into the session and segmented like an image; refused sources and assets (file
links, local paths, /vsi paths, a VRT asset), oversized areas in one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import rasterio

from frugalvl.testing.http import serve_folder
from tests.app.test_api import VOCAB, library_result, run_done
from tests.sources.test_xyz import PX, TX0, TY0, Z, lonlat, tiles  # noqa: F401 (the tile server fixture)


def item(assets: dict, item_id: str = "ITEM_7") -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": None,
        "properties": {"datetime": "2024-06-01T10:00:00Z"},
        "links": [{"rel": "self", "href": "file:///etc/passwd"}],  # links are never followed
        "assets": assets,
    }


@pytest.fixture
def web(tmp_path, small_geotiff):
    """The small Landsat sample on square 1.5 km pixels (STAC grids are square), served with an item."""
    folder = tmp_path / "web"
    folder.mkdir()
    with rasterio.open(small_geotiff) as src:
        data, profile = src.read(), src.profile
        t = src.transform
    profile["transform"] = rasterio.Affine(1500.0, 0, t.c, 0, -1500.0, t.f)
    with rasterio.open(folder / "scene.tif", "w", **profile) as dst:
        dst.write(data)
    (folder / "item.json").write_text(json.dumps(item({"visual": {"href": "./scene.tif"}})))
    with serve_folder(folder) as base:
        yield folder, base


def post(client, **body):
    return client.post("/api/sources", json=body)


def test_stac_item_url_opens_the_item_and_runs_like_the_file(make_client, wait, tiny_clip_file, web):
    folder, base = web
    scene = folder / "scene.tif"
    client = make_client()
    response = post(client, source=f"{base}/item.json")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["name"] == "ITEM_7.tif" and info["crs"] == "EPSG:32618"  # the item's id names it
    with rasterio.open(scene) as src:
        assert (info["width"], info["height"]) == (src.width, src.height)
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    _, expected, _ = library_result(tiny_clip_file, scene, VOCAB)
    labels = client.get(f"/api/runs/{run['id']}/download/labels")
    with rasterio.MemoryFile(labels.content) as mem, mem.open() as out, rasterio.open(scene) as src:
        assert out.transform == src.transform and out.crs == src.crs
        np.testing.assert_array_equal(out.read(1), expected)  # the same labels as the file itself
    # a bbox: only the part of the item inside it
    with rasterio.open(scene) as src:
        from rasterio.warp import transform_bounds

        left, bottom, right, top = src.bounds
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", left, bottom, (left + right) / 2, top)
    part = post(client, source=f"{base}/item.json", bbox=[w, s, e, n]).json()
    assert part["height"] <= info["height"] and abs(part["width"] - info["width"] / 2) < 0.1 * info["width"]


def test_xyz_template_with_a_bbox_and_zoom(make_client, tiles):  # noqa: F811 (the fixture)
    url, image = tiles
    client = make_client()
    w, n = lonlat(100.3, 60.2)
    e, s = lonlat(500.6, 380.4)
    response = post(client, source=url, bbox=[w, s, e, n], zoom=Z)
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["crs"] == "EPSG:3857" and info["name"].startswith("xyz_127.0.0.1")
    assert abs(info["width"] - 400) <= 1 and abs(info["height"] - 320) <= 1
    shown = client.get(f"/api/images/{info['id']}/image.png")
    assert shown.status_code == 200
    from PIL import Image

    rgba = np.asarray(Image.open(io.BytesIO(shown.content)).convert("RGBA"))
    r0, c0 = 60, 100
    expected = image[r0 : r0 + rgba.shape[0], c0 : c0 + rgba.shape[1]]
    valid = rgba[..., 3] > 0
    assert valid.mean() > 0.5  # tile (1, 2) is 404 and (2, 1) HTML: nodata there
    assert np.array_equal(rgba[..., :3][valid], expected[valid])
    # no bbox, a huge bbox, a zoom out of range: one line each
    assert "draw or type the area" in post(client, source=url, zoom=Z).json()["error"]
    huge = post(client, source=url, bbox=[-10.0, 40.0, 10.0, 55.0], zoom=Z)
    assert huge.status_code == 413 and "more than the app opens" in huge.json()["error"]
    assert post(client, source=url, bbox=[w, s, e, n], zoom=30).status_code == 422
    assert post(client, source=url, bbox=[e, s, w, n], zoom=Z).status_code == 422


@pytest.mark.parametrize(
    "href,fragment",
    [
        ("file:///etc/passwd", "not an http(s) URL"),
        ("/etc/passwd", "is a file path"),
        ("~/secret.tif", "is a file path"),
        ("/vsicurl/http://127.0.0.1:9/x.tif", "is a file path"),
        ("vsizip/../../../etc/passwd", None),
        ("s3://bucket/x.tif", "not an http(s) URL"),
    ],
)
def test_item_assets_outside_the_url_rules_are_refused(make_client, web, href, fragment):
    folder, base = web
    (folder / "bad.json").write_text(json.dumps(item({"visual": {"href": href}})))
    client = make_client()
    response = post(client, source=f"{base}/bad.json")
    assert response.status_code == 400, response.text
    if fragment:
        assert fragment in response.json()["error"]
    assert client.get("/api/images/none").status_code == 404
    assert not any(client.app.state.sessions.root.glob("*/sources/*/*.tif"))


def test_a_vrt_asset_naming_a_server_file_is_not_opened(make_client, web, small_geotiff):
    folder, base = web
    (folder / "x.vrt").write_text(
        f'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f"<SourceFilename>{small_geotiff}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    (folder / "vrt.json").write_text(json.dumps(item({"visual": {"href": "x.vrt"}})))
    response = post(make_client(), source=f"{base}/vrt.json")
    assert response.status_code == 400 and "as GTiff, JP2OpenJPEG, PNG, JPEG" in response.json()["error"]


@pytest.mark.parametrize(
    "source",
    ["file:///etc/passwd", "/etc/passwd", "xyz+file:///{z}/{x}/{y}.png", "wmts+/vsicurl/x", "https://h/ x.json"],
)
def test_sources_outside_the_url_rules_are_refused(make_client, source):
    response = post(make_client(), source=source, bbox=[0.0, 0.0, 1.0, 1.0], zoom=3)
    assert response.status_code == 400 and "\n" not in response.json()["error"]


def test_addresses_of_the_server_network_need_private_sources_when_listening_beyond_it(make_client, web, tiles):  # noqa: F811
    """Bound to 127.0.0.1 the page may read local servers (the tests' own); bound to all interfaces it may
    not, unless private_sources is on; a link-local address (a cloud's metadata service) never."""
    _, base = web
    url, _ = tiles
    w, n = lonlat(10.5, 10.5)
    e, s = lonlat(300.5, 300.5)
    area = dict(bbox=[w, s, e, n], zoom=Z)
    exposed = make_client(host="0.0.0.0")
    for body in (dict(source=f"{base}/item.json"), dict(source=url, **area)):
        refused = post(exposed, **body)
        assert refused.status_code == 400, refused.text
        assert "local network" in refused.json()["error"] and "\n" not in refused.json()["error"]
    assert not any(exposed.app.state.sessions.root.glob("*/sources/*/*.tif"))
    allowed = make_client(host="0.0.0.0", private_sources=True)
    assert post(allowed, source=f"{base}/item.json").status_code == 200
    for client in (make_client(), allowed):
        metadata = post(client, source="http://169.254.169.254/latest/item.json")
        assert metadata.status_code == 400 and "never read" in metadata.json()["error"]


def test_an_asset_on_the_server_network_is_refused_when_listening_beyond_it(make_client, tmp_path):
    """The item is public-looking but its asset points at the server's own network."""
    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "item.json").write_text(json.dumps(item({"visual": {"href": "http://10.0.0.5/scene.tif"}})))
    with serve_folder(folder) as base:
        response = post(make_client(host="0.0.0.0", private_sources=False), source=f"{base}/item.json")
    # the item itself is on 127.0.0.1 here, so the first refusal is the item's own address
    assert response.status_code == 400 and "local network" in response.json()["error"]
    with serve_folder(folder) as base:
        response = post(make_client(private_sources=False), source=f"{base}/item.json")
    # bound to 127.0.0.1: the asset on 10.0.0.5 is a private address, allowed, and fails to be read
    assert response.status_code == 400 and "local network" not in response.json()["error"]


def test_an_image_url_opens_like_the_file_and_a_disguised_vrt_does_not(
    make_client, wait, tiny_clip_file, web, small_geotiff
):
    """A plain COG URL (e.g. a date for change detection) is read window by window as a one-asset item."""
    folder, base = web
    scene = folder / "scene.tif"
    client = make_client()
    response = post(client, source=f"{base}/scene.tif")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["name"] == "scene.tif" and info["crs"] == "EPSG:32618"
    run = run_done(client, wait, image=info["id"], vocabulary=VOCAB)
    _, expected, _ = library_result(tiny_clip_file, scene, VOCAB)
    labels = client.get(f"/api/runs/{run['id']}/download/labels")
    with rasterio.MemoryFile(labels.content) as mem, mem.open() as out:
        np.testing.assert_array_equal(out.read(1), expected)
    (folder / "fake.tif").write_text(
        f'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f"<SourceFilename>{small_geotiff}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    fake = post(client, source=f"{base}/fake.tif")
    assert fake.status_code == 400 and "as GTiff, JP2OpenJPEG, PNG, JPEG" in fake.json()["error"]
    exposed = post(make_client(host="0.0.0.0"), source=f"{base}/scene.tif")
    assert exposed.status_code == 400 and "local network" in exposed.json()["error"]
