"""Exemplars: boxes or polygons that point at examples of a class (docs/methods/exemplars.md).

A vector file (GeoPackage, GeoJSON, anything pyogrio reads) holds one feature per example: its
geometry (a box or any polygon), a ``class`` attribute naming a class of the vocabulary or a new one, and
an optional ``positive`` attribute (false: "not this", a negative example). Geometries are in map
coordinates for a georeferenced image (reprojected to its CRS when the file has another one) and in
pixel coordinates (x = column, y = row, origin at the top-left corner) otherwise.

:func:`read_exemplars` reads and checks a file against one image and returns :class:`Exemplars` in that
image's pixel frame; the methods use them through ``segmenter.with_exemplars(exemplars, rgb)``
(:mod:`.exemplars_clip`, :mod:`.exemplars_sam3`). A class named only by exemplars is *example-only*:
it is added to the vocabulary, and its name is never used as a text prompt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..identity import path_identity
from ..settings import option
from ..vocab import Vocabulary


@dataclass(frozen=True)
class ExemplarSettings:
    """Exemplars for a run: the file, where to save SegEarth-OV's prototypes, SegEarth-OV3's token reuse."""

    exemplars: str | None = option(
        None,
        "vector file of example boxes/polygons ('class', optional 'positive'), or a prototype .npz saved earlier",
        metavar="FILE",
    )
    save_prototypes: str | None = option(
        None,
        "SegEarth-OV: save the exemplars' visual prototypes to this .npz (reusable on other scenes)",
        metavar="FILE",
    )
    reuse_tokens: bool = option(
        False,
        "SegEarth-OV3: also prompt views without exemplars with the box tokens encoded on the exemplars' view "
        "(frugalvl's extension, off by default)",
        flag="--exemplar-tokens-everywhere",
    )


def check_exemplar_run(kind: str, settings: ExemplarSettings, n_inputs: int) -> None:
    """Refuse, before any model loads, what a method cannot do with exemplars (``kind``: the registry's
    ``Method.exemplars``: ``prototypes``, ``boxes`` or empty)."""
    if settings.exemplars is None:
        if settings.save_prototypes is not None or settings.reuse_tokens:
            raise UserError("save_prototypes=FILE and reuse_tokens=True need exemplars=FILE: give the exemplars")
        return
    path = Path(settings.exemplars)
    if not path.is_file():
        raise UserError(f"exemplar file {path} does not exist: give a GeoPackage, GeoJSON or other vector file")
    if not kind:
        raise UserError("this segmentation method takes no exemplars")
    if path.suffix.lower() == ".npz" and kind != "prototypes":
        raise UserError(f"{path} is a prototype file, which only SegEarth-OV uses: give the exemplar vector file")
    if settings.save_prototypes is not None and kind != "prototypes":
        raise UserError("save_prototypes=FILE applies to SegEarth-OV only: leave it out for this method")
    if settings.reuse_tokens and kind != "boxes":
        raise UserError("reuse_tokens=True applies to SegEarth-OV3 only: leave it out for this method")


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class Exemplar:
    """One example: a polygon in the image's pixel frame (x = column, y = row), its class, its sign."""

    name: str
    positive: bool
    polygon: Any  # shapely Polygon / MultiPolygon, pixel coordinates

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in pixels: the polygon's bounds."""
        x0, y0, x1, y1 = self.polygon.bounds
        return (float(x0), float(y0), float(x1), float(y1))

    def mask(self, height: int, width: int) -> np.ndarray:
        """``[H, W]`` bool: the pixels whose centre lies inside the polygon (all touched ones when the
        polygon is smaller than a pixel)."""
        from rasterio.features import rasterize

        shape = (height, width)
        mask = rasterize([(self.polygon, 1)], out_shape=shape, fill=0, dtype="uint8").astype(bool)
        if not mask.any():
            mask = rasterize([(self.polygon, 1)], out_shape=shape, fill=0, dtype="uint8", all_touched=True)
            mask = mask.astype(bool)
        return mask


