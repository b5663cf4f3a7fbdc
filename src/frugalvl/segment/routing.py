"""Which path each input of a ``segment`` run takes: read whole, or the tiled scene path (:mod:`.scene`).

Large inputs (above :data:`frugalvl.raster.AUTO_SCENE_PIXELS`), remote ones, VRT/JPEG2000 and STAC items,
or every input when a tile size (or an area of interest, band names, STAC options) is given, are tiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..raster import AUTO_SCENE_PIXELS, SCENE_ONLY_SUFFIXES, is_url, raster_shape
from .scene_settings import SegmentRunSettings


def uses_scene_path(path, tile_all: bool) -> bool:
    """Tiled when ``tile_all``, for URLs, VRT/JPEG2000, and above :data:`AUTO_SCENE_PIXELS`."""
    suffix = Path(str(path)).suffix.lower()
    if tile_all or is_url(path) or suffix in SCENE_ONLY_SUFFIXES or suffix == ".json":  # .json: a STAC item
        return True
    shape = raster_shape(path)
    return shape is not None and shape[0] * shape[1] > AUTO_SCENE_PIXELS


def route_inputs(paths: Sequence, settings: SegmentRunSettings) -> dict[int, bool]:
    """Input index -> whether it goes through the tiled scene path."""
    tile_all = settings.tile_all or settings.scene.needs_scene_path  # an AOI, band names, STAC options
    return {i: uses_scene_path(p, tile_all) for i, p in enumerate(paths)}
