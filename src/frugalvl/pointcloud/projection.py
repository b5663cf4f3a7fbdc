"""Points into a photo: the official pinhole + Brown projection, vectorised in float64.

For a point ``X``: ``p = R (X - C)``; the point is in front when ``p_z > min_depth``; ``x = p_x / p_z``,
``y = p_y / p_z``, ``r² = x² + y²``; radial ``1 + K1 r² + K2 r⁴ + K3 r⁶``; tangential terms with P1, P2;
``u = f x_d + ppx``, ``v = f y_d + ppy``; the pixel is ``(round(u), round(v))`` (halves to even), kept
inside the image (docs/methods/segearth_ov3_3d.md#projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import Camera


@dataclass
class Projection:
    """The points of one chunk that land in the photo."""

    index: np.ndarray  # int64 positions in the chunk
    row: np.ndarray  # int64 v
    col: np.ndarray  # int64 u
    depth: np.ndarray  # float64 p_z


def distort(x: np.ndarray, y: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Brown's model with three radial and two tangential terms, in the official order of operations."""
    g = camera.group
    r2 = x * x + y * y
    radial = 1 + g.k1 * r2 + g.k2 * r2**2 + g.k3 * r2**3
    xd = x * radial + 2 * g.p1 * x * y + g.p2 * (r2 + 2 * x * x)
    yd = y * radial + g.p1 * (r2 + 2 * y * y) + 2 * g.p2 * x * y
    return xd, yd


def camera_coordinates(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p = R (X - C)`` of ``N×3`` points, as three float64 columns (row by row: no thin matrix product)."""
    pts = np.asarray(points, dtype=np.float64)
    d = [pts[:, k] - camera.centre[k] for k in range(3)]
    R = camera.rotation
    return tuple(R[r, 0] * d[0] + R[r, 1] * d[1] + R[r, 2] * d[2] for r in range(3))  # type: ignore[return-value]


def to_pixels(px: np.ndarray, py: np.ndarray, pz: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Continuous ``(u, v)`` of camera-space points in front of the camera."""
    xd, yd = distort(px / pz, py / pz, camera)
    g = camera.group
    return g.focal * xd + g.ppx, g.focal * yd + g.ppy


def image_coordinates(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuous ``(u, v, depth)`` of ``N×3`` points (u, v meaningless where depth ≤ 0)."""
    px, py, pz = camera_coordinates(points, camera)
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = to_pixels(px, py, pz, camera)
    return u, v, pz


def project(points: np.ndarray, camera: Camera, min_depth: float = 0.1) -> Projection:
    """The pixel of every point in front of the camera (depth > ``min_depth``) that falls inside the photo."""
    px, py, depth = camera_coordinates(points, camera)
    front = np.flatnonzero(depth > min_depth)
    u, v = to_pixels(px[front], py[front], depth[front], camera)
    col = np.round(u)
    row = np.round(v)
    g = camera.group
    inside = (col >= 0) & (col < g.width) & (row >= 0) & (row < g.height)
    keep = front[inside]
    return Projection(keep, row[inside].astype(np.int64), col[inside].astype(np.int64), depth[keep])