@dataclass(frozen=True)
class Exemplars:
    """The exemplars of one image, in its pixel frame; ``source`` records where they came from."""

    items: tuple[Exemplar, ...]
    height: int
    width: int
    source: dict

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> list[str]:
        """The classes the exemplars name, in order of first appearance."""
        return list(dict.fromkeys(e.name for e in self.items))

    def extend(self, vocabulary: Vocabulary) -> tuple[Vocabulary, tuple[int, ...]]:
        """The vocabulary with the exemplars' new classes appended, and the indices of those classes
        (example-only: their names are never text prompts). Names match the vocabulary's class names
        trimmed and case-insensitively."""
        known = {n.lower(): i for i, n in enumerate(vocabulary.names)}
        new = [n for n in self.names if n.lower() not in known]
        for name in new:
            if not any(e.positive for e in self.items if e.name == name):
                raise UserError(
                    f"class {name!r} of the exemplars is not in the vocabulary and has only negative examples: "
                    "add it to the classes or give at least one positive example"
                )
        if not new:
            return vocabulary, ()
        start = len(vocabulary)
        extended = Vocabulary((*vocabulary.classes, *((n,) for n in new)))
        return extended, tuple(range(start, start + len(new)))

    def class_index(self, vocabulary: Vocabulary, name: str) -> int:
        return {n.lower(): i for i, n in enumerate(vocabulary.names)}[name.lower()]

    def inside(self, y0: int, y1: int, x0: int, x1: int) -> Exemplars:
        """The exemplars whose box overlaps the window rows y0:y1, columns x0:x1, in the window's frame."""
        from shapely.affinity import translate

        kept = tuple(
            Exemplar(e.name, e.positive, translate(e.polygon, -x0, -y0))
            for e in self.items
            if e.box[0] < x1 and e.box[2] > x0 and e.box[1] < y1 and e.box[3] > y0
        )
        return Exemplars(kept, y1 - y0, x1 - x0, self.source)

    def identity(self) -> dict:
        """What the exemplars are (the run record): the file and its examples in pixels."""
        return {
            **self.source,
            "examples": [[e.name, e.positive, [round(v, 3) for v in e.box], e.polygon.wkt] for e in self.items],
        }


def _positive(value: Any, row: int, path: str) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UserError(f"exemplar {row} of {path} has positive = {value!r}: write true or false (or leave it empty)")


def _read_frame(path: Path):
    import pyogrio

    if not path.is_file():
        raise UserError(f"exemplar file {path} does not exist: give a GeoPackage, GeoJSON or other vector file")
    try:
        return pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises several DataSource errors
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise UserError(
            f"cannot read exemplar file {path} ({reason}): give a GeoPackage, GeoJSON or other vector file"
        ) from None


