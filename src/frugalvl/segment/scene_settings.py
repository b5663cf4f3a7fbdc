"""The settings of a ``segment`` run: how scenes are tiled, read and written, and what a run redoes.

Both are frozen dataclasses whose fields carry their documentation (:func:`frugalvl.settings.option`),
so the command line is generated from them and a default is written once. Out-of-range values raise
:class:`~frugalvl.settings.FieldError` (a ``ValueError``) naming the *field* (``tile 8 is too small: ...``);
the command line shows the field as its flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..settings import FieldError, option
from ..sources.aoi import DEFAULT_CRS, parse_bbox
from ..sources.bands import parse_bands as _parse_bands
from ..sources.xyz import MAX_ZOOM

VECTOR_FORMATS = {"gpkg": ".gpkg", "geojson": ".geojson", "parquet": ".parquet"}
STRETCHES = ("percentile", "minmax")
MIN_TILE = 32


def parse_bands(text: str) -> tuple[int | str, ...] | None:
    """``"4,3,2"`` -> ``(4, 3, 2)`` (1-based band numbers), ``"red,green,blue"`` -> band names
    (:mod:`frugalvl.sources.bands`); ``ValueError`` for anything else."""
    return _parse_bands(text)


def parse_names(text: str) -> tuple[str, ...] | None:
    """``"visual"`` or ``"B04,B03,B02"`` -> a tuple of names."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise ValueError(f"{text!r} names nothing: give asset names, e.g. visual or B04,B03,B02")
    return names


def parse_positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{text!r} must be a positive number")
    return value


