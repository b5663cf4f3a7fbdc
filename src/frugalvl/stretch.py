"""Radiometry: which pixels hold data, and the stretch of any dtype to 8 bits (docs/scenes.md).

The whole-image reader (:mod:`frugalvl.raster`) and the scene reader (:mod:`frugalvl.segment.scene_read`)
share these, so a pixel is valid, and stretched, alike with and without tiles.
"""

from __future__ import annotations

import numpy as np

from .errors import UserError

__all__ = ["apply_stretch", "stretch_limits", "valid_pixels"]


def valid_pixels(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``H×W``: some band has data (GDAL's masks) and, in float rasters, every band is finite (NaN is nodata)."""
    valid = masks.max(0) > 0
    return valid & np.isfinite(data).all(0) if data.dtype.kind in "fc" else valid


def stretch_limits(bands: np.ndarray, valid: np.ndarray, stretch: str) -> list[tuple[float, float]] | None:
    """Per-band ``(lo, hi)`` of a ``[B, H, W]`` array over its valid pixels; ``None`` for 8-bit data (kept as is).

    The scene path computes them once per scene from a decimated read (:mod:`.segment.scene`), so every
    tile is stretched alike; for an image no larger than that read they equal the whole-image ones.
    """
    if bands.dtype == np.uint8:
        return None
    limits = []
    for b in range(bands.shape[0]):
        band = bands[b].astype(np.float64)
        values = band[valid] if valid.any() else band.ravel()
        values = values[np.isfinite(values)]  # a NaN never poisons the stretch
        if stretch == "percentile":
            lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        elif stretch == "minmax":
            lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
        else:
            raise UserError(f"unknown stretch {stretch!r}: choose percentile or minmax")
        limits.append((float(lo), float(hi)))
    return limits


def apply_stretch(bands: np.ndarray, limits: list[tuple[float, float]] | None) -> np.ndarray:
    """Scale ``[B, H, W]`` to uint8 with per-band ``(lo, hi)`` from :func:`stretch_limits`."""
    if limits is None:
        return bands.astype(np.uint8, copy=False)
    out = np.zeros(bands.shape, dtype=np.uint8)
    for b, (lo, hi) in enumerate(limits):
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        band = np.nan_to_num(bands[b].astype(np.float64), nan=lo, posinf=hi, neginf=lo)  # nodata pixels: 0
        out[b] = np.clip(np.rint((band - lo) * scale), 0, 255).astype(np.uint8)
    return out