@dataclass(frozen=True)
class ExemplarFile:
    """The features of an exemplar file, checked (class, sign, a polygon with area), not yet on an image."""

    path: Path
    frame: Any  # geopandas GeoDataFrame
    names: tuple[str, ...]
    positive: tuple[bool, ...]

    @property
    def source(self) -> dict:
        return {"file": str(self.path), "fingerprint": path_identity(self.path)}

    def on_image(
        self, height: int, width: int, crs: Any = None, transform: Any = None, image: str = "the image"
    ) -> tuple[Exemplars, list[int]]:
        """The exemplars in the pixel frame of an image of ``height × width`` pixels (georeferenced when
        ``crs`` and ``transform`` are given), and the rows of those lying outside it."""
        from shapely.affinity import affine_transform

        frame, path = self.frame, self.path
        matrix = None
        if crs is not None:
            if frame.crs is None:
                raise UserError(
                    f"exemplar file {path} has no CRS but {image} is georeferenced: save the exemplars with "
                    "their CRS (map coordinates), or use pixel coordinates with an image that is not georeferenced"
                )
            with np.errstate(all="ignore"):
                frame = frame.to_crs(crs)
            inverse = ~transform
            matrix = [inverse.a, inverse.b, inverse.d, inverse.e, inverse.c, inverse.f]
        elif frame.crs is not None and not self._geojson_default_crs():
            raise UserError(
                f"exemplar file {path} has a CRS ({frame.crs.to_string()}) but {image} is not georeferenced: "
                "give pixel coordinates without a CRS, or a georeferenced image"
            )
        items, outside = [], []
        for row, (geometry, name, positive) in enumerate(zip(frame.geometry, self.names, self.positive)):
            with np.errstate(all="ignore"):
                pixels = affine_transform(geometry, matrix) if matrix is not None else geometry
            x0, y0, x1, y1 = pixels.bounds if not pixels.is_empty else (np.nan,) * 4
            if (
                not np.isfinite([x0, y0, x1, y1]).all()
                or x1 <= 0
                or y1 <= 0
                or x0 >= width
                or y0 >= height
                or pixels.area <= 0
            ):
                outside.append(row)
            else:
                items.append(Exemplar(name, positive, pixels))
        return Exemplars(tuple(items), height, width, self.source), outside

    def _geojson_default_crs(self) -> bool:
        """GeoJSON cannot say "no CRS": GDAL reports WGS 84 for every file without one, so on an image
        that is not georeferenced a GeoJSON in WGS 84 is read as pixel coordinates."""
        return self.path.suffix.lower() in (".geojson", ".json") and self.frame.crs.to_epsg() == 4326

    def outside_error(self, row: int, where: str) -> UserError:
        return UserError(
            f"exemplar {row} of {self.path} (class {self.names[row]!r}) lies outside {where}: "
            "check its coordinates and CRS"
        )


def load_exemplar_file(path: str | os.PathLike) -> ExemplarFile:
    """Read and check an exemplar file; every mistake is one :class:`UserError` line."""
    path = Path(path)
    frame = _read_frame(path)
    if "class" not in frame.columns:
        raise UserError(
            f"exemplar file {path} has no 'class' attribute: give every feature the class it is an example of"
        )
    if len(frame) == 0:
        raise UserError(f"exemplar file {path} holds no features: draw at least one box or polygon")
    names, signs = [], []
    column = frame["positive"] if "positive" in frame else [None] * len(frame)
    for row, (geometry, name, positive) in enumerate(zip(frame.geometry, frame["class"], column)):
        label = f"exemplar {row} of {path}"
        if name is None or (isinstance(name, float) and np.isnan(name)) or not str(name).strip():
            raise UserError(f"{label} has no class: fill in its 'class' attribute")
        if geometry is None or geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon"):
            kind = "an empty geometry" if geometry is None or geometry.is_empty else f"a {geometry.geom_type}"
            raise UserError(f"{label} is {kind}: draw a box or polygon around the example")
        if geometry.area <= 0:
            raise UserError(f"{label} is an empty polygon (no area): draw a box or polygon around the example")
        names.append(" ".join(str(name).split()))
        signs.append(_positive(positive, row, str(path)))
    return ExemplarFile(path, frame, tuple(names), tuple(signs))


def read_exemplars(
    path: str | os.PathLike, height: int, width: int, crs: Any = None, transform: Any = None, image: str = "the image"
) -> Exemplars:
    """The exemplars of ``path`` in the pixel frame of one image; an exemplar outside it is an error."""
    file = load_exemplar_file(path)
    exemplars, outside = file.on_image(height, width, crs, transform, image)
    if outside:
        raise file.outside_error(outside[0], f"{image} ({width}×{height} pixels)")
    return exemplars


def exemplars_for_image(path: str | os.PathLike, image: Any) -> Exemplars:
    """:func:`read_exemplars` for a :class:`~frugalvl.raster.RasterImage` (its size, CRS and transform)."""
    h, w = image.rgb.shape[:2]
    return read_exemplars(path, h, w, image.crs, image.transform, image=str(getattr(image, "path", "the image")))


def positives(exemplars: Exemplars, names: Sequence[str] | None = None) -> list[Exemplar]:
    """The positive exemplars (of ``names`` when given)."""
    return [e for e in exemplars.items if e.positive and (names is None or e.name in names)]
