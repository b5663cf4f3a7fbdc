"""Ground areas of label pixels, in m² for every CRS (docs/reliability.md#labels-are-never-silently-wrong).

A projected CRS's pixel area is converted from its unit to metres; a geographic CRS's pixel (degrees) is
measured on the CRS's ellipsoid, one row at a time (its area depends on the latitude only).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def row_areas(transform: Any, crs: Any, row0: int, n_rows: int) -> tuple[np.ndarray, str]:
    """Ground area of one pixel in each of rows ``row0 .. row0 + n_rows`` and its unit.

    m² for every CRS with a known unit: a projected CRS's pixel area times its unit's size in metres,
    a geographic CRS's (degrees) pixel measured on its ellipsoid (geodesic area, so it shrinks towards
    the poles); ``px`` (1 per pixel) without a CRS, ``units²`` when the unit is unknown.
    """
    if crs is None or transform is None:
        return np.ones(n_rows), "px"
    t = transform
    det = abs(t.a * t.e - t.b * t.d)
    if crs.is_projected:
        try:
            _, factor = crs.linear_units_factor
        except Exception:  # noqa: BLE001 - a CRS without linear units
            return np.full(n_rows, det), "units²"
        return np.full(n_rows, det * factor * factor), "m²"
    try:
        from pyproj import CRS as ProjCRS

        geod = ProjCRS.from_user_input(crs.to_wkt()).get_geod()
    except Exception:  # noqa: BLE001 - no ellipsoid known
        geod = None
    if geod is None:
        return np.full(n_rows, det), "units²"
    rows = np.arange(row0, row0 + n_rows, dtype=np.float64)
    corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]  # one pixel of each row (column 0)
    lons = np.stack([t.a * c + t.b * (rows + r) + t.c for c, r in corners], axis=1)
    lats = np.stack([t.d * c + t.e * (rows + r) + t.f for c, r in corners], axis=1)
    lats = np.clip(lats, -90.0, 90.0)
    areas = np.array([abs(geod.polygon_area_perimeter(lo, la)[0]) for lo, la in zip(lons, lats)])
    return areas, "m²"


def class_areas(labels: np.ndarray, valid: np.ndarray | None, n_classes: int, per_row: np.ndarray) -> dict[int, float]:
    """Area of each class in a block of label rows whose pixel areas are ``per_row`` (:func:`row_areas`);
    labels outside the vocabulary (nodata) and pixels not ``valid`` are left out."""
    weights = np.broadcast_to(per_row[:, None], labels.shape)
    keep = (labels < n_classes) if valid is None else valid & (labels < n_classes)
    sums = np.bincount(labels[keep].ravel().astype(np.int64), weights=weights[keep].ravel(), minlength=n_classes)
    return {i: float(a) for i, a in enumerate(sums[:n_classes]) if a}
