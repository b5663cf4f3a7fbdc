"""Remote sources: a STAC item URL or a tile service (XYZ, WMTS) read over an area into the session,
then an image like any other (its map tiles, its runs). The rules on what may be read: :mod:`..remote`."""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator

from ...sources.xyz import MAX_ZOOM
from ...urlfetch import address_policy
from ..remote import MAX_URL_CHARS, read_area
from .common import config_of, session_of
from .images import register_image

router = APIRouter(prefix="/api/sources")

Degree = Annotated[float, Field(allow_inf_nan=False, ge=-180, le=180)]


class SourceRequest(BaseModel):
    source: str = Field(max_length=MAX_URL_CHARS)
    bbox: tuple[Degree, Degree, Degree, Degree] | None = None  # W, S, E, N in EPSG:4326
    zoom: int | None = Field(None, ge=0, le=MAX_ZOOM)
    resolution: float | None = Field(None, gt=0, le=1e6, allow_inf_nan=False)  # metres (tile services), or CRS units

    @field_validator("bbox")
    @classmethod
    def _ordered(cls, bbox):
        if bbox is not None:
            w, s, e, n = bbox
            if not (w < e and s < n and -90 <= s and n <= 90):
                raise ValueError("give W,S,E,N in degrees with west < east and south < north")
        return bbox


@router.post("")
def open_source(body: SourceRequest, request: Request) -> dict:
    """Read the source over the area into the session and open it as an image."""
    config, session = config_of(request), session_of(request)
    folder = session.subfolder("sources")
    try:
        with address_policy(config.address_policy()):
            path, name = read_area(body.source, body.bbox, body.zoom, body.resolution, config.max_pixels, folder)
        shutil.rmtree(folder / "tiles", ignore_errors=True)  # the image holds the pixels now
        info = register_image(config, session, path, name, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return {**info, "source": body.source[:200]}
