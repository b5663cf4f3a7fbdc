"""XYZ tile services (``xyz+https://host/{z}/{x}/{y}.png``) as scenes, on the Web Mercator grid of one zoom.

:class:`XYZDataset` is the whole world at zoom ``z`` (``256·2^z`` px square, EPSG:3857) read like a
rasterio dataset; the scene path cuts it to the bbox (:func:`frugalvl.sources.open.apply_aoi`), so only
the tiles under the tiles being segmented are fetched.

* Fetching: urllib, at most ``max_requests`` tiles in flight, each saved under the run's work folder
  (``<cache>/<z>/<x>/<y>``), so a resumed run refetches nothing; a tile the server refuses (an HTTP
  error, or a body that is not an image) is logged once, remembered as refused, and is nodata.
* A server that does not answer within :data:`TIMEOUT_S` fails the run with one line.
* The fourth band of the decoded tiles (alpha, 255 when the tile has none) is the valid mask.
"""

from __future__ import annotations

import logging
import math
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path

log = logging.getLogger(__name__)

PREFIX = "xyz+"
TILE = 256
MAX_ZOOM = 24
TIMEOUT_S = 30.0
HALF_WORLD = 20037508.342789244  # Web Mercator half circumference (m)
MEMORY_TILES = 256  # decoded tiles kept in memory


def is_xyz(name: str) -> bool:
    return str(name).startswith(PREFIX)


def xyz_stem(name: str) -> str:
    """An output stem for a tile service: ``xyz_`` and its host and path up to the first placeholder."""
    url = str(name)[len(PREFIX) :].split("://", 1)[-1].split("{", 1)[0]
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in url).strip("_.")
    return f"xyz_{safe}" if safe else "xyz"


def zoom_for_resolution(resolution: float, latitude: float) -> int:
    """The zoom whose ground pixel size at ``latitude`` is nearest ``resolution`` metres (log scale)."""
    ground0 = 2 * HALF_WORLD / TILE * math.cos(math.radians(latitude))
    return max(0, min(MAX_ZOOM, round(math.log2(ground0 / resolution))))


