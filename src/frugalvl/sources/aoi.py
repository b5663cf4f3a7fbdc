"""An area of interest: a bounding box (``W,S,E,N`` in any CRS) and/or the polygons of a vector file.

The AOI becomes polygons in the scene's CRS; the scene is cropped to the AOI's bounds *aligned to the
tile grid of the whole scene* (:func:`aligned_window`), so every tile that holds AOI pixels is the
same tile, read from the same pixels, as in a run over the whole scene: inside the AOI the labels are
those of the full run, outside they are nodata, and tiles without an AOI pixel are neither read nor
segmented.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..windows import core_spans, spans

DEFAULT_CRS = "EPSG:4326"


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` -> four floats with W < E and S < N; ``ValueError`` otherwise."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not four comma-separated numbers W,S,E,N, e.g. 2.25,48.8,2.35,48.9") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{text!r} is not four comma-separated numbers W,S,E,N, e.g. 2.25,48.8,2.35,48.9")
    w, s, e, n = vals
    if not (w < e and s < n):
        raise ValueError(f"{text!r}: west must be less than east and south less than north (W,S,E,N)")
    return w, s, e, n


def aoi_geometry(bbox: tuple[float, ...] | None, bbox_crs: str, aoi: str | None, crs: Any, name: str) -> Any:
    """The AOI as one shapely geometry in ``crs`` (the bbox and the file's polygons intersected); None without one."""
    if bbox is None and aoi is None:
        return None
    import geopandas as gpd
    from shapely.geometry import box

    if crs is None:
        raise UserError(f"{name} has no CRS: an area of interest needs a georeferenced input")
    geom = None
    if bbox is not None:
        try:
            series = gpd.GeoSeries(
                [box(*bbox).segmentize(max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 64)], crs=bbox_crs
            )
        except Exception as exc:  # pyproj's CRS errors
            raise UserError(f"bbox CRS {bbox_crs!r} is not a CRS ({str(exc)[:80]}): give one like EPSG:4326") from None
        geom = series.to_crs(crs).iloc[0]
    if aoi is not None:
        geom_file = read_aoi(aoi, crs)
        geom = geom_file if geom is None else geom.intersection(geom_file)
    return geom


def read_aoi(path: str, crs: Any) -> Any:
    """The union of the polygons of a vector file, in ``crs`` (a file without a CRS is taken as EPSG:4326)."""
    import geopandas as gpd

    if not Path(path).is_file():
        raise UserError(f"area of interest {path} does not exist: give a vector file (GeoJSON, GeoPackage, shapefile)")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio's DataSourceError and friends
        raise UserError(f"cannot read the area of interest {path}: not a vector file ({str(exc)[:80]})") from None
    polys = frame[frame.geometry.notna() & frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polys.empty:
        raise UserError(f"area of interest {path} holds no polygons: draw the area as a polygon")
    if polys.crs is None:
        polys = polys.set_crs(DEFAULT_CRS)
    return polys.to_crs(crs).union_all()


def pixel_bounds(geom: Any, transform: Any, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(row0, row1, col0, col1)`` of the pixels the geometry's bounds cover, clipped; None if outside."""
    inv = ~transform
    xs, ys = [], []
    x0, y0, x1, y1 = geom.bounds
    for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
        c, r = inv @ (x, y)
        xs.append(c)
        ys.append(r)
    r0, r1 = max(0, math.floor(min(ys))), min(height, math.ceil(max(ys)))
    c0, c1 = max(0, math.floor(min(xs))), min(width, math.ceil(max(xs)))
    if geom.is_empty or r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def _aligned(lo: int, hi: int, size: int, tile: int, overlap: int) -> tuple[int, int]:
    """The span of the whole-scene tiles whose cores meet ``[lo, hi)`` along one axis."""
    sp = spans(size, tile, max(tile - overlap, 1))
    cores = core_spans(sp, size)
    hit = [i for i, (a, b) in enumerate(cores) if a < hi and lo < b]
    return sp[hit[0]][0], sp[hit[-1]][1]


def aligned_window(
    bounds: tuple[int, int, int, int], height: int, width: int, tile: int | None, overlap: int | None
) -> tuple[int, int, int, int]:
    """``(row0, col0, h, w)``: the crop of the scene for AOI pixel bounds, on the scene's tile grid when
    ``tile`` is given (else the bounds themselves)."""
    r0, r1, c0, c1 = bounds
    if tile is not None and overlap is not None:
        r0, r1 = _aligned(r0, r1, height, tile, overlap)
        c0, c1 = _aligned(c0, c1, width, tile, overlap)
    return r0, c0, r1 - r0, c1 - c0
