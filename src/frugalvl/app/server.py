"""The FastAPI application: JSON API, tiles, downloads and the static page (docs/app.md)."""

from __future__ import annotations

import logging
import math
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ..errors import UserError
from ..raster import IMAGE_SUFFIXES
from ..windows import Window
from .config import AppConfig
from .engine import METHODS, ModelHub, RunOptions
from .images import OpenedImage, open_image
from .jobs import Run, RunWorker
from .safety import resolve_allowed, safe_filename
from .sessions import COOKIE, Session, SessionStore, new_id
from .tiles import colourise, empty_tile, intersects, png_bytes, tile_bounds, warp_tile

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PREVIEW_MAX_SIDE = 4096


class NotFound(Exception):
    """An id that this session does not own (or that does not exist)."""


class PathRequest(BaseModel):
    path: str


class SampleRequest(BaseModel):
    name: str


class RunRequest(BaseModel):
    image: str
    method: str = "segearth-ov"
    vocabulary: str = ""
    preset: str | None = None
    clip: str | None = None
    upsampler: str | None = None
    sam3: str | None = None
    prob_thd: float | None = None
    cls_lambda: float | None = None
    attention: str | None = None
    area: str = "whole"  # whole | visible
    bounds: list[list[float]] | None = None  # [[south, west], [north, east]] of the map view


def bundled_samples(config: AppConfig) -> dict[str, Path]:
    """Sample images: ``examples/data`` of a source checkout, plus the config's."""
    folders = [Path(__file__).resolve().parents[3] / "examples" / "data"]
    found = {}
    for p in [f for d in folders if d.is_dir() for f in sorted(d.iterdir())] + list(config.samples):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            found[p.stem] = p
    return found