class XYZDataset:
    """The world at zoom ``z`` as a 3-band uint8 raster whose tiles come from ``template``."""

    count = 3
    dtypes = ("uint8",) * 3
    descriptions = ("red", "green", "blue")
    nodata = None

    def __init__(self, template: str, zoom: int, cache: Path, max_requests: int = 8, timeout: float | None = None):
        from affine import Affine
        from rasterio.crs import CRS

        if not 0 <= zoom <= MAX_ZOOM:
            raise UserError(f"zoom {zoom} is out of range: give a zoom between 0 and {MAX_ZOOM}")
        self.name = template
        self.url = template[len(PREFIX) :] if is_xyz(template) else template
        if not all(k in self.url for k in ("{z}", "{x}", "{y}")):
            raise UserError(
                f"tile URL {template} lacks {{z}}, {{x}} or {{y}}: give a template like xyz+https://host/{{z}}/{{x}}/{{y}}.png"
            )
        self.zoom, self.cache, self.max_requests = zoom, Path(cache), max(1, max_requests)
        self.timeout = TIMEOUT_S if timeout is None else timeout
        self.height = self.width = TILE << zoom
        size = 2 * HALF_WORLD / self.width
        self.transform = Affine(size, 0, -HALF_WORLD, 0, -size, HALF_WORLD)
        self.crs = CRS.from_epsg(3857)
        self.requests = 0  # tiles fetched from the server by this dataset
        self._tiles: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()
        self._last: tuple[Any, np.ndarray] | None = None

    def close(self) -> None:
        self._tiles.clear()

    def __enter__(self) -> XYZDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tiles -----------------------------------------------------------------------------
    def _path(self, x: int, y: int) -> Path:
        return self.cache / str(self.zoom) / str(x) / str(y)

    def _fetch(self, x: int, y: int) -> np.ndarray | None:
        """The decoded ``4×256×256`` tile (alpha last), None when refused; from the disk cache if there."""
        path = self._path(x, y)
        refused = path.with_suffix(".refused")
        if refused.exists():
            return None
        if not path.exists():
            body, why = self._download(x, y)
            tile = _decode(body) if body is not None else None
            if tile is None:
                why = why or "not an image"
                log.warning("tile %d/%d/%d of %s: %s; its pixels are nodata", self.zoom, x, y, self.name, why)
                refused.parent.mkdir(parents=True, exist_ok=True)
                refused.write_text(why + "\n")
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(body)  # type: ignore[arg-type]
            return tile
        return _decode(path.read_bytes())

    def _download(self, x: int, y: int) -> tuple[bytes | None, str | None]:
        url = self.url.replace("{z}", str(self.zoom)).replace("{x}", str(x)).replace("{y}", str(y))
        with self._lock:
            self.requests += 1
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:  # noqa: S310 (http(s) templates)
                return r.read(), None
        except urllib.error.HTTPError as exc:
            return None, f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"the tile server of {self.name} does not answer ({reason}; waited {self.timeout:g} s): "
                "check the URL and the network"
            ) from None

    def tiles(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray | None]:
        """Decoded tiles for ``keys``, fetched ``max_requests`` at a time when not in memory."""
        out = {k: self._tiles[k] for k in keys if k in self._tiles}
        todo = [k for k in keys if k not in out]
        if todo:
            with ThreadPoolExecutor(min(self.max_requests, len(todo))) as pool:
                for k, tile in zip(todo, pool.map(lambda k: self._fetch(*k), todo), strict=True):
                    out[k] = tile
        for k in keys:
            self._tiles[k] = out[k]
            self._tiles.move_to_end(k)
        while len(self._tiles) > MEMORY_TILES:
            self._tiles.popitem(last=False)
        return out

    # -- the dataset interface -------------------------------------------------------------
    def _pixels(self, window, out_shape) -> np.ndarray:
        """``4×h×w`` uint8 (RGB and valid·255) of a window, resampled (nearest) to ``out_shape``."""
        r0, c0 = int(math.floor(window.row_off)), int(math.floor(window.col_off))
        h, w = int(round(window.height)), int(round(window.width))
        shape = tuple(out_shape[-2:]) if out_shape is not None else (h, w)
        key = (r0, c0, h, w, shape)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        n = 1 << self.zoom
        ty0, ty1 = max(0, r0 // TILE), min(n - 1, (r0 + h - 1) // TILE)
        tx0, tx1 = max(0, c0 // TILE), min(n - 1, (c0 + w - 1) // TILE)
        keys = [(x, y) for y in range(ty0, ty1 + 1) for x in range(tx0, tx1 + 1)]
        got = self.tiles(keys)
        mosaic = np.zeros((4, (ty1 - ty0 + 1) * TILE, (tx1 - tx0 + 1) * TILE), np.uint8)
        for (x, y), tile in got.items():
            if tile is not None:
                mosaic[:, (y - ty0) * TILE : (y - ty0 + 1) * TILE, (x - tx0) * TILE : (x - tx0 + 1) * TILE] = tile
        oy, ox = r0 - ty0 * TILE, c0 - tx0 * TILE
        out = mosaic[:, oy : oy + h, ox : ox + w]
        if shape != (h, w):
            ys = (np.arange(shape[0]) * h // shape[0]).clip(0, h - 1)
            xs = (np.arange(shape[1]) * w // shape[1]).clip(0, w - 1)
            out = out[:, ys][:, :, xs]
        out = np.ascontiguousarray(out)
        self._last = (key, out)
        return out

    def read(self, indexes, window=None, out_shape=None, resampling=None, boundless=False) -> np.ndarray:
        px = self._pixels(window, out_shape)
        return px[indexes - 1] if isinstance(indexes, int) else px[[i - 1 for i in indexes]]

    def read_masks(self, indexes, window=None, out_shape=None, resampling=None, boundless=False) -> np.ndarray:
        alpha = self._pixels(window, out_shape)[3]
        return alpha if isinstance(indexes, int) else np.repeat(alpha[None], len(indexes), 0)


def _decode(body: bytes) -> np.ndarray | None:
    """A PNG/JPEG/WebP tile as ``4×256×256`` uint8 (alpha 255 when it has none); None if it is not one."""
    import cv2

    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED) if body else None
    if img is None or img.shape[:2] != (TILE, TILE):
        return None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    rgb = img[..., 2::-1] if img.shape[2] >= 3 else np.repeat(img[..., :1], 3, axis=2)
    alpha = img[..., 3] if img.shape[2] == 4 else np.full((TILE, TILE), 255, np.uint8)
    if alpha.dtype != np.uint8 or rgb.dtype != np.uint8:
        return None
    return np.concatenate([rgb.transpose(2, 0, 1), alpha[None]]).astype(np.uint8)


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


__all__ = ["XYZDataset", "is_xyz", "open_xyz", "xyz_stem", "zoom_for_resolution"]
