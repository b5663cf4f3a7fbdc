"""Change detection on whole co-registered scenes, tile by tile (docs/methods/segearth_ov3_change.md#whole-scenes).

The before scene is cut into non-overlapping tiles (512² by default, the LEVIR-CD tile size; edge tiles are
smaller); each tile of both dates goes through :meth:`ChangeDetector.detect` on its own, exactly as the
official evaluation treats its 512² tiles: Otsu thresholds, blobs and the dilation are per tile. The after
scene is read through a warped VRT onto the before grid when the grids differ.

Resuming: each finished tile is saved as a part (``.<stem>_change.parts/<row>_<col>.npy``, written atomically)
beside a record of what produced it; a rerun with the same record only computes the missing tiles, so a
killed run loses at most the tile in progress. Outputs are assembled window by window from the parts
(memory: one tile), the record is written last and the parts are then removed.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path, write_json
from ..progress import Reporter, as_reporter
from ..raster import apply_stretch, select_bands, stretch_limits
from ..windows import Window
from .detector import ChangeDetector
from .outputs import Tile
from .pairs import Pair, needs_warp

log = logging.getLogger(__name__)

STATS_LONG_SIDE = 2048  # scene-wide stretch limits from a read at most this long
OVERVIEW_LONG_SIDE = 1024  # each date's panel in the scene overlay


def plan_tiles(height: int, width: int, tile: int) -> list[Window]:
    """Non-overlapping ``tile``² windows covering the scene, row by row (edge tiles smaller)."""
    return [
        Window(y, min(y + tile, height), x, min(x + tile, width))
        for y in range(0, height, tile)
        for x in range(0, width, tile)
    ]


class SceneReader:
    """Both dates of a pair, opened once: windows of RGB on the before grid, with a no-data mask."""

    def __init__(self, pair: Pair, bands: Sequence[int] | None, stretch: str) -> None:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.vrt import WarpedVRT

        from ..segment.scene_read import gdal_env

        self._stack = ExitStack()
        self._stack.enter_context(gdal_env())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            first = self._stack.enter_context(rasterio.open(pair.before))
            second = self._stack.enter_context(rasterio.open(pair.after))
        if needs_warp(pair):
            second = self._stack.enter_context(
                WarpedVRT(
                    second,
                    crs=first.crs,
                    transform=first.transform,
                    width=first.width,
                    height=first.height,
                    resampling=Resampling.bilinear,
                    add_alpha=True,
                )
            )
        self.sources = (first, second)
        self.bands = [
            select_bands(src.count, bands, Path(str(p)))
            for src, p in zip(self.sources, (pair.before, pair.after), strict=True)
        ]
        self.height, self.width = first.height, first.width
        self.crs = first.crs
        self.transform = first.transform if first.crs is not None else None
        self.limits = [self._limits(src, idx, stretch) for src, idx in zip(self.sources, self.bands, strict=True)]

    def _limits(self, src: Any, idx: list[int], stretch: str) -> Any:
        if src.dtypes[0] == "uint8":
            return None
        scale = max(src.height, src.width) / STATS_LONG_SIDE
        shape = (len(idx), max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1))))
        data = src.read(idx, out_shape=shape)
        valid = src.dataset_mask(out_shape=shape[1:]) > 0
        return stretch_limits(data, valid, stretch)

    def read(self, w: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``before`` and ``after`` RGB (uint8) of window ``w`` and where either has no data."""
        from rasterio.windows import Window as RioWindow

        win = RioWindow(w.x0, w.y0, w.width, w.height)
        out, nodata = [], np.zeros((w.height, w.width), bool)
        for src, idx, limits in zip(self.sources, self.bands, self.limits, strict=True):
            data = apply_stretch(src.read(idx, window=win), limits)
            if data.shape[0] == 1:
                data = np.repeat(data, 3, axis=0)
            out.append(np.ascontiguousarray(data.transpose(1, 2, 0)))
            nodata |= src.dataset_mask(window=win) == 0
        return out[0], out[1], nodata

    def overview(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Both dates read at most :data:`OVERVIEW_LONG_SIDE` long, and the scale factor."""
        scale = max(1.0, max(self.height, self.width) / OVERVIEW_LONG_SIDE)
        shape = (max(1, round(self.height / scale)), max(1, round(self.width / scale)))
        panels = []
        for src, idx, limits in zip(self.sources, self.bands, self.limits, strict=True):
            data = apply_stretch(src.read(idx, out_shape=(len(idx), *shape)), limits)
            if data.shape[0] == 1:
                data = np.repeat(data, 3, axis=0)
            panels.append(np.ascontiguousarray(data.transpose(1, 2, 0)))
        return panels[0], panels[1], scale

    def close(self) -> None:
        self._stack.close()


@contextmanager
def open_scene(pair: Pair, bands: Sequence[int] | None, stretch: str) -> Iterator[SceneReader]:
    reader = SceneReader(pair, bands, stretch)
    try:
        yield reader
    finally:
        reader.close()


class Parts:
    """The finished tiles of one scene (a folder of parts), kept until its outputs are assembled."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @classmethod
    def prepare(cls, outdir: Path, stem: str, record: dict[str, Any], fresh: bool = False) -> Parts:
        """The scene's part folder, emptied first when its parts were made with another record, or when
        ``fresh`` (``overwrite``: a run starts clean, never resuming parts)."""
        parts = cls(Path(outdir) / f".{stem}_change.parts")
        record_file = parts.folder / "record.json"
        try:
            old = json.loads(record_file.read_text())
        except (OSError, ValueError):
            old = None
        if (fresh or old != record) and parts.folder.exists():
            shutil.rmtree(parts.folder)  # parts made with other settings are not this run's
        parts.folder.mkdir(parents=True, exist_ok=True)
        write_json(record_file, record)
        return parts

    def path(self, w: Window) -> Path:
        return self.folder / f"{w.y0}_{w.x0}.npy"

    def done(self, w: Window) -> bool:
        """Whether the tile's part is there and reads back (one that does not, from a crash or a full disk,
        is removed: its tile is detected again)."""
        path = self.path(w)
        if not path.exists():
            return False
        try:
            stack = np.load(path, mmap_mode="r")
            readable = stack.shape == (4, w.height, w.width)
        except (OSError, ValueError, EOFError):
            readable = False
        if not readable:
            log.warning("part %s does not read back: its tile is detected again", path.name)
            path.unlink(missing_ok=True)
        return readable

    def save(self, w: Window, tile: Tile) -> None:
        nodata = tile.nodata if tile.nodata is not None else np.zeros(tile.change.shape, bool)
        stack = np.stack([tile.change, tile.before, tile.after, nodata]).astype(np.uint16)
        with atomic_path(self.path(w)) as tmp, open(tmp, "wb") as f:
            np.save(f, stack)

    def load(self, w: Window) -> Tile:
        stack = np.load(self.path(w))
        return Tile(w.y0, w.x0, stack[0].astype(np.uint8), stack[1], stack[2], stack[3].astype(bool))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def detect_tile(detector: ChangeDetector, reader: SceneReader, w: Window) -> Tile:
    """One tile of both dates compared on its own (a tile without data anywhere is no change)."""
    before, after, nodata = reader.read(w)
    if nodata.all():
        zeros = np.zeros((w.height, w.width), np.uint8)
        return Tile(w.y0, w.x0, zeros, zeros, zeros, nodata)
    result = detector.detect(before, after)
    change = np.where(nodata, 0, result.change).astype(np.uint8)
    return Tile(w.y0, w.x0, change, result.labels_before, result.labels_after, nodata)


def detect_tiles(
    detector: ChangeDetector,
    reader: SceneReader,
    tiles: Sequence[Window],
    parts: Parts,
    progress: bool | Reporter,
) -> int:
    """Compute and save every tile not yet saved; returns how many were computed."""
    todo = [w for w in tiles if not parts.done(w)]
    bar = as_reporter(progress).start("tile", len(todo), "tiles", level=1)
    try:
        for w in todo:
            parts.save(w, detect_tile(detector, reader, w))
            bar.advance()
    finally:
        bar.close()
    return len(todo)
