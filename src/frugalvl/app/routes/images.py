"""Opening images (a bundled sample, a server path, an upload), their info, map tiles and preview."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.formparsers import MultiPartException, MultiPartParser

from ...errors import UserError
from ...raster import IMAGE_SUFFIXES
from ..config import AppConfig
from ..images import open_image
from ..safety import MAX_PATH_CHARS, resolve_allowed, safe_filename
from ..sessions import Session, TooLarge, new_id
from ..tiles import empty_tile, intersects, png_bytes, tile_bounds, warp_tile
from .common import TileXY, TileZ, config_of, image_of, map_bounds, png, preview_level, session_of

router = APIRouter(prefix="/api/images")


class PathRequest(BaseModel):
    path: str = Field(max_length=MAX_PATH_CHARS)


class SampleRequest(BaseModel):
    name: str = Field(max_length=200)


def register_image(
    config: AppConfig, session: Session, path: Path, name: str, folder: Path | None = None, server_file: bool = False
) -> dict:
    """Open an image into the session (a data-root file may be a VRT; an upload may not)."""
    image = open_image(new_id(), path, name, config.max_pixels, config.data_roots if server_file else ())
    session.add_image(image, folder)
    return image.info()


@router.post("/sample")
def open_sample(body: SampleRequest, request: Request) -> dict:
    samples = request.app.state.samples
    if body.name not in samples:
        raise UserError(f"no bundled sample {body.name[:100]!r}: choose one of {', '.join(sorted(samples))}")
    return register_image(config_of(request), session_of(request), samples[body.name], samples[body.name].name)


@router.post("/path")
def open_path(body: PathRequest, request: Request) -> dict:
    config = config_of(request)
    path = resolve_allowed(body.path, config.data_roots)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or not encodable
        found = False
    if not found:
        raise UserError(f"{body.path[:120]} is not a file under the server's data folders: check the path")
    return register_image(config, session_of(request), path, path.name, server_file=True)


def too_large(config: AppConfig, what: str) -> TooLarge:
    return TooLarge(
        f"{what} is more than this server accepts ({config.max_upload_mb:g} MB): "
        "open large scenes by server path (the server's data-root folders)"
    )


async def limited(stream: AsyncIterator[bytes], limit: int, error: TooLarge) -> AsyncIterator[bytes]:
    """The request body, refused as soon as more than ``limit`` bytes have come (with or without a
    declared length: a chunked upload is counted while it streams, never written in full first)."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise error
        yield chunk


@router.post("/upload")
async def upload(request: Request) -> dict:
    config = config_of(request)
    limit = int(config.max_upload_mb * (1 << 20))
    slack = 1 << 16  # the multipart headers around the file
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise UserError("the upload's Content-Length is not a number") from None
    if declared > limit + slack:
        raise too_large(config, f"the upload is {declared / (1 << 20):.1f} MB, which")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UserError("send the image as a multipart form with a 'file' field")
    session = session_of(request)  # before reading: a refused session reads nothing
    body = limited(request.stream(), limit + slack, too_large(config, "the upload"))
    try:
        form = await MultiPartParser(request.headers, body, max_files=1, max_fields=4).parse()
    except MultiPartException as exc:
        raise UserError(f"the upload is not a valid multipart form ({exc.message}): choose an image file") from None
    try:
        part = form.get("file")
        if part is None or not hasattr(part, "read"):
            raise UserError("no file in the upload: choose an image file")
        name = safe_filename(part.filename or "image")
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            shown = (part.filename or "")[:100]
            raise UserError(f"{shown}: unsupported file type; upload a {', '.join(IMAGE_SUFFIXES)} file")
        folder = session.subfolder("uploads")
        target = folder / name
        size = 0
        try:
            with open(target, "wb") as out:
                while chunk := await part.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise too_large(config, name)
                    out.write(chunk)
            import anyio

            return await anyio.to_thread.run_sync(register_image, config, session, target, name, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    finally:
        await form.close()


@router.get("/{image_id}")
def image_info(image_id: str, request: Request) -> dict:
    return image_of(request, image_id).info()


@router.get("/{image_id}/tiles/{z}/{x}/{y}.png")
def image_tile(image_id: str, z: TileZ, x: TileXY, y: TileXY, request: Request) -> Response:
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
