"""Exemplars drawn on an image (docs/app.md#exemplars): add, list, delete, download as GeoJSON.

They belong to the session and to the image (found again when the same image is reopened); each run on
the image uses those overlapping its area (:func:`frugalvl.app.exemplars.write_run_exemplars`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ..exemplars import MAX_CLASS_CHARS, MAX_POINTS, DrawnExemplar, geojson_bytes, new_exemplar, store_of, to_map
from ..images import OpenedImage
from .common import COORD_LIMIT, NotFound, image_of, session_of

router = APIRouter(prefix="/api/images")

Number = Annotated[float, Field(allow_inf_nan=False, ge=-COORD_LIMIT, le=COORD_LIMIT)]
Point = Annotated[list[Number], Field(min_length=2, max_length=2)]


class ExemplarRequest(BaseModel):
    """A drawn example: its class (``class``), sign, and shape as map points ``[lat, lng]``."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(alias="class", min_length=1, max_length=MAX_CLASS_CHARS)
    positive: bool = True
    kind: Literal["box", "polygon"] = "box"
    points: list[Point] = Field(min_length=2, max_length=MAX_POINTS)


def listing(image: OpenedImage, items: list[DrawnExemplar]) -> dict:
    from ...raster import palette

    classes = list(dict.fromkeys(e.name for e in items))
    colours = {n: "#" + bytes(int(v) for v in c).hex() for n, c in zip(classes, palette(classes))} if items else {}
    return {
        "image": image.id,
        "exemplars": [
            {
                "id": e.id,
                "class": e.name,
                "positive": e.positive,
                "colour": colours[e.name],
                "rings": to_map(image, e.polygon),
            }
            for e in items
        ],
        "classes": classes,
        "download": f"/api/images/{image.id}/exemplars.geojson",
    }


@router.get("/{image_id}/exemplars")
def list_exemplars(image_id: str, request: Request) -> dict:
    image = image_of(request, image_id)
    return listing(image, store_of(session_of(request)).of(image))


@router.post("/{image_id}/exemplars")
def add_exemplar(image_id: str, body: ExemplarRequest, request: Request) -> dict:
    image = image_of(request, image_id)
    store = store_of(session_of(request))
    store.add(image, new_exemplar(image, body.name, body.positive, body.kind, body.points))
    return listing(image, store.of(image))


@router.delete("/{image_id}/exemplars/{exemplar_id}")
def delete_exemplar(image_id: str, exemplar_id: str, request: Request) -> dict:
    image = image_of(request, image_id)
    store = store_of(session_of(request))
    if not store.delete(image, exemplar_id):
        raise NotFound(f"no exemplar {exemplar_id[:40]!r} on {image.name} in this session")
    return listing(image, store.of(image))


@router.get("/{image_id}/exemplars.geojson")
def download_exemplars(image_id: str, request: Request) -> Response:
    session = session_of(request)
    image = image_of(request, image_id)
    items = store_of(session).of(image)
    if not items:
        raise NotFound(f"{image.name} has no exemplars in this session: draw some first")
    data = geojson_bytes(image, items, session.folder)
    name = f"{image.image.stem}_exemplars.geojson"
    return Response(
        data, media_type="application/geo+json", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
