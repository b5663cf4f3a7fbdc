"""What changed into what (the ``semantic`` output setting): per-date label maps, a from→to raster, polygons and a table.

These extras sit beside the official binary map and never alter it. For every pixel the binary map calls
changed, the from→to raster holds ``1 + from·C + to``, where ``from`` and ``to`` are the two dates' labels
(the same label maps as the object verdict: class argmax, ``prob_thd`` and ``bg_idx`` applied) and C the
number of classes; unchanged pixels hold 0 and pixels without data 255. The two labels may be equal: the
binary map marks a whole blob that the other date covers too little, and such a blob can hold pixels of the
same class on both dates. The table counts pixels per (from, to) and converts them to hectares when the
grid is in metres; the polygons are the from→to raster's 4-connected regions (:func:`frugalvl.vectors.polygonize`,
merged across bands of rows), each with its classes and area.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, write_text
from ..vectors import fixed_gpkg_date

NODATA = 255
MAX_CLASSES = 15  # 1 + C² values must stay below the nodata value of a uint8 raster


def check_classes(n_classes: int) -> None:
    if n_classes > MAX_CLASSES:
        raise UserError(
            f"the from-to outputs hold at most {MAX_CLASSES} classes (1 + C² codes in one byte), the vocabulary has "
            f"{n_classes}: merge classes, or leave the semantic outputs out"
        )


def transition_names(class_names: Sequence[str]) -> list[str]:
    """Name of every from→to code: ``no change``, then ``from→to`` for code ``1 + from·C + to``."""
    return ["no change"] + [f"{a}→{b}" for a in class_names for b in class_names]


def from_to(
    before: np.ndarray, after: np.ndarray, change: np.ndarray, n_classes: int, nodata: np.ndarray | None = None
) -> np.ndarray:
    """The from→to codes (uint8) of one window."""
    codes = np.where(change.astype(bool), 1 + before.astype(np.int64) * n_classes + after, 0).astype(np.uint8)
    if nodata is not None:
        codes[nodata] = NODATA
    return codes


def labels_with_nodata(labels: np.ndarray, nodata: np.ndarray | None) -> np.ndarray:
    out = labels.astype(np.uint8)
    if nodata is not None:
        out[nodata] = NODATA
    return out


def decode(code: int, n_classes: int) -> tuple[int, int]:
    return (code - 1) // n_classes, (code - 1) % n_classes


def count_codes(path: str | os.PathLike, n_classes: int) -> np.ndarray:
    """Pixels per from→to code of a from→to raster, read one block row at a time."""
    import rasterio
    from rasterio.windows import Window

    counts = np.zeros(1 + n_classes * n_classes, dtype=np.int64)
    with rasterio.open(path) as src:
        for row in range(0, src.height, 512):
            data = src.read(1, window=Window(0, row, src.width, min(512, src.height - row)))
            valid = data[data != NODATA]
            counts += np.bincount(valid.ravel(), minlength=counts.size)[: counts.size]
    return counts


def pixel_area(transform: Any, crs: Any) -> tuple[float, str]:
    """Area of one pixel and its unit: m² on a projected grid in metres, map units² otherwise, px without CRS."""
    if crs is None or transform is None:
        return 1.0, "px"
    area = abs(transform.a * transform.e - transform.b * transform.d)
    metres = crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m")
    return area, ("m²" if metres else "units²")


def write_table(path: Path, counts: np.ndarray, class_names: Sequence[str], area: float, unit: str) -> Path:
    """``<stem>_transitions.csv``: from, to, pixels, area in the grid's unit and in hectares (metres only)."""
    n = len(class_names)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["from_class", "to_class", "pixels", f"area_{'m2' if unit == 'm²' else unit.rstrip('²')}", "area_ha"]
    )
    for code in range(1, counts.size):
        if counts[code]:
            a, b = decode(code, n)
            total = float(counts[code] * area)
            writer.writerow(
                [
                    class_names[a],
                    class_names[b],
                    int(counts[code]),
                    repr(total),
                    repr(total / 1e4) if unit == "m²" else "",
                ]
            )
    write_text(path, buf.getvalue())
    return path


def write_polygons(fromto_path: Path, out: Path, class_names: Sequence[str]) -> Path:
    """Change polygons (GeoPackage): one feature per 4-connected region of one from→to code, with
    ``from_class``, ``to_class`` and ``area`` (map units², px without a CRS)."""
    import geopandas as gpd
    import pyogrio
    import rasterio
    import shapely.affinity

    from ..vectors import polygonize

    n = len(class_names)
    rows: list[dict[str, Any]] = []
    geoms = []
    with rasterio.open(fromto_path) as src:
        crs = src.crs.to_wkt() if src.crs is not None else None
        t = src.transform
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f] if src.crs is not None else None
        for code, geom in polygonize(src):
            if code == 0:
                continue
            if matrix is not None:
                geom = shapely.affinity.affine_transform(geom, matrix)
            a, b = decode(code, n)
            rows.append(
                {
                    "from_class": class_names[a],
                    "to_class": class_names[b],
                    "from_index": a,
                    "to_index": b,
                    "area": geom.area,
                }
            )
            geoms.append(geom)
    frame = gpd.GeoDataFrame(
        {k: [r[k] for r in rows] for k in ("from_class", "to_class", "from_index", "to_index", "area")},
        geometry=gpd.GeoSeries(geoms, crs=crs),
        crs=crs,
    )
    with atomic_path(out) as tmp, fixed_gpkg_date():  # a resumed run writes the same bytes
        tmp.unlink(missing_ok=True)
        pyogrio.write_dataframe(
            frame, tmp, layer=out.stem, driver="GPKG", promote_to_multi=False, geometry_type="Polygon"
        )
    return out
