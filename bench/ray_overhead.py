"""What Ray adds to ``frugalvl segment`` (docs/ray.md): throughput with 1 and 2 local workers,
and the per-row overhead (scheduling + serialisation) as a fraction of one tile's compute at ViT-B/16 size.

1. **Throughput** (tiny random CLIP, real 224² crops of the bundled CC0 Landsat scene): the single-process
   path, then ``--engine ray`` with 1 and 2 workers on a local cluster. ``wall`` includes start-up
   (model load and first call locally; for Ray the record task and the actors importing torch and
   loading the model); ``steady`` is the rate after the first image (Ray: between the first and the
   last result).
2. **Overhead per row**: rows of the size the driver sends for one tile (a pickled ``_TileRow``:
   window, limits, paths; the worker reads the pixels itself) and, for reference, rows that carry
   the 512² RGB pixels, through ``map_batches`` on one actor that does nothing; steady-state seconds
   per row. Divided by the time of one 512² tile through SegEarth-OV with a random-weight CLIP of
   ViT-B/16 dimensions on this CPU (448 long side, 224 windows, stride 112: 9 windows), timed in the
   driver with one torch thread, as each actor runs (``num_cpus=1``).
3. **In situ** (``--scene``): a 896² scene (4 tiles) with the ViT-B/16 model, single process (one
   thread, incl. assembly) vs one Ray worker (steady state between tile results), per tile.

    timeout 900 .venv/bin/python bench/ray_overhead.py --images 24 --rows 300
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = "water;forest,trees;field,grass;road;building"


def landsat_crops(folder: Path, n: int, size: int = 224) -> list[Path]:
    import cv2
    import rasterio

    with rasterio.open(REPO / "examples" / "data" / "landsat_rgb_byte.tif") as src:
        rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        y, x = rng.integers(0, rgb.shape[0] - size), rng.integers(0, rgb.shape[1] - size)
        path = folder / f"crop{i:03d}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[y : y + size, x : x + size, ::-1]))
        paths.append(path)
    return paths


def cli_factory(clip: Path):
    from frugalvl.cli import build_parser
    from frugalvl.commands.methods import method_module

    argv = ["segment", "x", "-o", "y", "--classes", CLASSES, "--clip", str(clip), "--no-progress"]
    args = build_parser(argv).parse_args(argv)
    return method_module(args.method).recipe_from_cli(args)


class _Timed:
    """Wraps the driver's row stream: the time each row came back."""

    def __init__(self):
        self.times: list[float] = []

    def patch(self, module):
        original = module.map_with_pool

        def timed(*a, **k):
            for row in original(*a, **k):
                self.times.append(time.perf_counter())
                yield row

        module.map_with_pool = timed
        return original

    def steady(self) -> float:
        """Rows per second between the first and the last result."""
        t = self.times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")


def throughput(clip: Path, images: list[Path], out: Path, workers: list[int]) -> list[tuple]:
    from frugalvl.distributed import ray_segment
    from frugalvl.segment.pipeline import segment_files

    factory = cli_factory(clip)
    rows = []
    t0 = time.perf_counter()
    seg = factory()
    segment_files(seg, images[:1], out / "warm-up", progress=False)  # text classifier, lazy imports
    t_warm = time.perf_counter() - t0
    import torch

    threads = torch.get_num_threads()
    for n in sorted({threads, 1}, reverse=True):  # the actors run one thread each (num_cpus=1)
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        segment_files(seg, images, out / f"local{n}", progress=False)
        wall = time.perf_counter() - t0
        rows.append((f"local, {n} thread(s)", wall + t_warm, len(images) / wall))
    torch.set_num_threads(threads)
    for n in workers:
        timer = _Timed()
        original = timer.patch(ray_segment)
        try:
            t0 = time.perf_counter()
            ray_segment.segment_files_ray(factory, images, out / f"ray{n}", workers=n, progress=False)
            wall = time.perf_counter() - t0
        finally:
            ray_segment.map_with_pool = original
        rows.append((f"ray, {n} worker(s)", wall, timer.steady()))
    return rows


class _Noop:
    def __call__(self, batch):
        return {"result": [pickle.dumps(len(b)) for b in batch["row"]]}


def row_overhead(ray, n_rows: int, pixels: bool) -> float:
    """Steady-state seconds per row through map_batches on one actor that does nothing."""
    from frugalvl.distributed.cluster import Pool, map_with_pool
    from frugalvl.distributed.ray_segment import _TileRow
    from frugalvl.segment.scene import plan_tiles

    tile = plan_tiles(2048, 2048, 512, 128)[1][1]
    row = _TileRow(
        0,
        "/data/scenes/S2A_MSIL2A_20240101_T32UQD.tif",
        "/out/.S2A.parts",
        tile,
        (4, 3, 2),
        [(112.0, 1830.5), (140.0, 1702.0), (98.0, 1650.25)],
    )
    payload = pickle.dumps((row, np.zeros((512, 512, 3), np.uint8)) if pixels else row)
    times = []
    for _ in map_with_pool(ray, [{"row": payload}] * n_rows, _Noop, (), Pool(1, 0.0)):
        times.append(time.perf_counter())
    return (times[-1] - times[0]) / (len(times) - 1)