def create_app(config: AppConfig) -> FastAPI:
    sessions = SessionStore(config.workdir, config.session_ttl_s)
    hub = ModelHub(config)
    worker = RunWorker(hub)
    samples = bundled_samples(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker_close()

    def worker_close() -> None:
        sessions.close()
        worker.close()

    app = FastAPI(title="frugalvl app", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config, app.state.sessions, app.state.hub, app.state.worker = config, sessions, hub, worker
    app.state.close = worker_close
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def session_cookie(request: Request, call_next):
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        session = sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = sessions.create()
        request.state.session = session
        response = await call_next(request)
        if fresh:
            response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", max_age=int(config.session_ttl_s))
        return response

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return JSONResponse({"error": str(exc) or "not found in this session"}, status_code=404)

    def session_of(request: Request) -> Session:
        return request.state.session

    def image_of(request: Request, image_id: str) -> OpenedImage:
        image = session_of(request).images.get(image_id)
        if image is None:
            raise NotFound(f"no image {image_id!r} in this session (it may have expired): open it again")
        return image

    def run_of(request: Request, run_id: str) -> Run:
        run = session_of(request).runs.get(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r} in this session (it may have expired): run again")
        return run

    def register_image(session: Session, path: Path, name: str) -> dict:
        image = open_image(new_id(), path, name, config.max_pixels)
        session.images[image.id] = image
        return image.info()

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    def get_config() -> dict[str, Any]:
        from ..models.attention import MODES
        from ..presets import list_presets, load_preset

        presets = []
        for name in list_presets():
            p = load_preset(name)
            entry = {"name": name, "title": p.get("title", name)}
            for method in METHODS:
                table = p.get(method.replace("-", "_"))
                if table:
                    entry[method] = {"classes": ";".join(table["classes"]), "prob_thd": table.get("prob_thd")}
            presets.append(entry)
        return {
            "methods": METHODS,
            "presets": presets,
            "samples": sorted(samples),
            "attention_modes": list(MODES),
            "defaults": {
                "clip": config.clip,
                "upsampler": config.upsampler or "",
                "sam3": config.sam3,
                "device": config.device,
            },
            "server_paths": bool(config.data_roots),
            "max_upload_mb": config.max_upload_mb,
        }

    @app.post("/api/images/sample")
    def open_sample(body: SampleRequest, request: Request) -> dict:
        if body.name not in samples:
            raise UserError(f"no bundled sample {body.name!r}: choose one of {', '.join(sorted(samples))}")
        return register_image(session_of(request), samples[body.name], samples[body.name].name)

    @app.post("/api/images/path")
    def open_path(body: PathRequest, request: Request) -> dict:
        path = resolve_allowed(body.path, config.data_roots)
        if not path.is_file():
            raise UserError(f"{body.path} is not a file under the server's data folders: check the path")
        return register_image(session_of(request), path, path.name)

    @app.post("/api/images/upload")
    async def upload(request: Request) -> dict:
        limit = int(config.max_upload_mb * (1 << 20))
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit + (1 << 16):
            raise UserError(
                f"the upload is {declared / (1 << 20):.1f} MB, more than this server accepts "
                f"({config.max_upload_mb:g} MB): open large scenes by server path (--data-root)"
            )
        form = await request.form(max_files=1, max_fields=4)
        part = form.get("file")
        if part is None or not hasattr(part, "read"):
            raise UserError("no file in the upload: choose an image file")
        name = safe_filename(part.filename or "image")
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{part.filename}: unsupported file type; upload a {', '.join(IMAGE_SUFFIXES)} file")
        session = session_of(request)
        folder = session.subfolder("uploads")
        target = folder / name
        size = 0
        with open(target, "wb") as out:
            while chunk := await part.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    out.close()
                    shutil.rmtree(folder, ignore_errors=True)
                    raise UserError(
                        f"{part.filename} is more than this server accepts ({config.max_upload_mb:g} MB): "
                        "open large scenes by server path (--data-root)"
                    )
                out.write(chunk)
        try:
            import anyio

            return await anyio.to_thread.run_sync(register_image, session, target, name)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @app.get("/api/images/{image_id}")
    def image_info(image_id: str, request: Request) -> dict:
        return image_of(request, image_id).info()

    @app.get("/api/images/{image_id}/tiles/{z}/{x}/{y}.png")
    def image_tile(image_id: str, z: int, x: int, y: int, request: Request) -> Response:
        image = image_of(request, image_id)
        bounds = _map_bounds(image)
        if not intersects(tile_bounds(z, x, y), bounds):
            return _png(empty_tile())
        rgba = warp_tile(image.pyramid, image.image.crs, bounds, z, x, y, nearest=False, fill=0)
        return _png(png_bytes(np.ascontiguousarray(rgba.transpose(1, 2, 0))))

    @app.get("/api/images/{image_id}/image.png")
    def image_preview(image_id: str, request: Request) -> Response:
        image = image_of(request, image_id)
        level = next(lv for lv in image.pyramid if max(lv.data.shape[1:]) <= PREVIEW_MAX_SIDE)
        return _png(png_bytes(np.ascontiguousarray(level.data.transpose(1, 2, 0))))

    @app.post("/api/runs")
    def start_run(body: RunRequest, request: Request) -> dict:
        session = session_of(request)
        image = image_of(request, body.image)
        if body.method not in METHODS:
            raise UserError(f"unknown method {body.method!r}: choose one of {', '.join(METHODS)}")
        options = RunOptions(
            method=body.method,
            vocabulary=body.vocabulary,
            preset=body.preset or None,
            clip=body.clip,
            upsampler=body.upsampler,
            sam3=body.sam3,
            prob_thd=body.prob_thd,
            cls_lambda=body.cls_lambda,
            attention=body.attention or None,
        )
        hub.vocabulary(options)  # an empty or malformed vocabulary fails now, in the page
        window = run_window(image, body.area, body.bounds)
        if window.height * window.width > config.max_run_pixels:
            raise UserError(
                f"the area is {window.height * window.width / 1e6:.1f} Mpx, more than one run segments "
                f"here ({config.max_run_pixels / 1e6:.0f} Mpx): zoom in and run on the visible area"
            )
        for old in session.runs.values():
            old.cancel()  # one run per session at a time: a new run replaces the old
        run = Run(new_id(), image, options, window, session.subfolder("runs"), tile=config.tile)
        session.runs[run.id] = run
        worker.submit(run)
        return run.status()

    @app.get("/api/runs/{run_id}")
    def run_status(run_id: str, request: Request) -> dict:
        return run_of(request, run_id).status()

    @app.post("/api/runs/{run_id}/cancel")
    def cancel_run(run_id: str, request: Request) -> dict:
        run = run_of(request, run_id)
        run.cancel()
        return run.status()

    @app.get("/api/runs/{run_id}/tiles/{z}/{x}/{y}.png")
    def run_tile(run_id: str, z: int, x: int, y: int, request: Request, hide: str = "") -> Response:
        run = _done(run_of(request, run_id))
        bounds = _map_bounds(run.image)
        if not intersects(tile_bounds(z, x, y), bounds):
            return _png(empty_tile())
        labels = warp_tile(run.pyramid, run.image.image.crs, bounds, z, x, y, nearest=True, fill=255)[0]
        return _png(png_bytes(colourise(labels, run.palette, _hidden(hide), nodata=255)))

    @app.get("/api/runs/{run_id}/image.png")
    def run_preview(run_id: str, request: Request, hide: str = "") -> Response:
        run = _done(run_of(request, run_id))
        level = next(lv for lv in run.pyramid if max(lv.data.shape[1:]) <= PREVIEW_MAX_SIDE)
        return _png(png_bytes(colourise(level.data[0], run.palette, _hidden(hide), nodata=255)))

    @app.get("/api/runs/{run_id}/scores")
    def run_scores(run_id: str, lat: float, lng: float, request: Request) -> dict:
        run = _done(run_of(request, run_id))
        row, col = pixel_of(run.image, lat, lng)
        return run.scores_at(row, col)

    @app.get("/api/runs/{run_id}/download/{kind}")
    def download(run_id: str, kind: str, request: Request) -> FileResponse:
        run = _done(run_of(request, run_id))
        if kind not in run.files:
            raise NotFound(f"this run has no {kind!r} file: choose one of {', '.join(sorted(run.files))}")
        path = run.files[kind]
        return FileResponse(path, filename=path.name)

    return app


def _done(run: Run) -> Run:
    if run.state != "done":
        raise NotFound(f"run {run.id} is {run.state}, not done")
    return run


def _map_bounds(image: OpenedImage) -> tuple[float, float, float, float]:
    """The image's EPSG:3857 bounds; NotFound for an image that is not georeferenced (no map tiles)."""
    if image.bounds_3857 is None:
        raise NotFound(f"{image.name} is not georeferenced: it has no map tiles")
    return image.bounds_3857


def _hidden(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"hide={text!r}: give class indices separated by commas") from None


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def pixel_of(image: OpenedImage, lat: float, lng: float) -> tuple[int, int]:
    """Image (row, col) under a map point: lat/lng on a georeferenced map, CRS.Simple units otherwise."""
    if not image.image.georeferenced:
        return math.floor(-lat), math.floor(lng)
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", image.image.crs, [lng], [lat])
    col, row = ~image.image.transform * (xs[0], ys[0])
    return math.floor(row), math.floor(col)


def run_window(image: OpenedImage, area: str, bounds: list[list[float]] | None) -> Window:
    """The pixel window a run covers: the whole image, or the part of it inside the map view."""
    h, w = image.height, image.width
    if area == "whole":
        return Window(0, h, 0, w)
    if area != "visible":
        raise UserError(f"area {area!r}: choose whole or visible")
    if not bounds or len(bounds) != 2 or any(len(b) != 2 for b in bounds):
        raise UserError("the visible area needs the map bounds [[south, west], [north, east]]")
    (south, west), (north, east) = bounds
    if image.image.georeferenced:
        from rasterio.warp import transform_bounds
        from rasterio.windows import from_bounds

        left, bottom, right, top = transform_bounds(
            "EPSG:4326", image.image.crs, west, south, east, north, densify_pts=21
        )
        win = from_bounds(left, bottom, right, top, transform=image.image.transform)
        r0, c0 = win.row_off, win.col_off
        r1, c1 = r0 + win.height, c0 + win.width
    else:
        r0, r1, c0, c1 = -north, -south, west, east
    y0, y1 = max(0, math.floor(min(r0, r1))), min(h, math.ceil(max(r0, r1)))
    x0, x1 = max(0, math.floor(min(c0, c1))), min(w, math.ceil(max(c0, c1)))
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise UserError("the visible area does not overlap the image: pan to the image or run on the whole image")
    return Window(y0, y1, x0, x1)
