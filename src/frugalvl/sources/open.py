"""Open any raster source on one grid: a plain raster (a rasterio dataset), a STAC item, cut to an AOI."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .aoi import aligned_window, aoi_geometry, pixel_bounds
from .grid import GridSource, Layer


def is_stac(name: str) -> bool:
    """Whether an input names a STAC item (a ``.json`` file or URL), or several (``stac-items:[…]``)."""
    return str(name).startswith("stac-items:") or str(name).split("?")[0].lower().endswith(".json")


def is_service(name: str) -> bool:
    """Whether an input names a tile service (``xyz+…`` or ``wmts+…``)."""
    return str(name).startswith(("xyz+", "wmts+"))


def open_service(
    name: str, zoom: int | None, resolution: float | None, latitude: float, cache: Any, max_requests: int
) -> Any:
    """A tile service (XYZ or WMTS) at a zoom (or the one nearest ``resolution`` metres; XYZ: at
    ``latitude``), its tiles cached under ``cache``."""
    if str(name).startswith("wmts+"):
        from .wmts import open_wmts

        return open_wmts(name, zoom, resolution, cache, max_requests)
    from .xyz import open_xyz

    return open_xyz(name, zoom, resolution, latitude, cache, max_requests)


def as_grid(src: Any) -> GridSource:
    """A rasterio dataset as a :class:`GridSource` over its own grid (a grid source is returned as is)."""
    if isinstance(src, GridSource):
        return src
    h, w = src.height, src.width
    return GridSource(
        name=src.name,
        bands=[[Layer(src, b)] for b in range(1, src.count + 1)],
        crs=src.crs,
        full_transform=src.transform,
        crop=(0, 0, h, w),
        band_names=[d or "" for d in src.descriptions],
        owned=[src],
    )


def apply_aoi(
    src: Any,
    name: str,
    bbox: tuple[float, ...] | None,
    bbox_crs: str,
    aoi: str | None,
    tile: int | None = None,
    overlap: int | None = None,
    reopen: Any = None,
) -> Any:
    """``src`` cut to the area of interest (a :class:`GridSource`), or ``src`` itself without one.

    ``tile``/``overlap``: the crop is aligned to the whole scene's tile grid (:func:`.aoi.aligned_window`).
    ``reopen``: opens ``src`` afresh (for the reading thread). Raises a one-line error when the AOI
    misses the scene.
    """
    geom = aoi_geometry(bbox, bbox_crs, aoi, src.crs, name)
    if geom is None:
        return src
    grid = as_grid(src)
    full_h, full_w = grid.crop[2], grid.crop[3]
    bounds = pixel_bounds(geom, grid.full_transform, full_h, full_w)
    if bounds is None:
        raise UserError(f"the area of interest does not intersect {name}: check the bbox/AOI and its CRS")
    crop = aligned_window(bounds, full_h, full_w, tile, overlap)

    def cut(g: GridSource) -> GridSource:
        g.crop, g.aoi = crop, [geom]
        return g

    grid = cut(grid)
    if reopen is not None:
        grid.reopen_with = lambda: cut(as_grid(reopen()))
    return grid
