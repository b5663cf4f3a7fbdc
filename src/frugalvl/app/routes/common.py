"""What the routers share: the request's session and the server's objects, ids looked up in the
session, map bounds and PNG responses."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.responses import Response

from ...errors import UserError
from ..config import AppConfig
from ..engine import ModelHub
from ..images import OpenedImage
from ..jobs import Run, RunWorker
from ..sessions import Session

PREVIEW_MAX_SIDE = 4096
COORD_LIMIT = 1e9  # map coordinates: degrees, or pixels of an image that is not georeferenced

# what the API takes as numbers: finite and in range at the edge (422 with one line), never a NaN,
# an infinity or a 10^300 that fails deep inside as a 500
Coord = Annotated[float, Query(allow_inf_nan=False, ge=-COORD_LIMIT, le=COORD_LIMIT)]
TileZ = Annotated[int, Path(ge=0, le=30)]
TileXY = Annotated[int, Path(ge=0, le=(1 << 30) - 1)]
Hidden = Annotated[str, Query(max_length=4000)]


class NotFound(Exception):
    """An id that this session does not own (or that does not exist)."""


def config_of(request: Request) -> AppConfig:
    return request.app.state.config


def hub_of(request: Request) -> ModelHub:
    return request.app.state.hub


def worker_of(request: Request) -> RunWorker:
    return request.app.state.worker


def session_of(request: Request) -> Session:
    return request.state.session


def run_status(request: Request, run: Run) -> dict:
    """A run's status, with the server's own folders kept out of its messages."""
    from ..safety import scrub

    status = run.status()
    root = request.app.state.sessions.root
    if status.get("error"):
        status["error"] = scrub(str(status["error"]), root)
    if status.get("notes"):
        status["notes"] = [scrub(str(n), root) for n in status["notes"]]
    return status


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


def map_bounds(image: OpenedImage) -> tuple[float, float, float, float]:
    """The image's EPSG:3857 bounds; NotFound for an image that is not georeferenced (no map tiles)."""
    if image.bounds_3857 is None:
        raise NotFound(f"{image.name} is not georeferenced: it has no map tiles")
    return image.bounds_3857


def preview_level(pyramid):
    """The largest pyramid level that fits :data:`PREVIEW_MAX_SIDE`."""
    return next(lv for lv in pyramid if max(lv.data.shape[1:]) <= PREVIEW_MAX_SIDE)


def hidden(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = [-1]
    if any(not 0 <= v < 1 << 16 for v in values):
        raise UserError(f"hide={text[:100]!r}: give class indices separated by commas")
    return values


def png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
