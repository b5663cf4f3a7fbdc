"""Image pairs: finding them, checking that they line up, and reading the after date on the before grid.

``BEFORE`` and ``AFTER`` are two image files, or two folders holding the same file names. A pair lines up
when both images have the same size and neither is georeferenced differently; two georeferenced images
on different grids are aligned by reading the after image through a warped VRT onto the before image's
grid (bilinear). Anything that cannot be aligned stops the run before a model loads, with one line.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..raster import (
    IMAGE_SUFFIXES,
    RasterImage,
    apply_stretch,
    input_name,
    input_stem,
    is_url,
    read_image,
    select_bands,
    stretch_limits,
)


@dataclass(frozen=True)
class Pair:
    """Two dates: local paths, or URLs (``https://``, ``s3://``: read by GDAL, always as scenes)."""

    before: Path | str
    after: Path | str

    @property
    def stem(self) -> str:
        """Outputs are named after the before image."""
        return input_stem(self.before)

    @property
    def names(self) -> tuple[str, str]:
        return input_name(self.before), input_name(self.after)

    @property
    def remote(self) -> bool:
        return is_url(self.before) or is_url(self.after)


def _images_in(folder: Path) -> dict[str, Path]:
    return {f.name: f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()}


def find_pairs(before: str | os.PathLike, after: str | os.PathLike) -> list[Pair]:
    """The pairs named by two files or two folders (same file names); one line for anything missing."""
    if is_url(before) or is_url(after):
        for item, role in ((before, "before"), (after, "after")):
            if not is_url(item) and not Path(item).is_file():
                raise UserError(f"{role} input {item} does not exist: give an image file or a URL")
        return [Pair(str(before) if is_url(before) else Path(before), str(after) if is_url(after) else Path(after))]
    b, a = Path(before), Path(after)
    for p, role in ((b, "before"), (a, "after")):
        if not p.exists():
            raise UserError(f"{role} input {p} does not exist: give two image files or two folders of images")
    if b.is_file() and a.is_file():
        return [Pair(b, a)]
    if not (b.is_dir() and a.is_dir()):
        raise UserError(f"{b} and {a} must be two image files or two folders, not one of each")
    first, second = _images_in(b), _images_in(a)
    if not first:
        raise UserError(f"before folder {b} holds no images ({', '.join(IMAGE_SUFFIXES)}): point to a folder of images")
    for names, other, folder in ((first, second, a), (second, first, b)):
        missing = [n for n in names if n not in other]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserError(
                f"{missing[0]}{more} has no partner of the same name in {folder}: "
                "both folders must hold the same file names"
            )
    stems = Counter(input_stem(n) for n in first)
    clashes = [s for s, n in stems.items() if n > 1]
    if clashes:
        raise UserError(f"before images share the output name(s) {', '.join(clashes)}: rename one of them")
    return [Pair(first[n], second[n]) for n in first]


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Size and georeference of a raster, from its header."""

    height: int
    width: int
    crs: Any = None
    transform: Any = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        south, west, north, east = array_bounds(self.height, self.width, self.transform)
        return west, south, east, north


def read_grid(path: Path | str) -> Grid:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from ..segment.scene_read import gdal_env

    try:
        with warnings.catch_warnings(), gdal_env():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                crs = src.crs
                return Grid(src.height, src.width, crs, src.transform if crs is not None else None)
    except RasterioIOError:
        raise UserError(
            f"cannot read {path}: not a readable image file (corrupt, unreachable or unsupported?)"
        ) from None


def _size(g: Grid) -> str:
    return f"{g.width}×{g.height} px"


def needs_warp(pair: Pair) -> bool:
    """Whether the after image must be resampled onto the before grid; one line when it cannot be."""
    first, second = read_grid(pair.before), read_grid(pair.after)
    if first.georeferenced and second.georeferenced:
        if (first.crs, first.transform, first.height, first.width) == (
            second.crs,
            second.transform,
            second.height,
            second.width,
        ):
            return False
        _check_overlap(pair, first, second)
        return True
    if (first.height, first.width) == (second.height, second.width):
        return False  # same size, at most one georeferenced: taken as the same grid, as the official code does
    if first.georeferenced or second.georeferenced:
        which = pair.names[0] if not first.georeferenced else pair.names[1]
        raise UserError(
            f"{which} has no georeference and the two dates differ in size ({_size(first)} and "
            f"{_size(second)}): give both as GeoTIFFs, or co-registered images of the same size"
        )
    raise UserError(
        f"{pair.names[0]} and {pair.names[1]} differ in size ({_size(first)} and {_size(second)}) and carry "
        "no georeference to align them: give co-registered images of the same size"
    )


def _check_overlap(pair: Pair, first: Grid, second: Grid) -> None:
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    try:
        west, south, east, north = transform_bounds(second.crs, first.crs, *second.bounds())
    except (CRSError, ValueError) as exc:
        raise UserError(
            f"{pair.names[1]}'s CRS cannot be transformed into {pair.names[0]}'s ({exc}): reproject one of them first"
        ) from None
    w0, s0, e0, n0 = first.bounds()
    if not all(np.isfinite([west, south, east, north])) or west >= e0 or east <= w0 or south >= n0 or north <= s0:
        raise UserError(
            f"{pair.names[0]} and {pair.names[1]} do not overlap (after the CRS transform): "
            "give two images of the same place"
        )


def read_on_grid(
    path: Path, like: RasterImage, bands: Sequence[int] | None = None, stretch: str = "percentile"
) -> RasterImage:
    """``path`` resampled (bilinear) onto ``like``'s grid through a warped VRT; no data outside its footprint."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    height, width = like.rgb.shape[:2]
    with rasterio.open(path) as src:
        idx = select_bands(src.count, bands, path)
        with WarpedVRT(
            src,
            crs=like.crs,
            transform=like.transform,
            width=width,
            height=height,
            resampling=Resampling.bilinear,
            add_alpha=True,  # marks the pixels outside the after image's footprint
        ) as vrt:
            data = vrt.read(idx)
            valid = vrt.dataset_mask() > 0
    data = apply_stretch(data, stretch_limits(data, valid, stretch))
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    rgb = np.ascontiguousarray(data.transpose(1, 2, 0))
    return RasterImage(
        rgb=rgb, path=path, crs=like.crs, transform=like.transform, nodata_mask=None if valid.all() else ~valid
    )


def read_pair(
    pair: Pair, bands: Sequence[int] | None = None, stretch: str = "percentile"
) -> tuple[RasterImage, RasterImage]:
    """Both dates as RGB, the after date on the before grid where they are georeferenced differently."""
    before = read_image(pair.before, bands=bands, stretch=stretch)
    if needs_warp(pair):
        return before, read_on_grid(Path(pair.after), before, bands, stretch)
    return before, read_image(pair.after, bands=bands, stretch=stretch)