def vitb_tile_seconds(clip: Path, repeats: int = 3) -> tuple[float, object]:
    """Median seconds of one 512² tile (real Landsat pixels) through SegEarth-OV with ViT-B/16 dimensions."""
    import rasterio

    from frugalvl.segment.scene import SceneReader, Tile, segment_tile
    from frugalvl.windows import Window

    seg = cli_factory(clip)()
    times = []
    with rasterio.open(REPO / "examples" / "data" / "landsat_rgb_byte.tif") as src:
        reader = SceneReader(src, [1, 2, 3], 1.0, "percentile")
        h, w = src.height, src.width
        y0, x0 = (h - 512) // 2, (w - 512) // 2
        win = Window(y0, y0 + 512, x0, x0 + 512)
        tile = Tile(0, 0, win, win)
        segment_tile(seg, reader, tile)  # warm-up (text classifier, allocator)
        for _ in range(repeats):
            t0 = time.perf_counter()
            segment_tile(seg, reader, tile)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), seg


def scene_in_situ(clip: Path, work: Path, seg) -> tuple[float, float]:
    """Seconds per tile in the steady state: single process vs one Ray worker (896² scene, 4 tiles)."""
    from frugalvl.distributed import ray_segment
    from frugalvl.segment.scene import SceneSettings, segment_scene
    from frugalvl.segment.scene_settings import SegmentRunSettings
    from frugalvl.testing.segmenters import write_test_scene

    scene = work / "scene896.tif"
    write_test_scene(scene, 896, 896, source=landsat_crops(work, 1, 448)[0])
    t0 = time.perf_counter()
    segment_scene(seg, scene, work / "scene_local", SceneSettings(tile=512))
    local = (time.perf_counter() - t0) / 4
    timer = _Timed()
    original = timer.patch(ray_segment)
    try:
        ray_segment.segment_files_ray(
            cli_factory(clip),
            [scene],
            work / "scene_ray",
            SegmentRunSettings(scene=SceneSettings(tile=512), tile_all=True),
            workers=1,
            progress=False,
            min_tiles=2,
        )
    finally:
        ray_segment.map_with_pool = original
    return local, 1 / timer.steady()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="crops for the throughput runs")
    ap.add_argument("--rows", type=int, default=300, help="rows for the per-row overhead")
    ap.add_argument("--scene", action="store_true", help="also the in-situ ViT-B/16 scene comparison (slow on CPU)")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2], help="which measurements: 1 throughput, 2 overhead")
    args = ap.parse_args()

    import os

    import ray
    import torch

    from frugalvl.testing.clip import write_tiny_openai_clip

    work = Path(tempfile.mkdtemp(prefix="frugalvl-ray-bench-"))
    tiny = write_tiny_openai_clip(work / "tiny.pt")
    vitb = write_tiny_openai_clip(work / "vitb.pt", embed_dim=512, width=768, layers=12, text_width=512)
    images = landsat_crops(work, args.images)
    print(
        f"machine: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}, torch threads "
        f"{torch.get_num_threads()} (driver) / 1 (each Ray actor, num_cpus=1)"
    )
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    print(f"ray.init (local cluster, 2 CPUs): {time.perf_counter() - t0:.1f} s")
    try:
        if 1 in args.parts:
            print(f"\n1. throughput, tiny random CLIP, {len(images)} real 224² crops")
            print(f"{'engine':<20} {'wall s':>8} {'steady img/s':>13}")
            for name, wall, rate in throughput(tiny, images, work, [1, 2]):
                print(f"{name:<20} {wall:>8.1f} {rate:>13.2f}")
        if 2 not in args.parts and not args.scene:
            return
        small, big = row_overhead(ray, args.rows, False), row_overhead(ray, max(50, args.rows // 3), True)
        torch.set_num_threads(1)  # as each actor (num_cpus=1): the same arithmetic and thread count
        t_tile, seg = vitb_tile_seconds(vitb)
        print("\n2. per-row overhead on one actor vs one 512² tile of SegEarth-OV, ViT-B/16 size, CPU")
        print(f"{'row':<34} {'ms/row':>8} {'% of a tile':>12}")
        print(f"{'tile row (window, limits, paths)':<34} {1e3 * small:>8.2f} {100 * small / t_tile:>11.2f}%")
        print(f"{'tile row + 512² RGB pixels':<34} {1e3 * big:>8.2f} {100 * big / t_tile:>11.2f}%")
        print(f"{'ViT-B/16 tile compute':<34} {1e3 * t_tile:>8.0f}")
        if args.scene:
            local, remote = scene_in_situ(vitb, work, seg)
            print("\n3. in situ, 896² scene (4 tiles of 512), ViT-B/16 size, steady state")
            print(
                f"single process {local:.2f} s/tile (incl. assembly), one Ray worker {remote:.2f} s/tile: "
                f"{100 * (remote / local - 1):+.1f}%"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
