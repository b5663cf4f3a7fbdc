"""What a pair writes: ``<stem>_change.tif`` (uint8: 1 change, 0 no change, 255 no data; a GeoTIFF on the
before image's grid when it is georeferenced) and ``<stem>_change_overlay.png`` (both dates side by side,
the change outlined on each)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..raster import NODATA_LABEL, RasterImage
from .verify import dilate

CHANGE_NAMES = ("no change", "change")
OUTLINE = (255, 32, 32)
_GAP = 8  # pixels between the two dates in the overlay


def change_path(outdir: Path, stem: str) -> Path:
    return Path(outdir) / f"{stem}_change.tif"


def overlay_path(outdir: Path, stem: str) -> Path:
    return Path(outdir) / f"{stem}_change_overlay.png"


def write_change(outdir: Path, stem: str, before: RasterImage, change: np.ndarray, nodata: np.ndarray | None) -> Path:
    """The binary change map as a single-band uint8 TIFF (georeferenced like ``before`` when it is)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    data = change.astype(np.uint8)
    if nodata is not None and nodata.any():
        data = data.copy()
        data[nodata] = NODATA_LABEL
    height, width = data.shape
    profile = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=1,
        dtype="uint8",
        nodata=NODATA_LABEL,
        compress="deflate",
        tiled=height >= 256 and width >= 256,
    )
    if before.georeferenced:
        profile.update(crs=before.crs, transform=before.transform)
    path = change_path(outdir, stem)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data, 1)
            dst.update_tags(CLASS_NAMES=json.dumps(list(CHANGE_NAMES)))
            dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 255, 255, 255)})
    return path


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that touch a pixel outside it (8-neighbourhood)."""
    mask = np.asarray(mask, dtype=bool)
    inner = ~dilate(~mask, 1)
    return mask & ~inner


def overlay(before: np.ndarray, after: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Both dates side by side (``H × (2W + gap) × 3``), the change outlined in red on each."""
    edge = outline(change)
    height, width = change.shape
    canvas = np.full((height, 2 * width + _GAP, 3), 255, dtype=np.uint8)
    for i, rgb in enumerate((before, after)):
        panel = rgb.copy()
        panel[edge] = OUTLINE
        canvas[:, i * (width + _GAP) : i * (width + _GAP) + width] = panel
    return canvas


def write_overlay(outdir: Path, stem: str, before: np.ndarray, after: np.ndarray, change: np.ndarray) -> Path:
    from PIL import Image

    path = overlay_path(outdir, stem)
    with atomic_path(path) as tmp:
        Image.fromarray(overlay(before, after, change)).save(tmp, format="PNG")
    return path
