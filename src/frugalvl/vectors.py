"""Class polygons from a label raster, in bounded bands of rows (docs/scenes.md).

Per band of rows, each class's 4-connected components are polygonised with
:func:`rasterio.features.shapes` (the raster's nodata value left out: 255, 65535 for uint16 maps), in pixel coordinates so that shared edges are
exact integers. Components that continue across a band border are linked with a union-find and a region's
pieces are unioned once (:func:`shapely.union_all`) when the region ends, so a region crossing tile or
band borders is one feature, never cut by a seam. Finished polygons are then moved to map coordinates,
filtered by ``min_area`` (map units², pixels without a CRS), simplified (shapely's topology-preserving
simplification, per polygon) and appended to a GeoPackage; GeoJSON and GeoParquet are converted from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .fileio import atomic_path
from .raster import nodata_label
from .settings import FieldError

log = logging.getLogger(__name__)

NODATA_LABEL = 255  # the label of nodata pixels when the raster does not declare one
BAND_ROWS = 512  # rows polygonised at once (one COG block row)
WRITE_BATCH = 20000  # features per append
FIXED_DATE = "2000-01-01T00:00:00.000Z"  # the GeoPackage's last_change timestamps, so reruns write equal bytes


def _band_components(labels: np.ndarray, first_id: int, nodata: int = NODATA_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """4-connected components of each class in a band: ``ids`` (0 = nodata, else ``>= first_id``) and
    ``classes`` (class of id ``first_id + i``)."""
    import cv2

    ids = np.zeros(labels.shape, dtype=np.int32)
    classes: list[np.ndarray] = []
    next_id = first_id
    for cls in np.unique(labels):
        if cls == nodata:
            continue
        n, comp = cv2.connectedComponents((labels == cls).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        inside = comp > 0
        ids[inside] = comp[inside] + (next_id - 1)
        classes.append(np.full(n - 1, int(cls), dtype=np.int64))
        next_id += n - 1
    return ids, (np.concatenate(classes) if classes else np.zeros(0, np.int64))


def _find(parent: dict[int, int], a: int) -> int:
    root = a
    while parent.get(root, root) != root:
        root = parent[root]
    while parent.get(a, a) != root:  # path compression
        parent[a], a = root, parent[a]
    return root


def _emit(pieces: list) -> list:
    """One region's pieces (from several bands) as polygons: a single union, done once per region."""
    import shapely

    if len(pieces) == 1:
        return pieces
    return list(shapely.get_parts(shapely.union_all(pieces)))


def polygonize(src, band_rows: int | None = None, nodata: int | None = None) -> Iterable[tuple[int, Any]]:
    """``(class index, polygon in pixel coordinates)`` of a label raster, merged across bands.

    Each band's connected components (per class, 4-connectivity) are polygonised; components that
    continue across a band border (same class on both sides of it) are linked with a union-find and
    their pieces unioned once, when the region ends, so large regions cost no repeated unions.
    """
    import shapely.geometry
    from affine import Affine
    from rasterio.features import shapes
    from rasterio.windows import Window

    band_rows = band_rows or BAND_ROWS
    if nodata is None:
        nodata = int(src.nodata) if src.nodata is not None else NODATA_LABEL
    height, width = src.height, src.width
    parent: dict[int, int] = {}
    groups: dict[int, tuple[int, list]] = {}  # root id -> (class, pieces) of regions still open
    prev_labels = prev_ids = None
    next_id = 1
    for row0 in range(0, height, band_rows):
        row1 = min(row0 + band_rows, height)
        labels = src.read(1, window=Window(0, row0, width, row1 - row0))
        ids, classes = _band_components(labels, next_id, nodata)
        first, next_id = next_id, next_id + len(classes)
        mask = ids > 0
        if mask.any():
            for geom, value in shapes(ids, mask=mask, connectivity=4, transform=Affine.translation(0, row0)):
                i = int(value)
                groups[i] = (int(classes[i - first]), [shapely.geometry.shape(geom)])
        if prev_ids is not None:  # link regions that continue across the border
            same = (prev_labels == labels[0]) & (labels[0] != nodata)
            for a, b in set(zip(prev_ids[same].tolist(), ids[0][same].tolist())):
                ra, rb = _find(parent, a), _find(parent, b)
                if ra != rb:
                    parent[rb] = ra
                    groups[ra][1].extend(groups.pop(rb)[1])
        still_open = {_find(parent, int(i)) for i in np.unique(ids[-1]) if i} if row1 < height else set()
        for root in [r for r in groups if r not in still_open]:
            cls, pieces = groups.pop(root)
            for geom in _emit(pieces):
                yield cls, geom
        prev_labels, prev_ids = labels[-1].copy(), ids[-1].copy()
        parent = {k: v for k, v in parent.items() if _find(parent, k) in still_open} if parent else parent


