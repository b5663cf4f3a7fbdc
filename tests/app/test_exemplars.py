"""Exemplars drawn in the app (docs/app.md#exemplars): kept per session and image, checked like an
exemplar file, used by runs through the library, and downloaded in the format ``--exemplars`` reads."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.app.test_api import library_result, open_sample, run_done


def add(client, image_id, points, cls="field", positive=True, kind="box"):
    return client.post(
        f"/api/images/{image_id}/exemplars", json={"class": cls, "positive": positive, "kind": kind, "points": points}
    )


def lat_lng(image, col, row):
    """The map point (lat, lng) of an image pixel corner."""
    import rasterio.warp

    x, y = image.transform * (col, row)
    (lng,), (lat,) = rasterio.warp.transform(image.crs, "EPSG:4326", [x], [y])
    return [lat, lng]


def test_add_list_delete_and_sessions_are_isolated(make_client):
    client, other = make_client(), make_client()
    info = open_sample(client, "plain")
    got = add(client, info["id"], [[-10, 5], [-30, 40]])  # CRS.Simple: lat = -row, lng = col
    assert got.status_code == 200, got.text
    (ex,) = got.json()["exemplars"]
    assert ex["class"] == "field" and ex["positive"] is True
    assert sorted(tuple(p) for p in ex["rings"][0][:4]) == [(-30, 5), (-30, 40), (-10, 5), (-10, 40)]
    tri = [[-50, 60], [-70, 60], [-70, 90]]
    listed = add(client, info["id"], tri, cls="  Water  body ", positive=False, kind="polygon").json()
    assert [(e["class"], e["positive"]) for e in listed["exemplars"]] == [("field", True), ("Water body", False)]
    assert listed["classes"] == ["field", "Water body"]
    # another session sees neither the image nor, on the same sample, the exemplars
    assert other.get(f"/api/images/{info['id']}/exemplars").status_code == 404
    mine = open_sample(other, "plain")
    assert other.get(f"/api/images/{mine['id']}/exemplars").json()["exemplars"] == []
    # the same image opened again in this session (a page reload) finds them
    again = open_sample(client, "plain")
    assert len(client.get(f"/api/images/{again['id']}/exemplars").json()["exemplars"]) == 2
    gone = client.delete(f"/api/images/{again['id']}/exemplars/{ex['id']}")
    assert gone.status_code == 200 and [e["class"] for e in gone.json()["exemplars"]] == ["Water body"]
    assert client.delete(f"/api/images/{again['id']}/exemplars/{ex['id']}").status_code == 404


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"class": "x", "kind": "box", "points": [[-200, 500], [-300, 600]]}, 400, "outside"),
        ({"class": "x", "kind": "polygon", "points": [[-5, 5], [-10, 10], [-15, 15]]}, 400, "empty polygon"),
        ({"class": "   ", "kind": "box", "points": [[-5, 5], [-10, 10]]}, 400, "no class"),
        ({"kind": "box", "points": [[-5, 5], [-10, 10]]}, 422, "class"),
        ({"class": "x", "kind": "circle", "points": [[-5, 5], [-10, 10]]}, 422, "kind"),
        ({"class": "x", "kind": "box", "points": [[-5, 5], [-10, 10], [-1, 1]]}, 400, "two opposite corners"),
        ({"class": "x", "kind": "box", "points": [[-5, 5e12], [-10, 10]]}, 422, "points"),
        ({"class": "x" * 101, "kind": "box", "points": [[-5, 5], [-10, 10]]}, 422, "class"),
    ],
)
def test_bad_exemplars_are_one_line(make_client, body, status, fragment):
    client = make_client()
    info = open_sample(client, "plain")
    got = client.post(f"/api/images/{info['id']}/exemplars", json=body)
    assert got.status_code == status, got.text
    error = got.json()["error"]
    assert fragment in error and "\n" not in error
    assert client.get(f"/api/images/{info['id']}/exemplars").json()["exemplars"] == []


def test_a_negative_only_new_class_is_refused_when_the_run_is_asked_for(make_client):
    client = make_client()
    info = open_sample(client, "plain")
    assert add(client, info["id"], [[-10, 5], [-30, 40]], cls="pond", positive=False).status_code == 200
    got = client.post("/api/runs", json={"image": info["id"], "vocabulary": "background;water"})
    assert got.status_code == 400 and "only negative examples" in got.json()["error"]
    assert client.get("/api/images/nope/exemplars").status_code == 404


def test_a_run_uses_the_exemplars_as_the_library_does_with_the_downloaded_file(
    make_client, wait, tiny_clip_file, small_png, tmp_path
):
    """A box on the plain image adds an example-only class; the run's labels equal the library's
    (attach_exemplars) with the downloaded GeoJSON, read by the CLI's exemplar reader."""
    from PIL import Image

    from frugalvl.models.clip import load_clip
    from frugalvl.raster import read_image
    from frugalvl.segment.exemplars import read_exemplars
    from frugalvl.segment.exemplars_run import attach_exemplars
    from frugalvl.segment.pipeline import segment_image
    from frugalvl.segment.segearth_ov import SegEarthOV
    from frugalvl.vocab import Vocabulary

    client = make_client()
    info = open_sample(client, "plain")
    vocab = "background;water"
    plain = run_done(client, wait, image=info["id"], vocabulary=vocab)
    add(client, info["id"], [[-10, 55], [-40, 90]], cls="field")
    add(client, info["id"], [[-60, 5], [-75, 30]], cls="water", positive=False)
    run = run_done(client, wait, image=info["id"], vocabulary=vocab)
    assert [c["name"] for c in plain["classes"]] == ["background", "water"]
    assert [c["name"] for c in run["classes"]] == ["background", "water", "field"]
    labels = np.array(Image.open(io.BytesIO(client.get(f"/api/runs/{run['id']}/download/labels").content)))
    assert (labels == 2).any() and run["areas"][2]["pixels"] == int((labels == 2).sum())

    download = client.get(f"/api/images/{info['id']}/exemplars.geojson")
    assert download.status_code == 200 and "plain_exemplars.geojson" in download.headers["content-disposition"]
    path = tmp_path / "drawn.geojson"
    path.write_bytes(download.content)
    features = json.loads(download.content)["features"]
    assert [(f["properties"]["class"], f["properties"]["positive"]) for f in features] == [
        ("field", True),
        ("water", False),
    ]
    read = read_exemplars(path, 80, 96)  # pixel coordinates, as the CLI reads them for this PNG
    assert [tuple(round(v) for v in e.box) for e in read.items] == [(55, 10, 90, 40), (5, 60, 30, 75)]
    segmenter = SegEarthOV(load_clip(str(tiny_clip_file)), Vocabulary.parse(vocab))
    expected = segment_image(attach_exemplars(segmenter, path, [small_png]), read_image(small_png)).labels
    np.testing.assert_array_equal(labels, expected)
    _, without, _ = library_result(tiny_clip_file, small_png, vocab)
    assert not np.array_equal(labels, without)


