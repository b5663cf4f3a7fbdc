"""One grid over several rasters: the read-only view the scene path reads instead of a rasterio dataset.

A :class:`GridSource` has the parts of a rasterio dataset that :class:`~frugalvl.segment.scene_read.SceneReader`
and the writers use (``height``, ``width``, ``transform``, ``crs``, ``count``, ``dtypes``, ``read``,
``read_masks``, ``name``, ``close``). Each of its bands is a list of *layers* (a dataset already on the
full grid, and a band of it), filled in order where earlier layers have no data (a mosaic). The view
is a *crop* of the full grid (the area of interest, aligned to the tile grid), and pixels outside the
AOI polygons are invalid: a window with no AOI pixel is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Layer:
    """Band ``band`` of ``dataset`` (on the full grid), with STAC-style scale/offset and nodata."""

    dataset: Any
    band: int
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass
class GridSource:
    name: str
    bands: list[list[Layer]]
    crs: Any
    full_transform: Any
    crop: tuple[int, int, int, int]  # row0, col0, height, width on the full grid
    aoi: list[Any] | None = None  # shapely geometries in ``crs``
    band_names: list[str] | None = None
    reopen_with: Callable[[], GridSource] | None = field(default=None, repr=False)
    owned: list[Any] = field(default_factory=list, repr=False)  # datasets to close
    _last: tuple[Any, np.ndarray] | None = field(default=None, repr=False)

    # -- the dataset interface -------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.crop[2]

    @property
    def width(self) -> int:
        return self.crop[3]

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def transform(self):
        from affine import Affine

        return self.full_transform @ Affine.translation(self.crop[1], self.crop[0])

    @property
    def scaled(self) -> bool:
        return any(lay.scale != 1.0 or lay.offset != 0.0 for layers in self.bands for lay in layers)

    @property
    def dtypes(self) -> list[str]:
        if self.scaled:
            return ["float32"] * self.count
        return [layers[0].dataset.dtypes[layers[0].band - 1] for layers in self.bands]

    @property
    def descriptions(self) -> tuple[str | None, ...]:
        return tuple(self.band_names or [None] * self.count)

    @property
    def nodata(self) -> None:
        return None

    def reopen(self) -> GridSource:
        """The same view with its own dataset handles (for a reading thread)."""
        return self.reopen_with() if self.reopen_with is not None else self

    def close(self) -> None:
        for ds in reversed(self.owned):
            ds.close()
        self.owned.clear()

    def __enter__(self) -> GridSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def _window(self, window) -> Any:
        from rasterio.windows import Window

        if window is None:
            return Window(self.crop[1], self.crop[0], self.crop[3], self.crop[2])
        return Window(window.col_off + self.crop[1], window.row_off + self.crop[0], window.width, window.height)

    def aoi_mask(self, full_win, shape: tuple[int, int]) -> np.ndarray | None:
        """``shape`` bool, True inside the AOI, for a window of the full grid; None without an AOI."""
        if not self.aoi:
            return None
        from affine import Affine
        from rasterio.features import geometry_mask

        t = (
            self.full_transform
            @ Affine.translation(full_win.col_off, full_win.row_off)
            @ Affine.scale(full_win.width / shape[1], full_win.height / shape[0])
        )
        return geometry_mask(self.aoi, out_shape=shape, transform=t, invert=True, all_touched=False)

    def read(self, indexes: Sequence[int] | int, window=None, out_shape=None, resampling=None) -> np.ndarray:
        from rasterio.enums import Resampling

        single = isinstance(indexes, int)
        idx = [indexes] if isinstance(indexes, int) else list(indexes)
        win = self._window(window)
        shape = tuple(out_shape[-2:]) if out_shape is not None else (round(win.height), round(win.width))
        resampling = resampling if resampling is not None else Resampling.nearest
        inside = self.aoi_mask(win, shape)
        dtype = np.float32 if self.scaled else np.dtype(self.dtypes[idx[0] - 1])
        data = np.zeros((len(idx), *shape), dtype=dtype)
        valid = np.zeros((len(idx), *shape), dtype=bool)
        if inside is None or inside.any():
            for i, b in enumerate(idx):
                for lay in self.bands[b - 1]:
                    need = ~valid[i]
                    if not need.any():
                        break
                    kw = dict(window=win, out_shape=shape, resampling=resampling, boundless=False)
                    got = lay.dataset.read(lay.band, **kw)
                    ok = lay.dataset.read_masks(lay.band, **kw) > 0
                    if lay.nodata is not None:
                        ok &= got != lay.nodata
                    if lay.scale != 1.0 or lay.offset != 0.0:
                        got = got.astype(np.float32) * lay.scale + lay.offset
                    take = need & ok
                    data[i][take] = got[take]
                    valid[i] |= take
            if inside is not None:
                valid &= inside
        self._last = ((tuple(idx), win, shape), valid)
        return data[0] if single else data

    def read_masks(self, indexes: Sequence[int] | int, window=None, out_shape=None, resampling=None) -> np.ndarray:
        idx = [indexes] if isinstance(indexes, int) else list(indexes)
        win = self._window(window)
        shape = tuple(out_shape[-2:]) if out_shape is not None else (round(win.height), round(win.width))
        key = (tuple(idx), win, shape)
        if self._last is None or self._last[0] != key:
            self.read(idx, window, out_shape, resampling)
        assert self._last is not None
        masks = self._last[1].astype(np.uint8) * 255
        return masks[0] if isinstance(indexes, int) else masks
