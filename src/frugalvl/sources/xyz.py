"""XYZ tile services (``xyz+https://host/{z}/{x}/{y}.png``) as scenes, on the Web Mercator grid of one zoom.

:class:`XYZDataset` is the whole world at zoom ``z`` (``256·2^z`` px square, EPSG:3857), a
:class:`~frugalvl.sources.tiles.TileDataset`: fetched ``max_requests`` at a time, cached under the
run's work folder (``<cache>/<z>/<x>/<y>``), refused tiles nodata with one line, a silent server one
error after :data:`TIMEOUT_S`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ..errors import UserError
from . import tiles
from .tiles import TileDataset

log = logging.getLogger(__name__)

PREFIX = "xyz+"
TILE = 256
MAX_ZOOM = 24
TIMEOUT_S = tiles.TIMEOUT_S
HALF_WORLD = 20037508.342789244  # Web Mercator half circumference (m)


def is_xyz(name: str) -> bool:
    return str(name).startswith(PREFIX)


def safe_stem(prefix: str, url: str) -> str:
    """``<prefix>_`` and a URL's host and path (scheme dropped) in file-name-safe characters."""
    url = url.split("://", 1)[-1]
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in url).strip("_.")
    return f"{prefix}_{safe}" if safe else prefix


def xyz_stem(name: str) -> str:
    """An output stem for a tile service: ``xyz_`` and its host and path up to the first placeholder."""
    return safe_stem("xyz", str(name)[len(PREFIX) :].split("{", 1)[0])


def zoom_for_resolution(resolution: float, latitude: float) -> int:
    """The zoom whose ground pixel size at ``latitude`` is nearest ``resolution`` metres (log scale)."""
    ground0 = 2 * HALF_WORLD / TILE * math.cos(math.radians(latitude))
    return max(0, min(MAX_ZOOM, round(math.log2(ground0 / resolution))))


class XYZDataset(TileDataset):
    """The world at zoom ``z`` as a 3-band uint8 raster whose tiles come from ``template``."""

    def __init__(self, template: str, zoom: int, cache: Path, max_requests: int = 8, timeout: float | None = None):
        from affine import Affine
        from rasterio.crs import CRS

        if not 0 <= zoom <= MAX_ZOOM:
            raise UserError(f"zoom {zoom} is out of range: give a zoom between 0 and {MAX_ZOOM}")
        url = template[len(PREFIX) :] if is_xyz(template) else template
        if not all(k in url for k in ("{z}", "{x}", "{y}")):
            raise UserError(
                f"tile URL {template} lacks {{z}}, {{x}} or {{y}}: give a template like xyz+https://host/{{z}}/{{x}}/{{y}}.png"
            )
        self.url, self.zoom = url, zoom
        n = 1 << zoom
        size = 2 * HALF_WORLD / (TILE * n)
        super().__init__(
            template,
            lambda x, y: url.replace("{z}", str(zoom)).replace("{x}", str(x)).replace("{y}", str(y)),
            CRS.from_epsg(3857),
            Affine(size, 0, -HALF_WORLD, 0, -size, HALF_WORLD),
            (TILE, TILE, n, n),
            Path(cache) / str(zoom),
            max_requests,
            TIMEOUT_S if timeout is None else timeout,
        )


def open_xyz(
    template: str, zoom: int | None, resolution: float | None, bbox_lat: float | None, cache: Path, max_requests: int
) -> XYZDataset:
    """The service at ``zoom`` (or the zoom nearest ``resolution`` metres at latitude ``bbox_lat``)."""
    if zoom is None:
        if resolution is None:
            raise UserError(f"{template}: a tile service needs a zoom or a resolution (metres)")
        zoom = zoom_for_resolution(resolution, bbox_lat or 0.0)
        log.info("%s: zoom %d for %g m", template, zoom, resolution)
    return XYZDataset(template, zoom, cache, max_requests)


__all__ = ["XYZDataset", "is_xyz", "open_xyz", "safe_stem", "xyz_stem", "zoom_for_resolution"]