def test_georeferenced_download_is_in_map_coordinates(make_client, small_geotiff, tiny_clip_file, tmp_path):
    import geopandas as gpd
    import rasterio

    from frugalvl.segment.exemplars import read_exemplars

    client = make_client()
    info = open_sample(client)
    with rasterio.open(small_geotiff) as src:
        points = [lat_lng(src, 20, 30), lat_lng(src, 60, 50)]
        far = [lat_lng(src, src.width + 50, 10), lat_lng(src, src.width + 80, 20)]
        h, w, crs, transform = src.height, src.width, src.crs, src.transform
    assert add(client, info["id"], points, cls="cloud").status_code == 200
    path = tmp_path / "drawn.geojson"
    path.write_bytes(client.get(f"/api/images/{info['id']}/exemplars.geojson").content)
    assert gpd.read_file(path).crs.to_epsg() == 32618
    (e,) = read_exemplars(path, h, w, crs, transform).items
    # a box on the (lat/lng) map is a slightly turned quadrilateral in UTM: two of its corners are the
    # drawn ones, the pixel corners (20, 30) and (60, 50)
    corners = np.array(list(e.polygon.exterior.coords)[:4])
    np.testing.assert_allclose(corners[[0, 2]], [(20, 30), (60, 50)], atol=1e-3)
    assert 0.9 < e.polygon.area / (40 * 20) < 1.1  # about the drawn area
    assert add(client, info["id"], far, cls="cloud").status_code == 400
    # the download feeds the command line as it is
    from frugalvl.cli import main

    args = ["segment", small_geotiff, "-o", tmp_path / "out", "--classes", "water;land", "--exemplars", path]
    assert main([str(a) for a in [*args, "--clip", tiny_clip_file, "--no-progress"]]) == 0
    assert json.loads((tmp_path / "out" / "landsat_small_run.json").read_text())["segmenter"]["prototypes"]


def test_visible_area_runs_leave_out_exemplars_outside_it(make_client, wait):
    client = make_client()
    info = open_sample(client, "plain")
    add(client, info["id"], [[-60, 70], [-75, 90]], cls="field")  # bottom right
    run = run_done(
        client, wait, image=info["id"], vocabulary="background;water", area="visible", bounds=[[-30, 0], [0, 40]]
    )
    assert [c["name"] for c in run["classes"]] == ["background", "water"]
    assert any("outside the segmented area" in n for n in run["notes"])
