from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("plyfile")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Four oblique cameras over three boxes on a ground plane: photos, block XML, PLY cloud with truth."""
    from frugalvl.testing.pointcloud import default_cameras, default_scene, sample_cloud, write_block, write_ply

    root: Path = tmp_path_factory.mktemp("scene")
    scene, cameras = default_scene(), default_cameras()
    block = write_block(root, cameras, scene)
    xyz, truth, surface = sample_cloud(scene)
    cloud = write_ply(root / "cloud.ply", xyz, truth)
    return {
        "root": root,
        "scene": scene,
        "cameras": cameras,
        "block": block,
        "photos": root / "photos",
        "cloud": cloud,
        "xyz": xyz,
        "truth": truth,
        "surface": surface,
    }


def read_ply(path):
    from plyfile import PlyData

    return PlyData.read(str(path))["vertex"].data


def visibility(s, grow: float = 0.3):
    """Per point: in some photo; clearly unhidden in every photo it falls in; clearly hidden in some photo."""
    from frugalvl.pointcloud.cameras import read_block
    from frugalvl.pointcloud.projection import image_coordinates
    from frugalvl.testing.pointcloud import occluded

    xyz, scene = s["xyz"], s["scene"]
    in_some = np.zeros(len(xyz), bool)
    clear = np.ones(len(xyz), bool)
    hidden = np.zeros(len(xyz), bool)
    border = np.zeros(len(xyz), bool)
    for cam, block_cam in zip(s["cameras"], read_block(s["block"])):
        u, v, depth = image_coordinates(xyz, block_cam)
        inside = (depth > 0.1) & (np.round(u) >= 0) & (np.round(u) < cam.width)
        inside &= (np.round(v) >= 0) & (np.round(v) < cam.height)
        wide, narrow = occluded(xyz, cam, scene, grow), occluded(xyz, cam, scene, -grow)
        in_some |= inside
        clear &= ~(inside & wide)
        hidden |= inside & narrow
        border |= inside & wide & ~narrow
    return in_some, clear, hidden & ~border
