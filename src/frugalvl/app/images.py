"""Images opened in the app: 8-bit RGB for display and segmentation, georeference, a pyramid for tiles."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..raster import IMAGE_SUFFIXES, RasterImage, read_image
from .formats import check_image_file, gdal_env

log = logging.getLogger(__name__)


@dataclass
class Level:
    """One pyramid level: the image (or labels) shrunk by ``factor``, with its own transform."""

    factor: int
    data: np.ndarray  # [B, h, w]
    transform: Any  # affine.Affine (None when not georeferenced)


@dataclass
class OpenedImage:
    id: str
    name: str
    image: RasterImage
    pyramid: list[Level] = field(default_factory=list)
    bounds_3857: tuple[float, float, float, float] | None = None

    @property
    def height(self) -> int:
        return self.image.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.image.rgb.shape[1]

    @property
    def nbytes(self) -> int:
        """Memory the image holds (pixels, mask and display pyramid)."""
        mask = self.image.nodata_mask
        return self.image.rgb.nbytes + (0 if mask is None else mask.nbytes) + sum(lv.data.nbytes for lv in self.pyramid)

    def info(self) -> dict:
        img = self.image
        out = {
            "id": self.id,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "georeferenced": img.georeferenced,
            "crs": img.crs.to_string() if img.georeferenced else None,
            "pixel_area_m2": pixel_area_m2(img.crs, img.transform),
        }
        if img.georeferenced:
            from rasterio.warp import transform_bounds

            west, south, east, north = transform_bounds(img.crs, "EPSG:4326", *self.native_bounds(), densify_pts=21)
            out["bounds"] = [[south, west], [north, east]]
        return out

    def native_bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        return tuple(array_bounds(self.height, self.width, self.image.transform))  # west, south, east, north


def pixel_area_m2(crs, transform) -> float | None:
    """Ground area of one pixel in m² for a projected CRS; None when it is not known in metres."""
    if crs is None or transform is None or not crs.is_projected:
        return None
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 - CRS without linear units
        return None
    return abs(transform.a * transform.e - transform.b * transform.d) * factor * factor


def image_pixels(path: Path) -> int:
    """Pixel count of an image from its header (no pixels decoded), read with only its format's driver."""
    from ..raster import raster_shape

    with gdal_env():
        shape = raster_shape(path)
    return 0 if shape is None else shape[0] * shape[1]


def open_image(image_id: str, path: Path, name: str, max_pixels: int, vrt_roots: Sequence[Path] = ()) -> OpenedImage:
    """Read ``path`` (any format ``frugalvl segment`` reads, checked by content: :mod:`.formats`) and
    prepare it for display. ``vrt_roots``: the data-root folders for a server file (none for uploads)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(
            f"{name}: unsupported file type {path.suffix or '(none)'}; open a {', '.join(IMAGE_SUFFIXES)} file"
        )
    check_image_file(path, name, vrt_roots)
    pixels = image_pixels(path)
    if pixels > max_pixels:
        raise UserError(
            f"{name} has {pixels / 1e6:.0f} Mpx, more than this app opens ({max_pixels / 1e6:.0f} Mpx): "
            "segment it tile by tile with `frugalvl segment`"
        )
    try:
        with gdal_env():
            image = read_image(path)
    except UserError as exc:  # the reader names the file by its path: show the name the user knows
        raise UserError(str(exc).replace(str(path), name)) from None
    opened = OpenedImage(image_id, name, image)
    alpha = np.full(image.rgb.shape[:2], 255, np.uint8)
    if image.nodata_mask is not None:
        alpha[image.nodata_mask] = 0
    bands = np.concatenate([image.rgb.transpose(2, 0, 1), alpha[None]])
    opened.pyramid = build_pyramid(bands, image.transform, smooth=True)
    if image.georeferenced:
        from rasterio.warp import transform_bounds

        opened.bounds_3857 = transform_bounds(image.crs, "EPSG:3857", *opened.native_bounds(), densify_pts=21)
    return opened


def build_pyramid(bands: np.ndarray, transform, smooth: bool, min_side: int = 256) -> list[Level]:
    """Levels shrunk by 1, 2, 4, ... until the long side is below ``min_side`` (area-averaged or nearest)."""
    from affine import Affine

    levels = [Level(1, bands, transform)]
    factor = 1
    while max(levels[-1].data.shape[1:]) > min_side:
        factor *= 2
        prev = levels[-1].data
        if smooth:
            import cv2

            h, w = (prev.shape[1] + 1) // 2, (prev.shape[2] + 1) // 2
            data = np.stack([cv2.resize(b, (w, h), interpolation=cv2.INTER_AREA) for b in prev])
        else:
            data = prev[:, ::2, ::2]
        scale_x, scale_y = bands.shape[2] / data.shape[2], bands.shape[1] / data.shape[1]
        levels.append(
            Level(
                factor,
                np.ascontiguousarray(data),
                transform * Affine.scale(scale_x, scale_y) if transform is not None else None,
            )
        )
    return levels
