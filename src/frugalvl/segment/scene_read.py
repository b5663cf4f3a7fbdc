"""Reading a scene: open it (local, VRT or remote), read windows at a scale, stretch with scene-wide limits.

* Radiometry: non-8-bit data are stretched with limits of the whole scene from one decimated read
  (overviews when the file has them), never per tile (:func:`scene_limits`).
* Reading overlaps the model: :func:`prefetch` reads the next tiles in a background thread with its
  own dataset handle (GDAL releases the GIL while it decodes).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from ..errors import UserError
from ..orientation import exif_orientation, oriented_dataset
from ..raster import apply_stretch, input_name, is_url, stretch_limits, valid_pixels
from ..windows import Window

if TYPE_CHECKING:
    from .scene_settings import SceneSettings


class ReadsAWindow(Protocol):
    """What :func:`prefetch` needs of a tile (:class:`~.scene_tiles.Tile` is one): the window it reads."""

    @property
    def read(self) -> Window: ...


T = TypeVar("T", bound=ReadsAWindow)

STATS_LONG_SIDE = 2048  # scene-wide stretch limits come from a read at most this long (full read below)
PREFETCH_TILES = 2  # tiles read ahead of the model by a background thread
GDAL_ENV = dict(
    GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
    GDAL_HTTP_MAX_RETRY="2",
    GDAL_HTTP_RETRY_DELAY="0.5",
    GDAL_HTTP_CONNECTTIMEOUT="20",
    GDAL_HTTP_TIMEOUT="120",
    GDAL_CACHEMAX=256 << 20,
)  # bytes of GDAL block cache (its default, 5% of RAM, grows with the scene)


def gdal_env() -> Any:
    """The GDAL configuration scenes are read under (a ``rasterio.Env``; enter it with ``with``)."""
    import rasterio

    return rasterio.Env(**GDAL_ENV)


def open_scene(source: str | os.PathLike, settings: SceneSettings | None = None, work: Path | None = None):
    """Open a local raster, a VRT or a remote one (``https://``, ``s3://``: GDAL range requests).

    With ``settings``: a STAC item is opened on one grid (:mod:`frugalvl.sources.stac`) and the scene
    is cut to the area of interest (:func:`frugalvl.sources.open.apply_aoi`); either gives a
    :class:`~frugalvl.sources.grid.GridSource`, read like a dataset. A tile service (``xyz+URL``)
    keeps its tiles under ``work`` (the scene's part folder: a resumed run refetches nothing).
    """
    if settings is None:
        return _open_raster(source)
    from ..sources.open import apply_aoi, is_service, is_stac

    name = str(source)
    if is_stac(name):
        from ..sources.stac import open_item

        src = open_item(name, settings.assets, settings.bands, settings.resolution)
        reopen = src.reopen_with
    elif is_service(name):
        src, reopen = _open_tiles(name, settings, work)
    else:
        src = _open_raster(source)
        reopen = None if not settings.has_aoi else (lambda: _open_raster(source))
    try:
        aligned = settings.scale == 1.0 and not is_service(name)  # on the whole scene's tile grid
        out = apply_aoi(
            src,
            input_name(name),
            settings.bbox,
            settings.bbox_crs,
            settings.aoi,
            tile=settings.tile if aligned else None,
            overlap=settings.overlap_px if aligned else None,
            reopen=reopen,
        )
    except BaseException:
        src.close()
        raise
    return out


def _open_tiles(name: str, settings: SceneSettings, work: Path | None):
    """A tile service at the settings' zoom, and how to open it again (its tiles cached under ``work``)."""
    import tempfile

    from ..sources.open import open_service

    if settings.bbox is None and settings.aoi is None:
        raise UserError(f"{name} is a tile service: give a bbox (W,S,E,N) of the area to read")
    lat = 0.0
    if settings.bbox is not None:
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(settings.bbox_crs, "EPSG:4326", *settings.bbox)
        lat = (s + n) / 2
    cache = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="frugalvl-tiles-"))

    def make():
        return open_service(name, settings.zoom, settings.resolution, lat, cache, settings.max_requests)

    return make(), make


