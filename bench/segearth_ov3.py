"""Time SegEarth-OV3 per image: the official one-prompt-at-a-time schedule against batched prompts.

    python bench/segearth_ov3.py                        # CPU, a small random SAM 3 (a few minutes)
    python bench/segearth_ov3.py --device cuda --full-size   # the real SAM 3 dimensions, random bf16 weights

Both schedules compute the same scores (tests/segment/test_segearth_ov3.py); only the time differs:

* sequential: what the official code does (spec/segearth_ov3.md §2.2): the image encoder once, then per
  prompt the text encoder and a batch-1 pass through the fusion encoder, decoder and segmentation
  head, and a Python loop over kept instances;
* batched: frugalvl's schedule (§5): text embeddings cached for the vocabulary, all prompts in one
  call of up to ``--prompt-chunk``, the instance loop vectorised.

Weights are random, so with the official confidence threshold (0.5) almost no instance is kept, as in
the spec's own H100 timings; ``--confidence-threshold 0`` keeps all of them (the worst case for fusion).
Peak memory is the CUDA allocator's peak on a GPU, and the peak resident memory above the start on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from frugalvl.segment.segearth_ov3 import SegEarthOV3Settings, SegEarthOV3
from frugalvl.testing.sam3 import random_sam3
from frugalvl.testing.segearth_ov3_reference import official_style_view_scores
from frugalvl.vocab import Vocabulary

# 16 remote-sensing prompts; the first 7 are a LoveDA-sized vocabulary
PROMPTS = ["background", "building", "road", "water", "barren", "forest", "agricultural", "car", "tree",
           "grass", "ship", "bridge", "harbor", "swimming pool", "tennis court", "roundabout"]
SAMPLE = REPO.parent / "shared" / "data" / "rs" / "potsdam_2_10_0_0_512_512.png"


class PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or resident set size sampled every 2 ms on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self._start)
            time.sleep(0.002)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._start, self._stop = self._rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


def sample_image(size: int) -> np.ndarray:
    if SAMPLE.exists():
        from PIL import Image

        rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
        return np.ascontiguousarray(rgb[:size, :size])
    return np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def time_per_image(run, device: torch.device, repeats: int) -> tuple[float, int]:
    """Median seconds per image after one warm-up (which also fills the text cache), and the peak
    memory over warm-up and timed runs."""
    times = []
    with PeakMemory(device) as memory:
        run()
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak


SCHEDULES = ("sequential", "batched")


def measure(sam3, args: argparse.Namespace, n_prompts: int, schedule: str) -> tuple[float, int]:
    vocabulary = Vocabulary.parse(";".join(PROMPTS[:n_prompts]))
    settings = SegEarthOV3Settings(confidence_threshold=args.confidence_threshold, prompt_chunk=args.prompt_chunk)
    image = sample_image(args.image_size)
    if schedule == "sequential":
        def run():
            return official_style_view_scores(sam3, image, vocabulary.queries, settings)
    else:
        segmenter = SegEarthOV3(sam3, vocabulary, settings)

        def run():
            return segmenter.query_scores(image)
    with torch.no_grad():
        return time_per_image(run, sam3.device, args.repeats)


def measure_in_child(args: argparse.Namespace, n_prompts: int, schedule: str) -> tuple[float, int]:
    """On CPU each row runs in a fresh process, so that its peak memory is its own."""
    command = [sys.executable, __file__, "--device", args.device, "--image-size", str(args.image_size),
               "--repeats", str(args.repeats), "--prompt-chunk", str(args.prompt_chunk),
               "--confidence-threshold", str(args.confidence_threshold), "--row", f"{n_prompts}:{schedule}"]
    if args.full_size:
        command.append("--full-size")
    if args.threads:
        command += ["--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], result["peak"]


def build(args: argparse.Namespace):
    size = "full" if args.full_size else "small"
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    return random_sam3(size, device=args.device, dtype=dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--full-size", action="store_true",
                        help="the real SAM 3 dimensions (840M parameters, 1008 px, 200 queries), meant for a GPU")
    parser.add_argument("--image-size", type=int, default=512, help="side of the square test image (default 512)")
    parser.add_argument("--repeats", type=int, default=None, help="timed images per row (default 5 on GPU, 3 on CPU)")
    parser.add_argument("--prompt-chunk", type=int, default=16, help="prompts per batched call (default 16)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="instance threshold (default 0.5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--row", help=argparse.SUPPRESS)   # internal: one measurement, printed as JSON
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    args.repeats = args.repeats or (5 if device.type == "cuda" else 3)

    if args.row:
        n_prompts, schedule = args.row.split(":")
        seconds, peak = measure(build(args), args, int(n_prompts), schedule)
        print(json.dumps({"seconds": seconds, "peak": peak}))
        return 0

    start = time.perf_counter()
    sam3 = build(args)
    params = sum(p.numel() for p in sam3.model.parameters())
    built = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    memory = "CUDA allocator peak, weights included" if device.type == "cuda" else "peak RSS above the loaded model"
    print(f"# SegEarth-OV3 per-image time: {name}; random SAM 3 '{'full' if args.full_size else 'small'}' "
          f"({params / 1e6:.1f}M parameters, {sam3.model.config.vision_config.image_size} px input, {sam3.dtype}, "
          f"built in {built:.1f} s); {args.image_size}² image; confidence threshold {args.confidence_threshold}; "
          f"median of {args.repeats} after one warm-up; memory: {memory}")
    print()
    print("| prompts | schedule | s / image | ms / prompt | peak memory | speed-up |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in (7, 16):
        baseline = None
        for schedule in SCHEDULES:
            if device.type == "cuda":
                seconds, peak = measure(sam3, args, n, schedule)
            else:
                seconds, peak = measure_in_child(args, n, schedule)
            baseline = baseline or seconds
            label = "sequential (official)" if schedule == "sequential" else f"batched (chunk {args.prompt_chunk})"
            print(f"| {n} | {label} | {seconds:.3f} | {1000 * seconds / n:.1f} | {peak / 2**30:.2f} GiB | "
                  f"{baseline / seconds:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
