"""The projection equals a plain, point-by-point statement of the official formula."""

from __future__ import annotations

import math

import numpy as np

from frugalvl.pointcloud.cameras import Camera, Photogroup, read_block, select_cameras
from frugalvl.pointcloud.projection import image_coordinates, project


def official(point, cam: Camera, min_depth=0.1):
    """p = R (X - C); front test; pinhole; Brown distortion; round half to even; bounds."""
    R, C, g = cam.rotation, cam.centre, cam.group
    d = [point[i] - C[i] for i in range(3)]
    p = [sum(R[r][k] * d[k] for k in range(3)) for r in range(3)]
    if not p[2] > min_depth:
        return None
    x, y = p[0] / p[2], p[1] / p[2]
    r2 = x * x + y * y
    radial = 1 + g.k1 * r2 + g.k2 * r2 * r2 + g.k3 * r2 * r2 * r2
    xd = x * radial + 2 * g.p1 * x * y + g.p2 * (r2 + 2 * x * x)
    yd = y * radial + g.p1 * (r2 + 2 * y * y) + 2 * g.p2 * x * y
    u, v = g.focal * xd + g.ppx, g.focal * yd + g.ppy
    return u, v, p[2]


def random_camera(rng) -> Camera:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    group = Photogroup(
        width=640, height=480, focal=500.0, ppx=321.7, ppy=238.2, k1=-0.1, k2=0.02, k3=-0.003, p1=1e-3, p2=-5e-4
    )
    return Camera("a.jpg", group, q * np.sign(np.linalg.det(q)), rng.normal(0, 5, 3))


def test_projection_matches_the_official_formula_to_1e9():
    rng = np.random.default_rng(0)
    for _ in range(3):
        cam = random_camera(rng)
        pts = cam.centre + rng.normal(0, 1, (400, 3)) + cam.rotation[2] * rng.uniform(-2, 12, (400, 1))
        pts[:5] = cam.centre + cam.rotation[2] * 0.1  # exactly at the depth cut: not in front
        u, v, depth = image_coordinates(pts, cam)
        proj = project(pts, cam)
        expected = {}
        for i, point in enumerate(pts):
            ref = official(point, cam)
            if ref is None:
                assert not depth[i] > 0.1 + 1e-12 or i < 5
                continue
            for got, want in zip((u[i], v[i], depth[i]), ref):  # 1e-9 absolute, relative far outside the photo
                assert math.isclose(got, want, rel_tol=1e-14, abs_tol=1e-9)
            col, row = round(ref[0]), round(ref[1])  # Python's round: halves to even, as numpy's
            if 0 <= col < cam.group.width and 0 <= row < cam.group.height:
                expected[i] = (row, col)
        assert list(proj.index) == sorted(expected)
        assert [(int(r), int(c)) for r, c in zip(proj.row, proj.col)] == [expected[i] for i in sorted(expected)]
        assert len(expected) > 50


def test_halves_round_to_even_and_the_far_edge_is_outside():
    group = Photogroup(width=4, height=3, focal=1.0, ppx=0.0, ppy=0.0)
    cam = Camera("a.png", group, np.eye(3), np.zeros(3))
    pts = np.array([[0.5, 0.5, 1.0], [1.5, 2.5, 1.0], [3.5, 0.0, 1.0], [-0.5, 0.0, 1.0], [-0.6, 0, 1.0], [1, 1, 0.1]])
    proj = project(pts, cam)
    assert list(proj.index) == [0, 1, 3]  # 3.5 -> 4 is outside; -0.5 -> -0 inside; -0.6 -> -1 outside; z=0.1 cut
    assert list(proj.col) == [0, 2, 0] and list(proj.row) == [0, 2, 0]
    assert math.isclose(proj.depth[1], 1.0)


def test_block_reader_reads_the_official_fields(synthetic):
    cams = read_block(synthetic["block"])
    truth = synthetic["cameras"]
    assert [c.name for c in cams] == [c.name for c in truth]  # Windows paths split on backslashes
    g = cams[0].group
    assert (g.width, g.height, g.focal, g.ppx, g.ppy) == (truth[0].width, truth[0].height, 160.0, 100.3, 74.6)
    assert (g.k1, g.k2, g.k3, g.p1, g.p2) == (*truth[0].k, *truth[0].p)
    np.testing.assert_array_equal(cams[1].rotation, truth[1].rotation)
    np.testing.assert_array_equal(cams[1].centre, truth[1].centre)
    assert [c.name for c in select_cameras(cams, every=2)] == ["photo_0.png", "photo_2.png"]
    assert [c.name for c in select_cameras(cams, every=1, max_images=3)] == [c.name for c in cams[:3]]
