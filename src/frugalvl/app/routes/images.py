"""Opening images (a bundled sample, a server path, an upload), their info, map tiles and preview."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from ...errors import UserError
from ...raster import IMAGE_SUFFIXES
from ..config import AppConfig
from ..images import open_image
from ..safety import resolve_allowed, safe_filename
from ..sessions import Session, new_id
from ..tiles import empty_tile, intersects, png_bytes, tile_bounds, warp_tile
from .common import config_of, image_of, map_bounds, png, preview_level, session_of

router = APIRouter(prefix="/api/images")


class PathRequest(BaseModel):
    path: str


class SampleRequest(BaseModel):
    name: str


def register_image(config: AppConfig, session: Session, path: Path, name: str) -> dict:
    image = open_image(new_id(), path, name, config.max_pixels)
    session.images[image.id] = image
    return image.info()


@router.post("/sample")
def open_sample(body: SampleRequest, request: Request) -> dict:
    samples = request.app.state.samples
    if body.name not in samples:
        raise UserError(f"no bundled sample {body.name!r}: choose one of {', '.join(sorted(samples))}")
    return register_image(config_of(request), session_of(request), samples[body.name], samples[body.name].name)


@router.post("/path")
def open_path(body: PathRequest, request: Request) -> dict:
    config = config_of(request)
    path = resolve_allowed(body.path, config.data_roots)
    if not path.is_file():
        raise UserError(f"{body.path} is not a file under the server's data folders: check the path")
    return register_image(config, session_of(request), path, path.name)


@router.post("/upload")
async def upload(request: Request) -> dict:
    config = config_of(request)
    limit = int(config.max_upload_mb * (1 << 20))
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + (1 << 16):
        raise UserError(
            f"the upload is {declared / (1 << 20):.1f} MB, more than this server accepts "
            f"({config.max_upload_mb:g} MB): open large scenes by server path (the server's data-root folders)"
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
                    "open large scenes by server path (the server's data-root folders)"
                )
            out.write(chunk)
    try:
        import anyio

        return await anyio.to_thread.run_sync(register_image, config, session, target, name)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@router.get("/{image_id}")
def image_info(image_id: str, request: Request) -> dict:
    return image_of(request, image_id).info()


@router.get("/{image_id}/tiles/{z}/{x}/{y}.png")
def image_tile(image_id: str, z: int, x: int, y: int, request: Request) -> Response:
    image = image_of(request, image_id)
    bounds = map_bounds(image)
    if not intersects(tile_bounds(z, x, y), bounds):
        return png(empty_tile())
    rgba = warp_tile(image.pyramid, image.image.crs, bounds, z, x, y, nearest=False, fill=0)
    return png(png_bytes(np.ascontiguousarray(rgba.transpose(1, 2, 0))))


@router.get("/{image_id}/image.png")
def image_preview(image_id: str, request: Request) -> Response:
    level = preview_level(image_of(request, image_id).pyramid)
    return png(png_bytes(np.ascontiguousarray(level.data.transpose(1, 2, 0))))
