"""Fixtures for the web app tests: small images, a tiny CLIP, an app factory with a client per session."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the app extra is not installed: pip install 'frugalvl[app]'")

REPO = Path(__file__).resolve().parents[2]
LANDSAT = REPO / "examples" / "data" / "landsat_rgb_byte.tif"
ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture(scope="session")
def small_geotiff(tmp_path_factory) -> Path:
    """The bundled Landsat sample decimated ×5 (159×144 px, 1.5 km pixels, same CRS), nodata collar kept."""
    import rasterio
    from affine import Affine

    out = tmp_path_factory.mktemp("samples") / "landsat_small.tif"
    with rasterio.open(LANDSAT) as src:
        h, w = src.height // 5, src.width // 5
        data = src.read(out_shape=(3, h, w), resampling=rasterio.enums.Resampling.nearest)
        profile = dict(
            driver="GTiff",
            height=h,
            width=w,
            count=3,
            dtype="uint8",
            crs=src.crs,
            nodata=0,
            transform=src.transform * Affine.scale(src.width / w, src.height / h),
        )
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@pytest.fixture(scope="session")
def small_png(tmp_path_factory) -> Path:
    """A plain (not georeferenced) 96×80 RGB PNG: left half blue, right half green."""
    from PIL import Image

    rgb = np.zeros((80, 96, 3), np.uint8)
    rgb[:, :48] = (30, 60, 200)
    rgb[:, 48:] = (40, 180, 60)
    rgb += np.random.default_rng(0).integers(0, 20, rgb.shape, dtype=np.uint8)
    out = tmp_path_factory.mktemp("plain") / "plain.png"
    Image.fromarray(rgb).save(out)
    return out


@pytest.fixture
def make_client(tiny_clip_file, small_geotiff, small_png, tmp_path):
    """``make_client(**config)`` -> a TestClient (its own cookie jar = its own session) on one app."""
    from fastapi.testclient import TestClient

    from frugalvl.app import AppConfig, create_app

    root = tmp_path / "root"
    root.mkdir()
    apps, clients = {}, []

    def factory(app=None, **overrides):
        if app is None:
            settings = dict(
                models={"clip": str(tiny_clip_file)},
                data_roots=(root,),
                model_root=root,
                workdir=tmp_path / "work",
                samples=(small_geotiff, small_png),
                max_upload_mb=4.0,
            )
            settings.update(overrides)
            app = create_app(AppConfig(**settings))
            apps[id(app)] = app
        # not entered: lifespan shutdown would close the app under the other clients; the Host is the
        # bound address and the Origin the page's, as in a browser on the page
        client = TestClient(app, base_url=ORIGIN, headers={"Origin": ORIGIN})
        clients.append(client)
        return client

    factory.root = root
    yield factory
    for client in clients:
        client.close()
    for app in apps.values():
        app.state.close()


def wait_run(client, run: dict, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while run["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"run still {run['state']} after {timeout} s"
        time.sleep(0.05)
        run = client.get(f"/api/runs/{run['id']}").json()
    return run


@pytest.fixture
def wait():
    return wait_run
