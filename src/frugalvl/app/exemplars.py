"""Exemplars drawn in the app: kept per session, checked like an exemplar file, written as one.

A box or polygon drawn on the map arrives as map points (lat/lng on a georeferenced map, CRS.Simple units
``lat = -row, lng = col`` otherwise) and is kept in the image's own coordinates: map coordinates in its CRS
for a georeferenced image, pixels (x = column, y = row) otherwise, exactly what ``frugalvl segment
--exemplars`` reads (docs/methods/exemplars.md). The session keeps them per image *key* (name, size and
georeference), so reopening the same image after a page reload finds them again.

A run writes the exemplars overlapping its area to a vector file in the area's frame and hands it to the
library (:func:`frugalvl.segment.exemplars_run.attach_exemplars`): the app holds no method code.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..windows import Window
from .images import OpenedImage
from .sessions import Session, new_id

MAX_EXEMPLARS = 200  # per image key in one session
MAX_POINTS = 1000  # vertices of one drawn polygon
MAX_CLASS_CHARS = 100


@dataclass
class DrawnExemplar:
    """One drawn example: its class, its sign and its polygon in the image's own coordinates."""

    id: str
    name: str
    positive: bool
    polygon: Any  # shapely Polygon: map coordinates (image CRS) or pixels


@dataclass
class ExemplarStore:
    """A session's drawn exemplars, per image key, oldest first."""

    by_image: dict[str, list[DrawnExemplar]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def of(self, image: OpenedImage) -> list[DrawnExemplar]:
        with self.lock:
            return list(self.by_image.get(image_key(image), []))

    def add(self, image: OpenedImage, exemplar: DrawnExemplar) -> None:
        with self.lock:
            items = self.by_image.setdefault(image_key(image), [])
            if len(items) >= MAX_EXEMPLARS:
                raise UserError(
                    f"{image.name} has {len(items)} exemplars already, the most one image keeps here: delete some"
                )
            items.append(exemplar)

    def delete(self, image: OpenedImage, exemplar_id: str) -> bool:
        with self.lock:
            items = self.by_image.get(image_key(image), [])
            kept = [e for e in items if e.id != exemplar_id]
            self.by_image[image_key(image)] = kept
            return len(kept) != len(items)


def store_of(session: Session) -> ExemplarStore:
    """The session's exemplar store (made on first use; it lives and expires with the session)."""
    with session.lock:
        store = session.extras.get("exemplars")
        if store is None:
            store = session.extras["exemplars"] = ExemplarStore()
        return store


def image_key(image: OpenedImage) -> str:
    """What identifies an image across re-openings: its name, size and georeference."""
    img = image.image
    geo = [img.crs.to_string(), list(img.transform)[:6]] if img.georeferenced else None
    return json.dumps([image.name, image.width, image.height, geo])


# ---------------------------------------------------------------------------------------------
# From the map to the image's coordinates, checked
# ---------------------------------------------------------------------------------------------


def drawn_polygon(image: OpenedImage, kind: str, points: Sequence[Sequence[float]]) -> Any:
    """The polygon of a drawn box (two opposite corners) or polygon (its vertices), as map points
    ``[lat, lng]``, in the image's own coordinates; one line for a shape that is not one."""
    from shapely.geometry import Polygon

    if kind == "box":
        if len(points) != 2:
            raise UserError("a box is two opposite corners [[lat, lng], [lat, lng]]: draw it again")
        (lat0, lng0), (lat1, lng1) = points
        points = [[lat0, lng0], [lat0, lng1], [lat1, lng1], [lat1, lng0]]
    elif kind != "polygon":
        raise UserError(f"kind {kind[:20]!r}: choose box or polygon")
    if len(points) < 3:
        raise UserError("a polygon needs three corners at least: draw around the example")
    xs, ys = _to_image(image, [p[1] for p in points], [p[0] for p in points])
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        raise UserError("the drawn shape has no place in the image's CRS: draw it on the image")
    polygon = Polygon(list(zip(xs, ys)))
    if not polygon.is_valid:
        polygon = polygon.buffer(0)  # a polygon drawn across itself: its area
    if polygon.is_empty or polygon.area <= 0 or polygon.geom_type not in ("Polygon", "MultiPolygon"):
        raise UserError("the drawn shape is an empty polygon (no area): draw a box or polygon around the example")
    outside = _outside(image, polygon)
    if outside:
        raise UserError(
            f"the drawn shape lies outside {image.name} ({image.width}×{image.height} pixels): draw it on the image"
        )
    return polygon


def _to_image(image: OpenedImage, lngs: list[float], lats: list[float]) -> tuple[list[float], list[float]]:
    """Map points to the image's own coordinates (its CRS, or pixels for CRS.Simple)."""
    if not image.image.georeferenced:
        return list(lngs), [-v for v in lats]
    if any(not -90 <= v <= 90 for v in lats):
        raise UserError("the drawn shape is not on the map (latitude beyond ±90°): draw it on the image")
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", image.image.crs, list(lngs), list(lats))
    return list(xs), list(ys)


def _outside(image: OpenedImage, polygon: Any) -> bool:
    """The library's own rule (:meth:`~frugalvl.segment.exemplars.ExemplarFile.on_image`)."""
    import geopandas as gpd

    from ..segment.exemplars import ExemplarFile

    img = image.image
    frame = gpd.GeoDataFrame({"class": ["x"]}, geometry=[polygon], crs=img.crs if img.georeferenced else None)
    file = ExemplarFile(Path("drawn"), frame, ("x",), (True,))
    crs, transform = (img.crs, img.transform) if img.georeferenced else (None, None)
    return bool(file.on_image(image.height, image.width, crs, transform)[1])


def to_map(image: OpenedImage, polygon: Any) -> list[list[list[float]]]:
    """The polygon's rings as map points ``[lat, lng]`` (for drawing it on the page)."""
    polygons = list(polygon.geoms) if polygon.geom_type == "MultiPolygon" else [polygon]
    rings = [list(p.exterior.coords) for p in polygons]
    out = []
    for ring in rings:
        xs, ys = [c[0] for c in ring], [c[1] for c in ring]
        if image.image.georeferenced:
            from rasterio.warp import transform

            lngs, lats = transform(image.image.crs, "EPSG:4326", xs, ys)
        else:
            lngs, lats = xs, [-y for y in ys]
        out.append([[round(a, 9), round(b, 9)] for a, b in zip(lats, lngs)])
    return out


def new_exemplar(image: OpenedImage, name: str, positive: bool, kind: str, points: Sequence[Sequence[float]]):
    """A checked :class:`DrawnExemplar` (class trimmed, whitespace collapsed as the exemplar reader does)."""
    clean = " ".join(name.split())
    if not clean:
        raise UserError("the exemplar has no class: pick or type the class it is an example of")
    return DrawnExemplar(new_id(6), clean, bool(positive), drawn_polygon(image, kind, points))


# ---------------------------------------------------------------------------------------------
# As a vector file (the download, and a run's input)
# ---------------------------------------------------------------------------------------------


def frame_of(image: OpenedImage, exemplars: Sequence[DrawnExemplar], window: Window | None = None):
    """A GeoDataFrame with ``class`` and ``positive``, in the image's CRS, or in pixels of ``window``
    (the area a run covers; the whole image by default) for an image without georeference."""
    import geopandas as gpd
    from shapely.affinity import translate

    img = image.image
    geometries = [e.polygon for e in exemplars]
    if not img.georeferenced and window is not None:
        geometries = [translate(g, -window.x0, -window.y0) for g in geometries]
    return gpd.GeoDataFrame(
        {"class": [e.name for e in exemplars], "positive": [e.positive for e in exemplars]},
        geometry=geometries,
        crs=img.crs if img.georeferenced else None,
    )


def geojson_bytes(image: OpenedImage, exemplars: Sequence[DrawnExemplar], folder: Path) -> bytes:
    """The exemplars as a GeoJSON file that ``frugalvl segment --exemplars`` reads: in the image's CRS
    (a CRS without an EPSG code is written as WGS 84, which the reader reprojects), pixels otherwise."""
    frame = frame_of(image, exemplars)
    if frame.crs is not None and frame.crs.to_epsg() is None:
        frame = frame.to_crs("EPSG:4326")
    path = folder / f"exemplars-{new_id(6)}.geojson"
    try:
        frame.to_file(path, driver="GeoJSON")
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def window_box(image: OpenedImage, window: Window) -> Any:
    """The run's area in the image's own coordinates."""
    from shapely.geometry import Polygon

    corners = [(window.x0, window.y0), (window.x1, window.y0), (window.x1, window.y1), (window.x0, window.y1)]
    if image.image.georeferenced:
        corners = [image.image.transform * c for c in corners]
    return Polygon(corners)


def exemplars_for_run(
    session: Session, image: OpenedImage, window: Window, vocabulary: Any
) -> tuple[list[DrawnExemplar], list[str]]:
    """The session's exemplars of ``image`` overlapping a run's area, and notes. A class the run cannot
    take (negative examples only, not in the vocabulary) is refused now, by the library's own check."""
    from ..segment.exemplars import Exemplar, Exemplars

    drawn = store_of(session).of(image)
    area = window_box(image, window)
    kept = [e for e in drawn if e.polygon.intersection(area).area > 0]
    notes = []
    if len(kept) < len(drawn):
        notes.append(f"{len(drawn) - len(kept)} exemplar(s) outside the segmented area were left out")
    if kept:
        Exemplars(tuple(Exemplar(e.name, e.positive, e.polygon) for e in kept), 0, 0, {}).extend(vocabulary)
    return kept, notes


def write_run_exemplars(image: OpenedImage, exemplars: Sequence[DrawnExemplar], window: Window, folder: Path) -> Path:
    """``exemplars`` as ``<folder>/exemplars.gpkg`` in the frame of the run's area (the file a run hands to
    the library, as ``frugalvl segment --exemplars`` would)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exemplars.gpkg"
    frame_of(image, exemplars, window).to_file(path, driver="GPKG")
    return path
