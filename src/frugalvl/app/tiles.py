"""Web-mercator XYZ tiles of georeferenced arrays (rasterio.warp), and PNG encoding.

A tile ``z/x/y`` covers a square of the EPSG:3857 plane; it is warped from the coarsest pyramid level
whose pixels are still finer than the tile's, so a tile costs about the same at any zoom.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from .images import Level

TILE = 256
ORIGIN = 20037508.342789244  # half the EPSG:3857 world width, metres


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) of an XYZ tile in EPSG:3857 metres."""
    size = 2 * ORIGIN / 2**z
    west, north = -ORIGIN + x * size, ORIGIN - y * size
    return west, north - size, west + size, north


def intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def pick_level(levels: Sequence[Level], tile_res: float, span_3857: float) -> Level:
    """The coarsest level whose pixel (in 3857 metres, over the image's width ``span_3857``) is no
    larger than the tile's pixel (else the finest)."""
    best = levels[0]
    for level in levels:
        if span_3857 / level.data.shape[2] <= tile_res * 1.0001:
            best = level
    return best


def warp_tile(
    levels: Sequence[Level], crs, bounds_3857: Sequence[float], z: int, x: int, y: int, nearest: bool, fill: float
) -> np.ndarray:
    """``[B, 256, 256]`` array of the tile, ``fill`` where the source has no pixels."""
    from rasterio.transform import from_bounds
    from rasterio.warp import Resampling, reproject

    west, south, east, north = tile_bounds(z, x, y)
    res = (east - west) / TILE
    level = pick_level(levels, res, bounds_3857[2] - bounds_3857[0])
    out = np.full((level.data.shape[0], TILE, TILE), fill, dtype=level.data.dtype)
    reproject(
        source=level.data,
        destination=out,
        src_transform=level.transform,
        src_crs=crs,
        dst_transform=from_bounds(west, south, east, north, TILE, TILE),
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest if nearest else Resampling.bilinear,
        src_nodata=None,
        dst_nodata=None,
        init_dest_nodata=False,
    )
    return out


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of an ``[H, W, 3|4]`` uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


_EMPTY: bytes | None = None


def empty_tile() -> bytes:
    global _EMPTY
    if _EMPTY is None:
        _EMPTY = png_bytes(np.zeros((TILE, TILE, 4), np.uint8))
    return _EMPTY


def colourise(labels: np.ndarray, colours: np.ndarray, hidden: Sequence[int] = (), nodata: int = 255) -> np.ndarray:
    """``[H, W, 4]`` RGBA of a label map: class colours, transparent on ``nodata`` and on hidden classes."""
    lut = np.zeros((max(256, len(colours) + 1), 4), np.uint8)
    lut[: len(colours), :3] = colours
    lut[: len(colours), 3] = 255
    for c in hidden:
        if 0 <= c < len(colours):
            lut[c, 3] = 0
    lut[nodata, 3] = 0
    return lut[np.clip(labels, 0, len(lut) - 1)]