def write_vectors(
    label_path: str | os.PathLike,
    out: str | os.PathLike,
    class_names: Sequence[str],
    min_area: float = 0.0,
    simplify: float = 0.0,
    layer: str | None = None,
) -> Path:
    """Polygonise a label raster into ``out`` (.gpkg, .geojson or .parquet), one layer, input CRS.

    Attributes: ``class`` (name), ``class_index`` and ``area`` (map units², after ``min_area``, before
    simplification).
    """
    import rasterio
    import shapely
    import shapely.affinity

    if min_area < 0:
        raise FieldError("min_area", f"{{min_area}} {min_area} must be zero or positive")
    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in (".gpkg", ".geojson", ".parquet"):
        raise UserError(f"vector output {out.name}: use .gpkg, .geojson or .parquet")
    layer = layer or out.stem
    with rasterio.open(label_path) as src:
        t = src.transform if src.crs is not None else None
        crs = src.crs.to_wkt() if src.crs is not None else None
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f] if t is not None else None
        target = out if fmt == ".gpkg" else out.parent / f".{out.stem}.vectors.gpkg"
        with atomic_path(target) as gpkg:
            gpkg.unlink()
            batch: list[tuple[int, Any]] = []
            written = 0
            nodata = int(src.nodata) if src.nodata is not None else nodata_label(len(class_names))
            for cls, geom in polygonize(src, nodata=nodata):
                if matrix is not None:
                    geom = shapely.affinity.affine_transform(geom, matrix)
                if min_area and geom.area < min_area:
                    continue
                batch.append((cls, geom))
                if len(batch) >= WRITE_BATCH:
                    written += _append(gpkg, layer, batch, class_names, crs, simplify, written > 0)
                    batch = []
            _append(gpkg, layer, batch, class_names, crs, simplify, written > 0, force=written == 0)
    if fmt != ".gpkg":
        try:
            _convert(target, out, layer)
        finally:
            target.unlink(missing_ok=True)
    return out


def _frame(batch: list[tuple[int, Any]], class_names: Sequence[str], crs: str | None, simplify: float):
    import geopandas as gpd

    geoms = [g for _, g in batch]
    areas = [g.area for g in geoms]
    if simplify:
        geoms = [g.simplify(simplify, preserve_topology=True) for g in geoms]
    return gpd.GeoDataFrame(
        {
            "class": [class_names[c] if c < len(class_names) else str(c) for c, _ in batch],
            "class_index": np.array([c for c, _ in batch], dtype=np.int32),
            "area": np.array(areas, dtype=np.float64),
        },
        geometry=gpd.GeoSeries(geoms, crs=crs),
        crs=crs,
    )


def _append(path: Path, layer: str, batch, class_names, crs, simplify, append: bool, force: bool = False) -> int:
    import pyogrio

    if not batch and not force:
        return 0
    with fixed_gpkg_date():  # same bytes on every run (a resumed one too)
        pyogrio.write_dataframe(
            _frame(batch, class_names, crs, simplify),
            path,
            layer=layer,
            driver="GPKG",
            append=append,
            promote_to_multi=False,
            geometry_type="Polygon",
        )
    return len(batch)


@contextlib.contextmanager
def fixed_gpkg_date() -> Iterator[None]:
    """GeoPackages written in the block carry :data:`FIXED_DATE` as their last change: equal bytes on reruns."""
    import pyogrio

    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def _convert(gpkg: Path, out: Path, layer: str) -> None:
    """GeoPackage -> GeoJSON or GeoParquet (holds the vector layer in memory, not the raster)."""
    import pyogrio

    frame = pyogrio.read_dataframe(gpkg, layer=layer)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            frame.to_parquet(tmp)
        else:
            tmp.unlink()
            pyogrio.write_dataframe(frame, tmp, driver="GeoJSON", layer=layer)
