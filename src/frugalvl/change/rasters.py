"""Single-band rasters written window by window, then copied to a Cloud-Optimized GeoTIFF.

Used for every raster the change path writes in pieces (tiled scenes) or as extras (the ``semantic`` output setting): a
temporary tiled GeoTIFF beside the target receives the windows, and :func:`frugalvl.raster.to_cog` turns it
into the final COG atomically, so memory stays at one window and an interrupted run leaves no output.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..raster import to_cog


class TiledRaster:
    """``with TiledRaster(...) as r: r.write(data, row, col)``; the COG appears when the block ends cleanly."""

    def __init__(
        self,
        path: str | os.PathLike,
        height: int,
        width: int,
        dtype: Any,
        nodata: int,
        crs: Any = None,
        transform: Any = None,
        tags: dict[str, str] | None = None,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        resampling: str = "NEAREST",
    ) -> None:
        self.path = Path(path)
        self.resampling = resampling
        self.profile: dict[str, Any] = dict(
            driver="GTiff",
            height=height,
            width=width,
            count=1,
            dtype=np.dtype(dtype).name,
            nodata=nodata,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
        )
        if crs is not None:
            self.profile.update(crs=crs, transform=transform)
        self.tags = tags or {}
        self.colormap = colormap
        self._tmp: Path | None = None
        self._dst: Any = None

    def __enter__(self) -> TiledRaster:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".src.tif")
        os.close(fd)
        self._tmp = Path(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dst = rasterio.open(self._tmp, "w", **self.profile)
        if self.tags:
            self._dst.update_tags(**self.tags)
        if self.colormap is not None:
            self._dst.write_colormap(1, self.colormap)
        return self

    def write(self, data: np.ndarray, row: int = 0, col: int = 0) -> None:
        from rasterio.windows import Window

        self._dst.write(
            data.astype(self.profile["dtype"], copy=False), 1, window=Window(col, row, data.shape[1], data.shape[0])
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        from rasterio.errors import NotGeoreferencedWarning

        assert self._tmp is not None
        try:
            self._dst.close()
            if exc_type is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    to_cog(self._tmp, self.path, self.resampling)
        finally:
            self._tmp.unlink(missing_ok=True)


def names_tag(names: list[str]) -> dict[str, str]:
    return {"CLASS_NAMES": json.dumps(list(names))}
