"""What the routers share: the request's session and the server's objects, ids looked up in the
session, map bounds and PNG responses."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from ...errors import UserError
from ..config import AppConfig
from ..engine import ModelHub
from ..images import OpenedImage
from ..jobs import Run, RunWorker
from ..sessions import Session

PREVIEW_MAX_SIDE = 4096


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
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"hide={text!r}: give class indices separated by commas") from None


def png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