def _open_raster(source: str | os.PathLike):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    name = str(source)
    if not is_url(name) and not Path(name).is_file():
        raise UserError(f"image {name} does not exist: check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(name)
            orientation = 1 if is_url(name) else exif_orientation(name)
            return src if orientation == 1 else oriented_dataset(src, orientation)  # as the whole-image path
    except RasterioIOError as exc:
        if is_url(name):
            raise UserError(
                f"cannot open {name}: the server does not answer or the file is not a raster "
                f"({str(exc).splitlines()[0][:120]})"
            ) from None
        raise UserError(f"cannot read {name}: not a raster GDAL can read (corrupt or truncated?)") from None


@dataclass
class SceneReader:
    """Windowed reads of an open scene ``src`` at ``scale``, stretched with scene-wide ``limits``."""

    src: Any
    bands: list[int]
    scale: float
    stretch: str
    limits: list[tuple[float, float]] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        if self.scale == 1.0:
            return self.src.height, self.src.width
        return max(1, round(self.src.height * self.scale)), max(1, round(self.src.width * self.scale))

    @property
    def transform(self):
        from affine import Affine

        h, w = self.shape
        return self.src.transform @ Affine.scale(self.src.width / w, self.src.height / h)

    def _source_window(self, win: Window):
        from rasterio.windows import Window as RioWindow

        h, w = self.shape
        fy, fx = self.src.height / h, self.src.width / w
        return RioWindow(win.x0 * fx, win.y0 * fy, win.width * fx, win.height * fy)

    def read(self, win: Window, out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``[B, h, w]`` raw bands and the ``h×w`` valid mask of a window (scaled coordinates)."""
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError

        shape = out_shape or (win.height, win.width)
        try:
            if self.scale == 1.0 and out_shape is None:
                from rasterio.windows import Window as RioWindow

                rio_win = RioWindow(win.x0, win.y0, win.width, win.height)
                data = self.src.read(self.bands, window=rio_win)
                masks = self.src.read_masks(self.bands, window=rio_win)
            else:
                rio_win = self._source_window(win)
                data = self.src.read(
                    self.bands,
                    window=rio_win,
                    out_shape=(len(self.bands), *shape),
                    resampling=Resampling.bilinear if out_shape is None else Resampling.nearest,
                )
                masks = self.src.read_masks(
                    self.bands, window=rio_win, out_shape=(len(self.bands), *shape), resampling=Resampling.nearest
                )
        except (RasterioIOError, MemoryError) as exc:
            raise UserError(
                f"cannot read the pixels of {input_name(self.src.name)}: corrupt, truncated or "
                f"unreachable ({str(exc).splitlines()[0][:120]})"
            ) from None
        return data, valid_pixels(data, masks)

    def rgb(self, data: np.ndarray) -> np.ndarray:
        data = apply_stretch(data, self.limits)
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        return np.ascontiguousarray(data.transpose(1, 2, 0))

    def decimated_shape(self, long_side: int) -> tuple[int, int]:
        h, w = self.shape
        f = min(1.0, long_side / max(h, w))
        return max(1, round(h * f)), max(1, round(w * f))


def scene_limits(reader: SceneReader) -> list[tuple[float, float]] | None:
    """Scene-wide per-band stretch limits from one read at most :data:`STATS_LONG_SIDE` long.

    A scene no larger than that is read whole, so its limits equal the whole-image ones of
    :func:`frugalvl.raster.read_image`; a larger one is read from its overviews (GDAL picks them) or
    decimated.
    """
    if np.dtype(reader.src.dtypes[reader.bands[0] - 1]) == np.uint8:
        return None
    h, w = reader.shape
    shape = reader.decimated_shape(STATS_LONG_SIDE)
    data, valid = reader.read(Window(0, h, 0, w), out_shape=None if shape == (h, w) else shape)
    return stretch_limits(data, valid, reader.stretch)


def prefetch(reader: SceneReader, tiles: Sequence[T], depth: int = PREFETCH_TILES) -> Iterator[tuple[T, Any]]:
    """Tiles with their pixels, read ahead by a background thread with its own dataset handle.

    Reading and decoding (GDAL releases the GIL) overlap the model; at most ``depth`` tiles wait in
    memory. Errors in the thread are raised here, at the tile that failed.
    """
    import queue
    import threading

    import rasterio

    if not tiles:
        return
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def work() -> None:
        try:
            with rasterio.Env(**GDAL_ENV), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reopen = getattr(reader.src, "reopen", None)
                with reopen() if reopen is not None else rasterio.open(reader.src.name) as src:
                    own = SceneReader(src, reader.bands, reader.scale, reader.stretch, reader.limits)
                    for tile in tiles:
                        if stop.is_set():
                            return
                        q.put((tile, own.read(tile.read), None))
        except BaseException as exc:  # handed to the consumer
            q.put((None, None, exc))

    thread = threading.Thread(target=work, name="frugalvl-tile-reader", daemon=True)
    thread.start()
    try:
        for _ in tiles:
            tile, pixels, exc = q.get()
            if exc is not None:
                raise exc
            yield tile, pixels
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
