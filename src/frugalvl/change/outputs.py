"""What a pair writes (docs/methods/segearth_ov3_change.md#what-comes-out).

* ``<stem>_change.tif``: the official binary map, uint8, 1 change, 0 no change, 255 where either date has no
  data; a Cloud-Optimized GeoTIFF on the before image's grid (without a CRS for plain images);
* ``<stem>_change_overlay.png``: both dates side by side, the change outlined in red on each (scenes: an
  overview at most 1024 px long per date);
* with ``semantic``: ``<stem>_before_labels.tif`` and ``<stem>_after_labels.tif`` (label COGs),
  ``<stem>_fromto.tif`` (from→to codes, :mod:`.semantic`), ``<stem>_change.gpkg`` (polygons) and
  ``<stem>_transitions.csv`` (pixels and areas per from→to).

Rasters are assembled window by window from tiles (:class:`.rasters.TiledRaster`), so a scene never needs
to fit in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path
from ..raster import palette
from . import semantic as sem
from .rasters import TiledRaster, names_tag
from .verify import dilate

CHANGE_NAMES = ("no change", "change")
OUTLINE = (255, 32, 32)
_GAP = 8  # pixels between the two dates in the overlay
SEMANTIC_SUFFIXES = ("_before_labels.tif", "_after_labels.tif", "_fromto.tif", "_change.gpkg", "_transitions.csv")


def change_path(outdir: Path, stem: str) -> Path:
    return Path(outdir) / f"{stem}_change.tif"


def overlay_path(outdir: Path, stem: str) -> Path:
    return Path(outdir) / f"{stem}_change_overlay.png"


def output_paths(outdir: Path, stem: str, semantic: bool) -> list[Path]:
    paths = [change_path(outdir, stem), overlay_path(outdir, stem)]
    return paths + ([Path(outdir) / f"{stem}{s}" for s in SEMANTIC_SUFFIXES] if semantic else [])


@dataclass
class Grid:
    height: int
    width: int
    crs: Any = None
    transform: Any = None


@dataclass
class Tile:
    """One window's results: the binary change, both dates' labels, where data is missing."""

    y0: int
    x0: int
    change: np.ndarray
    before: np.ndarray
    after: np.ndarray
    nodata: np.ndarray | None


def _colormap(colours: Any) -> dict[int, tuple[int, int, int, int]]:
    return {i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(colours)}


def write_rasters(
    outdir: Path, stem: str, grid: Grid, tiles: Iterable[Tile], class_names: Sequence[str], semantic: bool
) -> None:
    """Every raster output, from the tiles in any order."""
    geo = dict(crs=grid.crs, transform=grid.transform)
    size = (grid.height, grid.width)
    change_map = _colormap([(0, 0, 0), (255, 255, 255)])
    with ExitStack() as stack:
        change = stack.enter_context(
            TiledRaster(
                change_path(outdir, stem),
                *size,
                np.uint8,
                sem.NODATA,
                **geo,
                tags=names_tag(list(CHANGE_NAMES)),
                colormap=change_map,
            )
        )
        extras: list[TiledRaster] = []
        if semantic:
            sem.check_classes(len(class_names))
            labels_tags = names_tag(list(class_names))
            colours = _colormap(palette(list(class_names)))
            for suffix in SEMANTIC_SUFFIXES[:2]:
                extras.append(
                    stack.enter_context(
                        TiledRaster(
                            Path(outdir) / f"{stem}{suffix}",
                            *size,
                            np.uint8,
                            sem.NODATA,
                            **geo,
                            tags=labels_tags,
                            colormap=colours,
                        )
                    )
                )
            codes_tags = {"TRANSITIONS": json.dumps(sem.transition_names(class_names), ensure_ascii=False)}
            extras.append(
                stack.enter_context(
                    TiledRaster(
                        Path(outdir) / f"{stem}{SEMANTIC_SUFFIXES[2]}",
                        *size,
                        np.uint8,
                        sem.NODATA,
                        **geo,
                        tags=codes_tags,
                    )
                )
            )
        for t in tiles:
            data = t.change.astype(np.uint8)
            if t.nodata is not None:
                data = np.where(t.nodata, sem.NODATA, data).astype(np.uint8)
            change.write(data, t.y0, t.x0)
            if semantic:
                extras[0].write(sem.labels_with_nodata(t.before, t.nodata), t.y0, t.x0)
                extras[1].write(sem.labels_with_nodata(t.after, t.nodata), t.y0, t.x0)
                extras[2].write(sem.from_to(t.before, t.after, t.change, len(class_names), t.nodata), t.y0, t.x0)


def write_vector_outputs(outdir: Path, stem: str, grid: Grid, class_names: Sequence[str]) -> None:
    """Polygons and the transition table, read back from the from→to raster."""
    fromto = Path(outdir) / f"{stem}{SEMANTIC_SUFFIXES[2]}"
    sem.write_polygons(fromto, Path(outdir) / f"{stem}{SEMANTIC_SUFFIXES[3]}", class_names)
    area, unit = sem.pixel_area(grid.transform, grid.crs)
    counts = sem.count_codes(fromto, len(class_names))
    sem.write_table(Path(outdir) / f"{stem}{SEMANTIC_SUFFIXES[4]}", counts, class_names, area, unit)


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


def change_overview(outdir: Path, stem: str, shape: tuple[int, int]) -> np.ndarray:
    """The written change map read at ``shape`` (nearest; no data counts as no change)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(change_path(outdir, stem)) as src:
        data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    return data == 1
