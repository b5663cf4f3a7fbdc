"""Peak RSS and wall time of the tiled scene path (docs/scenes.md) for synthetic georeferenced scenes.

Each scene is a tiled, deflate GeoTIFF of ``size×size`` px (EPSG:32632, 0.5 m) built block by block from
real 512² crops of ``../shared/data/rs`` (Potsdam, Vaihingen, LoveDA, OpenEarthMap; flipped and
rotated so neighbours differ). Each size runs ``segment_scene`` in its own process (peak RSS is its
own, ``ru_maxrss`` of the child), with the label COG, the overlay and (``--vectors``) a GeoPackage.

Models: ``fake`` (frugalvl.testing.segmenters.ColourSegmenter: I/O, tiling and writing cost only),
``tiny`` (tiny random CLIP) and ``vitb`` (random CLIP with ViT-B/16 dimensions: the real compute).

    timeout 900 python bench/scene.py --model fake --sizes 1000 4000 10000
    python bench/scene.py --model vitb --sizes 1000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RS = Path(__file__).resolve().parents[2] / "shared" / "data" / "rs"
CROPS = ["potsdam_2_10_0_0_512_512.png", "vaihingen_area1_0_0_512_512.png", "loveda_0.png", "oem_koeln_50.tif"]


def real_crops() -> list[np.ndarray]:
    from frugalvl.raster import read_image

    crops = []
    for name in CROPS:
        rgb = read_image(RS / name).rgb
        crops.extend(
            rgb[y : y + 512, x : x + 512]
            for y in range(0, rgb.shape[0] - 511, 512)
            for x in range(0, rgb.shape[1] - 511, 512)
        )
    variants = []
    for k in range(4):
        variants.extend(np.ascontiguousarray(np.rot90(c, k)) for c in crops)
    return variants


def build_scene(path: Path, size: int) -> None:
    """Write the scene one row of 512-px blocks at a time (memory: one block row)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    crops = real_crops()
    profile = dict(
        driver="GTiff",
        height=size,
        width=size,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        crs="EPSG:32632",
        BIGTIFF="IF_SAFER",
        transform=from_origin(500000, 5600000, 0.5, 0.5),
    )
    with rasterio.open(path, "w", **profile) as dst:
        for i, y in enumerate(range(0, size, 512)):
            h = min(512, size - y)
            row = np.concatenate([crops[(i * 7 + j) % len(crops)] for j in range(-(-size // 512))], axis=1)
            dst.write(row[:h, :size].transpose(2, 0, 1), window=Window(0, y, size, h))


CHILD = """
import json, sys, time
from frugalvl.segment.scene import segment_scene
args = json.loads(sys.argv[1])
if args["model"] == "fake":
    from frugalvl.testing.segmenters import ColourSegmenter
    seg = ColourSegmenter.with_classes("road;building;grass;tree;car;water;bare;clutter")
else:
    from frugalvl.models.clip import load_clip
    from frugalvl.segment.segearth_ov import SegEarthOV
    from frugalvl.vocab import Vocabulary
    seg = SegEarthOV(load_clip(args["clip"], device=args["device"]),
                     Vocabulary.parse("road;building;grass;tree;car;water;bare;clutter"))
t = time.perf_counter()
r = segment_scene(seg, args["scene"], args["out"], tile=args["tile"], vectors=args["vectors"], overwrite=True)
import resource
print(json.dumps({"seconds": time.perf_counter() - t, "tiles": r.tiles_run,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_one(
    scene: Path, out: Path, model: str, clip: str | None, tile: int, vectors: str | None, device: str, timeout: float
) -> dict:
    args = dict(scene=str(scene), out=str(out), model=model, clip=clip, tile=tile, vectors=vectors, device=device)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_mib": res["rss_kib"] / 1024, "wall_s": wall, "segment_s": res["seconds"], "tiles": res["tiles"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    ap.add_argument("--model", choices=["fake", "tiny", "vitb"], default="fake")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--vectors", default="gpkg", help="gpkg, geojson, parquet or none")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per size")
    ap.add_argument("--workdir", help="where scenes are built (default: a temporary folder)")
    args = ap.parse_args()
    clip = None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="frugalvl-scene-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model != "fake":
        from frugalvl.testing.clip import write_tiny_openai_clip

        kw = {} if args.model == "tiny" else dict(embed_dim=512, width=768, layers=12, text_width=512)
        clip = str(write_tiny_openai_clip(work / f"{args.model}.pt", **kw))
    vectors = None if args.vectors == "none" else args.vectors
    print(f"model {args.model}, tile {args.tile}, vectors {vectors}, device {args.device}")
    print(f"{'size':>7} {'tiles':>6} {'peak RSS MiB':>13} {'wall s':>8} {'s/Mpx':>7} {'ms/tile':>8}")
    for size in args.sizes:
        scene = work / f"scene_{size}.tif"
        if not scene.exists():
            build_scene(scene, size)
        try:
            r = run_one(
                scene,
                work / f"out_{size}_{args.model}",
                args.model,
                clip,
                args.tile,
                vectors,
                args.device,
                args.timeout,
            )
        except subprocess.TimeoutExpired:
            print(f"{size:>7} timed out after {args.timeout:.0f} s")
            break
        mpx = size * size / 1e6
        print(
            f"{size:>7} {r['tiles']:>6} {r['peak_rss_mib']:>13.0f} {r['wall_s']:>8.1f} {r['segment_s'] / mpx:>7.2f} "
            f"{1000 * r['segment_s'] / max(r['tiles'], 1):>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