@dataclass(frozen=True)
class SceneSettings:
    """How a scene is tiled, read and written (defaults in docs/scenes.md).

    The field order is part of every scene's record (``<stem>_run.json``): append, never reorder.
    """

    tile: int = option(
        512, "segment every input in tiles of N×N px (large scenes, URLs, VRT and JPEG2000 are tiled anyway)"
    )
    overlap: int | None = option(
        None, "pixels shared by neighbouring tiles; none: a quarter of the tile", flag="--tile-overlap", parse=int
    )
    scale: float = option(1.0, "resample scenes by F first, e.g. 0.5 = twice the GSD")
    bands: tuple[int | str, ...] | None = option(
        None,
        "bands to use as RGB: 1-based numbers (4,3,2) or names from the band descriptions or a STAC item "
        "(red,green,blue); none: the first three (a STAC item: its visual asset, else red,green,blue)",
        parse=parse_bands,
    )
    stretch: str = option("percentile", "scaling of non-8-bit bands to 0..255", choices=STRETCHES)
    save_probs: bool = option(
        False,
        "also write class scores: <stem>_probs.tif (uint8 COG, one band per class, 255 × score) for "
        "georeferenced inputs and tiled scenes, <stem>_probs.npy (float32 C×H×W) for plain images (PNG, JPEG)",
    )
    vectors: str | None = option(None, "also write class polygons in this format", choices=tuple(VECTOR_FORMATS))
    min_area: float = option(0.0, "drop polygons smaller than this (map units², px without a CRS)")
    simplify: float = option(0.0, "simplify polygons with this topology-preserving tolerance (map units)")
    # Where the pixels come from (frugalvl.sources); left out of a scene's record at their defaults.
    bbox: tuple[float, float, float, float] | None = option(
        None,
        "area of interest W,S,E,N in the bbox CRS: only tiles meeting it are read; nodata outside",
        parse=parse_bbox,
        metavar="W,S,E,N",
    )
    bbox_crs: str = option(DEFAULT_CRS, "CRS of the bbox, e.g. EPSG:32631")
    aoi: str | None = option(
        None, "area of interest: a vector file whose polygons (any CRS) are unioned; nodata outside", metavar="FILE"
    )
    assets: tuple[str, ...] | None = option(
        None,
        "STAC items: the assets to read, e.g. visual or B04,B03,B02",
        shown="visual, else the red,green,blue bands",
        metavar="NAMES",
        parse=parse_names,
    )
    resolution: float | None = option(
        None,
        "STAC items: the output pixel size in the grid's units; tile services: metres, mapped to the nearest zoom",
        shown="the finest chosen band's",
        metavar="SIZE",
        parse=parse_positive,
    )
    zoom: int | None = option(
        None,
        f"tile services: the zoom level, 0 to {MAX_ZOOM} (xyz+URL; wmts+URL: the tile matrix of that identifier, "
        "else of that position in the set)",
        parse=int,
    )
    max_requests: int = option(8, "tile services: at most N tile requests in flight", metavar="N")

    def __post_init__(self) -> None:
        def refuse(name: str, message: str) -> FieldError:
            return FieldError(name, message, SceneSettings)

        if self.tile < MIN_TILE:
            raise refuse("tile", f"{self.tile} is too small: give at least {MIN_TILE} px (e.g. 512)")
        if self.overlap is not None and not 0 <= self.overlap <= self.tile // 2:
            raise refuse("overlap", f"{self.overlap} must be between 0 and half the tile ({self.tile // 2})")
        if not (math.isfinite(self.scale) and 0 < self.scale <= 16):
            raise refuse("scale", f"{self.scale} must be a number in (0, 16], e.g. 0.5 to work at twice the GSD")
        if self.vectors is not None and self.vectors not in VECTOR_FORMATS:
            raise refuse("vectors", f"{self.vectors!r}: choose one of {', '.join(VECTOR_FORMATS)}")
        if not (math.isfinite(self.min_area) and self.min_area >= 0):
            raise refuse("min_area", f"{self.min_area} must be zero or positive (map units², pixels without a CRS)")
        if not (math.isfinite(self.simplify) and self.simplify >= 0):
            raise refuse("simplify", f"{self.simplify} must be zero or positive (map units)")
        if self.stretch not in STRETCHES:
            raise refuse("stretch", f"{self.stretch!r}: choose one of {', '.join(STRETCHES)}")

        if self.resolution is not None and not (math.isfinite(self.resolution) and self.resolution > 0):
            raise refuse("resolution", f"{self.resolution} must be a positive pixel size")
        if self.zoom is not None and not 0 <= self.zoom <= MAX_ZOOM:
            raise refuse("zoom", f"{self.zoom} is out of range: give a zoom between 0 and {MAX_ZOOM}")
        if self.aoi is not None and not Path(self.aoi).is_file():
            raise refuse("aoi", f"{self.aoi} does not exist: give a vector file (GeoJSON, GeoPackage, shapefile)")
        if self.max_requests < 1:
            raise refuse("max_requests", f"{self.max_requests} must be at least 1")

    @property
    def overlap_px(self) -> int:
        return self.tile // 4 if self.overlap is None else self.overlap

    @property
    def band_numbers(self) -> tuple[int, ...] | None:
        """The bands as numbers (band names are resolved on the scene path, which they route to)."""
        if self.bands is None:
            return None
        if not all(isinstance(b, int) for b in self.bands):
            raise ValueError(f"bands {self.bands} are names: they are read through the tiled scene path")
        return tuple(b for b in self.bands if isinstance(b, int))

    @property
    def has_aoi(self) -> bool:
        return self.bbox is not None or self.aoi is not None

    @property
    def needs_scene_path(self) -> bool:
        """Settings only the tiled scene path honours: an AOI, band names, STAC assets or a resolution."""
        names = any(isinstance(b, str) for b in self.bands or ())
        return self.has_aoi or names or self.assets is not None or self.resolution is not None or self.zoom is not None


SOURCE_FIELDS = {
    "bbox": None,
    "bbox_crs": DEFAULT_CRS,
    "aoi": None,
    "assets": None,
    "resolution": None,
    "zoom": None,
    "max_requests": 8,
}


@dataclass(frozen=True)
class SegmentRunSettings:
    """One ``segment`` run over many inputs (:func:`frugalvl.segment.pipeline.segment_files`, the Ray engine).

    ``scene`` holds the reading and writing settings of every input (bands, stretch, scores, vectors)
    and the tiling of those that go through the scene path; ``tile_all`` sends every input there
    (otherwise only large, remote and VRT/JPEG2000 ones).
    """

    scene: SceneSettings = option(SceneSettings(), "reading, tiling and writing settings", cli=False)
    tile_all: bool = option(False, "every input through the tiled scene path", cli=False)
    overwrite: bool = option(False, "redo inputs whose outputs already exist (default: skip them)")

    def __post_init__(self) -> None:
        if not isinstance(self.scene, SceneSettings):
            raise FieldError("scene", f"must be a SceneSettings, got {type(self.scene).__name__}", SegmentRunSettings)
