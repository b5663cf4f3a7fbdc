"""Time SegEarth-OV3 change detection per 512² pair (docs/methods/segearth_ov3_change.md#cost).

    python bench/change.py                          # tiny and small random SAM 3 on the CPU
    python bench/change.py --size full --repeats 1  # the real dimensions (840M parameters; slow on a CPU)
    python bench/change.py --device cuda --size full

The model is ``frugalvl.testing.sam3.random_sam3`` (random weights: times are real, maps meaningless), the
vocabulary the official change class file (background, building), the settings the LEVIR-CD defaults. Printed per
size: the median wall time of ``ChangeDetector.detect`` after one warm-up, split into the two dates' SAM 3 work
(scores and feature map) and the change steps (object and pixel verdicts, Otsu), which run on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from frugalvl.change import ChangeDetector
from frugalvl.change.detector import default_segmentation_settings
from frugalvl.segment.segearth_ov3 import SegEarthOV3
from frugalvl.testing.sam3 import random_sam3
from frugalvl.vocab import Vocabulary


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_size(size: str, device: str, repeats: int, pixels: int) -> tuple[float, float, float]:
    bundle = random_sam3(size, device=device)
    detector = ChangeDetector(
        SegEarthOV3(bundle, Vocabulary.parse("background;building"), default_segmentation_settings())
    )
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (pixels, pixels, 3), dtype=np.uint8)
    after = before.copy()
    after[pixels // 4 : pixels // 2, pixels // 4 : pixels // 2] = 255
    totals, dates, steps = [], [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        first, second = detector.date(before), detector.date(after)
        sync(bundle.device)
        t1 = time.perf_counter()
        detector.compare(*first, *second)
        t2 = time.perf_counter()
        if i:  # the first run warms up
            totals.append(t2 - t0)
            dates.append(t1 - t0)
            steps.append(t2 - t1)
    return statistics.median(totals), statistics.median(dates), statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", choices=["tiny", "small", "full"], help="default: tiny and small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pixels", type=int, default=512, help="side of the square pair (default 512)")
    args = parser.parse_args()
    print(f"change detection, one {args.pixels}² pair, {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'model':<8} {'s / pair':>9} {'SAM 3 (2 dates)':>16} {'change steps':>13}")
    for size in args.size or ["tiny", "small"]:
        total, dates, steps = time_size(size, args.device, args.repeats, args.pixels)
        print(f"{size:<8} {total:>9.3f} {dates:>16.3f} {steps:>13.3f}")


if __name__ == "__main__":
    main()
