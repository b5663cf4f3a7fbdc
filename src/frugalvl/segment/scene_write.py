"""Writing a scene's outputs from its part files: label COG, score COG, overlay PNG, pixel area.

Part files are written into a tiled GeoTIFF one tile at a time (memory: one tile), which GDAL's COG
driver then copies to a Cloud-Optimized GeoTIFF with overviews.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..areas import class_areas, row_areas
from ..fileio import atomic_path
from ..palette import colour_table
from ..raster import COG_BLOCK, label_dtype, nodata_label, overlay_image, to_cog
from ..windows import Window
from .scene_read import SceneReader
from .scene_tiles import Tile, load_part, part_path

OVERLAY_LONG_SIDE = 2048  # the overlay PNG of a scene is drawn from an overview at most this long


def gtiff_profile(reader: SceneReader, count: int, dtype: str, nodata: int | None) -> dict[str, Any]:
    """A tiled GeoTIFF covering the (scaled) scene, georeferenced as it is."""
    h, w = reader.shape
    profile = dict(
        driver="GTiff",
        height=h,
        width=w,
        count=count,
        dtype=dtype,
        tiled=True,
        blockxsize=COG_BLOCK,
        blockysize=COG_BLOCK,
        BIGTIFF="IF_SAFER",
    )
    if reader.src.crs is not None:
        profile.update(crs=reader.src.crs, transform=reader.transform)
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def write_rasters(
    reader: SceneReader,
    tiles: Sequence[Tile],
    parts: Path,
    names: Sequence[str],
    outdir: Path,
    stem: str,
    save_probs: bool,
) -> tuple[Path, Path | None, Counter, Counter]:
    """Part files -> label COG (and score COG), one tile at a time; returns them, the class pixel counts
    and the class areas (in :func:`pixel_area`'s unit)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window as RioWindow

    dtype, nodata = label_dtype(len(names)), nodata_label(len(names))
    pixels: Counter = Counter()
    areas: Counter = Counter()  # class -> ground area (:func:`frugalvl.raster.row_areas`)
    crs = reader.src.crs
    per_row, _ = row_areas(reader.transform if crs is not None else None, crs, 0, reader.shape[0])
    lab_tmp, prob_tmp = parts / "labels.tif", parts / "probs.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        lab = rasterio.open(lab_tmp, "w", **gtiff_profile(reader, 1, dtype.name, nodata))
        prob = rasterio.open(prob_tmp, "w", **gtiff_profile(reader, len(names), "uint8", None)) if save_probs else None
        try:
            for tile in tiles:
                part = load_part(part_path(parts, tile))
                win = RioWindow(tile.core.x0, tile.core.y0, tile.core.width, tile.core.height)
                labels = part["labels"]
                lab.write(labels, 1, window=win)
                counts = np.bincount(labels[labels != nodata].ravel().astype(np.int64), minlength=len(names))
                pixels.update({i: int(n) for i, n in enumerate(counts[: len(names)]) if n})
                areas.update(class_areas(labels, None, len(names), per_row[tile.core.y0 : tile.core.y1]))
                if prob is not None:
                    probs = part["probs"]
                    if probs.shape[0] == 0:
                        probs = np.zeros((len(names), *labels.shape), np.uint8)
                    prob.write(probs, window=win)
            lab.update_tags(CLASS_NAMES=json.dumps(list(names)))
            if dtype == np.uint8:
                lab.write_colormap(1, colour_table(names))  # the colours of untiled outputs and the app
            if prob is not None:
                prob.update_tags(CLASS_NAMES=json.dumps(list(names)), SCALE="uint8 score = round(255 × probability)")
                for i, n in enumerate(names, start=1):
                    prob.set_band_description(i, n)
        finally:
            lab.close()
            if prob is not None:
                prob.close()
        label_path = outdir / f"{stem}.tif"
        probs_path = outdir / f"{stem}_probs.tif" if save_probs else None
        if probs_path is not None:
            to_cog(prob_tmp, probs_path, "AVERAGE")
        to_cog(lab_tmp, label_path, "MODE")
    return label_path, probs_path, pixels, areas


def write_scene_overlay(
    reader: SceneReader, label_path: Path, names: Sequence[str], out: Path, long_side: int = OVERLAY_LONG_SIDE
) -> Path:
    """``<stem>_overlay.png`` from overviews of the scene and of the label COG (at most ``long_side``)."""
    import rasterio
    from rasterio.enums import Resampling

    h, w = reader.shape
    shape = reader.decimated_shape(long_side)
    data, valid = reader.read(Window(0, h, 0, w), out_shape=None if shape == (h, w) else shape)
    with rasterio.open(label_path) as src:
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    nodata = ~valid | (labels == nodata_label(len(names)))
    img = overlay_image(reader.rgb(data), labels.astype(np.int64), names, nodata_mask=nodata if nodata.any() else None)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def pixel_area(reader: SceneReader) -> tuple[float, str]:
    """Mean ground area of one output pixel and its unit (:func:`frugalvl.raster.row_areas`: m² for
    every CRS with a known unit, geodesic for geographic ones; px without a CRS)."""
    h, _ = reader.shape
    crs = reader.src.crs
    per_row, unit = row_areas(reader.transform if crs is not None else None, crs, 0, h)
    return float(per_row.mean()), unit
