"""A tiled image service read like a rasterio dataset: the one fetch path of XYZ and WMTS sources.

A :class:`TileDataset` is one tile matrix (a grid of ``tile_w×tile_h`` tiles, ``cols×rows`` of them,
origin and pixel size in ``crs``) as a 3-band uint8 raster. The scene path cuts it to the bbox
(:func:`frugalvl.sources.open.apply_aoi`), so only the tiles under the tiles being segmented are fetched.

* Fetching: urllib, at most ``max_requests`` tiles in flight, each saved under the run's work folder
  (``<cache>/<matrix>/<col>/<row>``, written atomically), so a resumed run refetches nothing; a tile the
  server refuses (an HTTP error, or a body that is not an image of the matrix's tile size) is logged
  once, remembered as refused (``.refused``), and is nodata. Tiles outside the matrix (or outside the
  service's declared limits) are nodata and never asked for.
* A server that does not answer within :data:`TIMEOUT_S` fails the run with one line.
* The fourth band of the decoded tiles (alpha, 255 when the tile has none) is the valid mask.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import urllib.error
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path
from ..urlfetch import urlopen

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
MEMORY_TILES = 256  # decoded tiles kept in memory


class TileDataset:
    """One tile matrix of a service as a 3-band uint8 raster whose tiles come from ``url_of(col, row)``."""

    count = 3
    dtypes = ("uint8",) * 3
    descriptions = ("red", "green", "blue")
    nodata = None

    def __init__(
        self,
        name: str,
        url_of: Callable[[int, int], str],
        crs: Any,
        transform: Any,
        grid: tuple[int, int, int, int],
        cache: Path,
        max_requests: int = 8,
        timeout: float | None = None,
        limits: tuple[int, int, int, int] | None = None,
        keep: dict[Path, bytes] | None = None,
    ):
        """``grid``: tile width, tile height, matrix columns, matrix rows; ``cache``: this matrix's tile
        folder; ``limits``: the first and last column and row the service serves (inclusive); ``keep``:
        files written beside the tiles with the first one (a service's description, for a resumed run)."""
        self.keep = dict(keep or {})
        self.name, self.url_of, self.crs, self.transform = name, url_of, crs, transform
        self.tile_w, self.tile_h, self.cols, self.rows = grid
        self.width, self.height = self.tile_w * self.cols, self.tile_h * self.rows
        self.limits = limits or (0, self.cols - 1, 0, self.rows - 1)
        self.cache, self.max_requests = Path(cache), max(1, max_requests)
        self.timeout = TIMEOUT_S if timeout is None else timeout
        self.requests = 0  # tiles fetched from the server by this dataset
        self._tiles: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()
        self._last: tuple[Any, np.ndarray] | None = None

    def close(self) -> None:
        self._tiles.clear()

    def __enter__(self) -> TileDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tiles -----------------------------------------------------------------------------
    def _served(self, x: int, y: int) -> bool:
        c0, c1, r0, r1 = self.limits
        return c0 <= x <= c1 and r0 <= y <= r1

    def _fetch(self, x: int, y: int) -> np.ndarray | None:
        """The decoded ``4×tile_h×tile_w`` tile (alpha last), None when refused; from the disk cache if there."""
        if not self._served(x, y):
            return None
        path = self.cache / str(x) / str(y)
        refused = path.with_suffix(".refused")
        if refused.exists():
            return None
        if path.exists():
            return decode(path.read_bytes(), self.tile_w, self.tile_h)
        body, why = self._download(x, y)
        tile = decode(body, self.tile_w, self.tile_h) if body is not None else None
        if tile is None:
            why = why or "not an image"
            log.warning("tile %s/%d/%d of %s: %s; its pixels are nodata", self.cache.name, x, y, self.name, why)
            refused.parent.mkdir(parents=True, exist_ok=True)
            refused.write_text(why + "\n")
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        for kept, data in list(self.keep.items()):
            if not kept.exists():
                with atomic_path(kept) as tmp:
                    Path(tmp).write_bytes(data)
            self.keep.pop(kept, None)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(body)  # type: ignore[arg-type]
        return tile

    def _download(self, x: int, y: int) -> tuple[bytes | None, str | None]:
        with self._lock:
            self.requests += 1
        try:
            with urlopen(self.url_of(x, y), timeout=self.timeout) as r:
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
                # each fetch in a copy of the caller's context: the address policy follows it
                jobs = [pool.submit(contextvars.copy_context().run, self._fetch, k[0], k[1]) for k in todo]  # type: ignore[arg-type]
                for k, job in zip(todo, jobs, strict=True):
                    out[k] = job.result()
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
        tw, th = self.tile_w, self.tile_h
        ty0, ty1 = max(0, r0 // th), min(self.rows - 1, (r0 + h - 1) // th)
        tx0, tx1 = max(0, c0 // tw), min(self.cols - 1, (c0 + w - 1) // tw)
        keys = [(x, y) for y in range(ty0, ty1 + 1) for x in range(tx0, tx1 + 1)]
        got = self.tiles(keys)
        mosaic = np.zeros((4, (ty1 - ty0 + 1) * th, (tx1 - tx0 + 1) * tw), np.uint8)
        for (x, y), tile in got.items():
            if tile is not None:
                mosaic[:, (y - ty0) * th : (y - ty0 + 1) * th, (x - tx0) * tw : (x - tx0 + 1) * tw] = tile
        oy, ox = r0 - ty0 * th, c0 - tx0 * tw
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


def decode(body: bytes, width: int, height: int) -> np.ndarray | None:
    """A PNG/JPEG/WebP tile as ``4×height×width`` uint8 (alpha 255 when it has none); None if it is not one."""
    import cv2

    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED) if body else None
    if img is None or img.shape[:2] != (height, width):
        return None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    rgb = img[..., 2::-1] if img.shape[2] >= 3 else np.repeat(img[..., :1], 3, axis=2)
    alpha = img[..., 3] if img.shape[2] == 4 else np.full((height, width), 255, np.uint8)
    if alpha.dtype != np.uint8 or rgb.dtype != np.uint8:
        return None
    return np.concatenate([rgb.transpose(2, 0, 1), alpha[None]]).astype(np.uint8)


__all__ = ["TIMEOUT_S", "TileDataset", "decode"]
