"""Wall time and peak memory of ``label-3d``'s voting on a large generated cloud (docs/methods/segearth_ov3_3d.md).

A ground plane and three boxes sampled at random with N points (PLY, float32 x/y/z plus colours, intensity
and a class), photos rendered by ray casting from a ring of oblique cameras, and the stand-in segmenter that
reads the classes back from the photos' colours (so the time is the 3D part: reading, projection, votes,
writing). The cloud is made in one child process and labelled in another, whose peak RSS is reported.

    .venv/bin/python bench/label_3d.py [--points 10000000] [--photos 8] [--visibility none|zbuffer]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make(folder: Path, points: int, photos: int) -> None:
    import numpy as np

    from frugalvl.testing.pointcloud import GROUND, default_cameras, default_scene, write_block, write_ply

    scene = default_scene()
    cameras = default_cameras(photos)
    for cam in cameras:  # 1200×900 photos
        cam.width, cam.height, cam.focal, cam.ppx, cam.ppy = 1200, 900, 960.0, 600.3, 449.6
    write_block(folder, cameras, scene)
    rng = np.random.default_rng(0)
    xyz = np.zeros((points, 3))
    xyz[:, :2] = rng.uniform(-scene.extent, scene.extent, (points, 2))
    truth = np.full(points, GROUND)
    for lo, hi in scene.boxes:  # points over a box are on its roof
        inside = ((xyz[:, :2] >= lo[:2]) & (xyz[:, :2] <= hi[:2])).all(1)
        xyz[inside, 2] = hi[2]
        truth[inside] = 1
    write_ply(folder / "cloud.ply", xyz, truth)


def label(folder: Path, visibility: str) -> None:
    from frugalvl.pointcloud import Label3DSettings, label_cloud
    from frugalvl.testing.pointcloud import LabelColourSegmenter

    seg = LabelColourSegmenter.for_classes()
    settings = Label3DSettings(visibility=visibility)
    start = time.perf_counter()
    result = label_cloud(seg, folder / "photos", folder / "block.xml", folder / "cloud.ply", folder / "out", settings)
    print(json.dumps({"seconds": time.perf_counter() - start, "photos": len(result.photos_used)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--visibility", default="none", choices=["none", "zbuffer"])
    parser.add_argument("--step", choices=["make", "label"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "make":
        return make(Path(args.folder), args.points, args.photos)
    if args.step == "label":
        return label(Path(args.folder), args.visibility)
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, __file__, "--folder", tmp, "--points", str(args.points), "--photos", str(args.photos)]
        subprocess.run([*base, "--step", "make"], check=True)
        size = (Path(tmp) / "cloud.ply").stat().st_size
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run(
            [*base, "--step", "label", "--visibility", args.visibility], check=True, capture_output=True, text=True
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
        timing = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'points':>12}  {'photos':>6}  {'visibility':>10}  {'PLY MB':>7}  {'wall s':>7}  {'peak RSS MB':>11}")
    note = "" if peak > before else "  (the cloud's maker used more: the labelling stayed below it)"
    print(
        f"{args.points:>12d}  {timing['photos']:>6d}  {args.visibility:>10}  {size / 1e6:>7.0f}  "
        f"{timing['seconds']:>7.1f}  {peak / 1024:>11.0f}{note}"
    )


if __name__ == "__main__":
    main()
