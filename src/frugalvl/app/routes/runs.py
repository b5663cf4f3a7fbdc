"""Runs: start one on an opened image (whole, or the visible part of the map), follow it, cancel it,
and read its result (label tiles, preview, the scores under a click, downloads)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from pydantic import Field, create_model

from ...errors import UserError
from ...windows import Window
from ..engine import RunOptions, run_request_fields
from ..exemplars import exemplars_for_run, write_run_exemplars
from ..images import OpenedImage
from ..jobs import Run
from ..sessions import new_id
from ..tiles import colourise, empty_tile, intersects, png_bytes, tile_bounds, warp_tile
from .common import (
    COORD_LIMIT,
    Coord,
    Hidden,
    NotFound,
    TileXY,
    TileZ,
    config_of,
    hidden,
    hub_of,
    image_of,
    map_bounds,
    png,
    preview_level,
    run_of,
    run_status,
    session_of,
    worker_of,
)

router = APIRouter(prefix="/api/runs")

BoundValue = Annotated[float, Field(allow_inf_nan=False, ge=-COORD_LIMIT, le=COORD_LIMIT)]
Bounds = Annotated[list[Annotated[list[BoundValue], Field(min_length=2, max_length=2)]], Field(max_length=2)]

# The request body: which image and area, then the run options (generated from RunOptions' schema:
# every registered model option, and the page's settings fields typed as in the settings dataclasses).
RunRequest = create_model(
    "RunRequest",
    image=(Annotated[str, Field(max_length=100)], ...),
    area=(Annotated[str, Field(max_length=20)], "whole"),  # whole | visible
    bounds=(Bounds | None, None),  # [[south, west], [north, east]] of the map view
    **run_request_fields(),  # type: ignore[call-overload]
)


@router.post("")
def start_run(body: RunRequest, request: Request) -> dict:  # type: ignore[valid-type]
    session, config = session_of(request), config_of(request)
    image = image_of(request, body.image)  # type: ignore[attr-defined]
    options = RunOptions.from_fields(body.model_dump())  # type: ignore[attr-defined]
    vocabulary, _ = hub_of(request).settings(options)  # an unknown method, a bad vocabulary or setting fail now
    hub_of(request).model_specs(options)  # and a refused or missing model file: the run in progress stays
    window = run_window(image, body.area, body.bounds)  # type: ignore[attr-defined]
    drawn, notes = exemplars_for_run(session, image, window, vocabulary)  # the exemplars drawn on it (checked)
    if window.height * window.width > config.max_run_pixels:
        raise UserError(
            f"the area is {window.height * window.width / 1e6:.1f} Mpx, more than one run segments "
            f"here ({config.max_run_pixels / 1e6:.0f} Mpx): zoom in and run on the visible area"
        )
    for old in list(session.runs.values()):
        old.cancel()  # one run per session at a time: a new run replaces the old
    run = Run(new_id(), image, options, window, session.subfolder("runs"), tile=config.tile)
    run.notes += notes
    run.exemplars = write_run_exemplars(image, drawn, window, run.folder / "exemplars") if drawn else None
    session.add_run(run)
    worker_of(request).submit(run)
    return run_status(request, run)


@router.get("/{run_id}")
def get_run(run_id: str, request: Request) -> dict:
    return run_status(request, run_of(request, run_id))


@router.post("/{run_id}/cancel")
def cancel_run(run_id: str, request: Request) -> dict:
    run = run_of(request, run_id)
    run.cancel()
    return run_status(request, run)


@router.get("/{run_id}/tiles/{z}/{x}/{y}.png")
def run_tile(run_id: str, z: TileZ, x: TileXY, y: TileXY, request: Request, hide: Hidden = "") -> Response:
    run = _done(run_of(request, run_id))
    bounds = map_bounds(run.image)
    if not intersects(tile_bounds(z, x, y), bounds):
        return png(empty_tile())
    labels = warp_tile(run.pyramid, run.image.image.crs, bounds, z, x, y, nearest=True, fill=255)[0]
    return png(png_bytes(colourise(labels, run.palette, hidden(hide), nodata=255)))


@router.get("/{run_id}/image.png")
def run_preview(run_id: str, request: Request, hide: Hidden = "") -> Response:
    run = _done(run_of(request, run_id))
    level = preview_level(run.pyramid)
    return png(png_bytes(colourise(level.data[0], run.palette, hidden(hide), nodata=255)))


@router.get("/{run_id}/scores")
def run_scores(run_id: str, lat: Coord, lng: Coord, request: Request) -> dict:
    run = _done(run_of(request, run_id))
    row, col = pixel_of(run.image, lat, lng)
    return run.scores_at(row, col)


@router.get("/{run_id}/download/{kind}")
def download(run_id: str, kind: str, request: Request) -> FileResponse:
    run = _done(run_of(request, run_id))
    if kind not in run.files:
        raise NotFound(f"this run has no {kind!r} file: choose one of {', '.join(sorted(run.files))}")
    path = run.files[kind]
    return FileResponse(path, filename=path.name)


def _done(run: Run) -> Run:
    if run.state != "done":
        raise NotFound(f"run {run.id} is {run.state}, not done")
    return run


def pixel_of(image: OpenedImage, lat: float, lng: float) -> tuple[int, int]:
    """Image (row, col) under a map point: lat/lng on a georeferenced map, CRS.Simple units otherwise."""
    if not image.image.georeferenced:
        return math.floor(-lat), math.floor(lng)
    from rasterio.warp import transform

    if not -90 <= lat <= 90:
        raise UserError(f"latitude {lat:g} is not on the map: click on the image")
    xs, ys = transform("EPSG:4326", image.image.crs, [lng], [lat])
    col, row = ~image.image.transform * (xs[0], ys[0])
    if not (math.isfinite(row) and math.isfinite(col)):
        raise UserError(f"({lat:g}, {lng:g}) has no place in the image's CRS: click on the image")
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

        south, north = (min(max(v, -89.999), 89.999) for v in (south, north))  # the poles map to infinity
        try:
            left, bottom, right, top = transform_bounds(
                "EPSG:4326", image.image.crs, west, south, east, north, densify_pts=21
            )
            win = from_bounds(left, bottom, right, top, transform=image.image.transform)
        except ValueError:  # rasterio's errors are ValueErrors
            raise UserError("the visible area has no place in the image's CRS: run on the whole image") from None
        r0, c0 = win.row_off, win.col_off
        r1, c1 = r0 + win.height, c0 + win.width
    else:
        r0, r1, c0, c1 = -north, -south, west, east
    if not all(math.isfinite(v) for v in (r0, r1, c0, c1)):
        raise UserError("the visible area has no place in the image's CRS: pan to the image or run on the whole image")
    y0, y1 = max(0, math.floor(min(r0, r1))), min(h, math.ceil(max(r0, r1)))
    x0, x1 = max(0, math.floor(min(c0, c1))), min(w, math.ceil(max(c0, c1)))
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise UserError("the visible area does not overlap the image: pan to the image or run on the whole image")
    return Window(y0, y1, x0, x1)
