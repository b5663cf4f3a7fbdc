"""The input a run hands to :func:`frugalvl.segment.scene.segment_scene`: its area as a GeoTIFF.

The app has already read the image as 8-bit RGB (:func:`frugalvl.raster.read_image`: band choice and
stretch over the whole image), and shows those pixels; the run segments exactly them. The area is
written uncompressed-tiled with the area's transform (the image's, shifted to the window) and CRS,
and an internal mask where the image has no data, so the outputs are georeferenced like the image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..windows import Window
from .images import OpenedImage


def area_stem(image: OpenedImage, window: Window) -> str:
    """The output stem: the image's, plus the window when the run covers part of it."""
    stem = image.image.stem
    if window == Window(0, image.height, 0, image.width):
        return stem
    return f"{stem}_x{window.x0}_y{window.y0}_{window.width}x{window.height}"


def write_area(folder: Path, image: OpenedImage, window: Window) -> Path:
    """Write ``window`` of the image as ``<folder>/<stem>.tif`` (RGB uint8, mask, CRS); return its path."""
    import rasterio
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning

    img = image.image
    rgb = img.rgb[window.y0 : window.y1, window.x0 : window.x1]
    profile = dict(
        driver="GTiff",
        height=rgb.shape[0],
        width=rgb.shape[1],
        count=3,
        dtype="uint8",
        tiled=rgb.shape[0] >= 256 and rgb.shape[1] >= 256,
    )
    if img.georeferenced:
        profile.update(crs=img.crs, transform=img.transform * Affine.translation(window.x0, window.y0))
    path = folder / f"{area_stem(image, window)}.tif"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
            if img.nodata_mask is not None:
                valid = ~img.nodata_mask[window.y0 : window.y1, window.x0 : window.x1]
                dst.write_mask(valid.astype(np.uint8) * 255)
    return path
