"""Time SegEarth-OV3 per image: the official protocol against frugalvl's fastest exact configuration.

    python bench/segearth_ov3.py --size tiny                 # CPU smoke test (< 1 min)
    python bench/segearth_ov3.py --device cuda --sweep       # the real SAM 3 dimensions (batching notes)
    python bench/segearth_ov3.py --device cuda --sam3 PATH   # real weights: bf16 label agreement means something

Both run in this process on the same random-weight SAM 3 (``frugalvl.testing.sam3.random_sam3``; ``full``
is ``Sam3Config()``: 840M parameters, 1008 px, 200 queries), with fp32 weights and the official bf16
autocast on CUDA (fp32 on the CPU), for a 7-class vocabulary (one prompt per class, or ``--vocabulary``):

* official: docs/methods/segearth_ov3.md#fusion-of-one-view, via ``frugalvl.testing.segearth_ov3_reference``: per
  view the image encoder once, then one class at a time, its text re-encoded, ``Sam3Model.forward`` at batch 1 and a
  Python loop over kept instances; views averaged with full-size per-prompt accumulators, then the synonym max;
* frugalvl: ``SegEarthOV3.class_scores`` (#scheduling-that-differs): text embeddings cached per vocabulary, views
  through the image encoder ``view_batch`` at a time, all (view, prompt) pairs through the heads together, instance
  fusion vectorised, class scores written as a running max.

Scenes: ``one view`` is a view-sized image (the issue's 1008² case); ``2×2 views`` a 2×-sized image cut into
four non-overlapping views (``slide_crop`` = the view size), which is where ``view_batch`` acts.

Printed per scene: ms per image (median after one warm-up), the speed-up, peak memory (the CUDA allocator's peak
with the weights, or the resident set above the start on CPU), an approximate throughput from the FLOP estimate of
docs/methods/segearth_ov3.md#cost-of-one-image (5 TFLOP per 1008² view + 0.4 TFLOP per prompt and view, only for
``--size full``), and the largest score difference and label agreement between the two protocols. A last table
compares frugalvl at bf16 against fp32 (same weights): max |Δ| of class scores and label agreement. Random weights
leave class scores nearly tied, so label agreement on them understates what real weights give; ``--sam3`` loads real
ones. ``--sweep`` also times frugalvl alone at view_batch 1, 2 and 4 on the last scene, to choose the device
default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "rs" / "potsdam_2_10_0_0_512_512.png"
VOCABULARY = "background;building;road;water;barren;forest;agricultural"  # 7 classes, 7 prompts
SIZES = {"tiny": 112, "small": 448, "full": 1008}
TFLOP_PER_VIEW, TFLOP_PER_PROMPT = 5.0, 0.4  # docs/methods/segearth_ov3.md#cost-of-one-image, full-size SAM 3


class PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or resident set size sampled every 2 ms on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self._start)
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
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
    """A real remote-sensing crop (``../shared``) resized to ``size``², or noise when it is absent."""
    if SAMPLE.exists():
        from PIL import Image

        return np.asarray(Image.open(SAMPLE).convert("RGB").resize((size, size), Image.BILINEAR))
    return np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def timed(run, device: torch.device, repeats: int) -> tuple[float, int, torch.Tensor]:
    """Median seconds after one warm-up (which also fills the text cache), peak memory, and the result."""
    times = []
    with PeakMemory(device) as memory:
        result = run()
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak, result


def official_class_scores(sam3, rgb: np.ndarray, vocabulary, settings, views) -> torch.Tensor:
    """The official protocol for one image: every view alone, one prompt at a time; averaged; synonym max."""
    from frugalvl.segment.base import merge_synonyms
    from frugalvl.testing.segearth_ov3_reference import official_style_view_scores
    from frugalvl.windows import WindowAccumulator

    total = WindowAccumulator(len(vocabulary.queries), rgb.shape[0], rgb.shape[1], device=sam3.device)
    for w in views:
        view = np.ascontiguousarray(rgb[w.y0 : w.y1, w.x0 : w.x1])
        total.add(w, official_style_view_scores(sam3, view, vocabulary.queries, settings))
    return merge_synonyms(total.result(), vocabulary.query_to_class).cpu()


def agreement(a: torch.Tensor, b: torch.Tensor, prob_thd: float, bg_idx: int) -> tuple[float, float]:
    from frugalvl.segment.base import labels_from_scores

    same = labels_from_scores(a, prob_thd, bg_idx) == labels_from_scores(b, prob_thd, bg_idx)
    return (a - b).abs().max().item(), 100.0 * same.float().mean().item()


def build(args: argparse.Namespace):
    from frugalvl.models.sam3 import load_sam3
    from frugalvl.testing.sam3 import random_sam3

    if args.sam3:
        return load_sam3(args.sam3, device=args.device)
    return random_sam3(args.size, device=args.device)  # fp32 weights, as the official code keeps them


def run_scene(sam3, args, name: str, n_views: int, vocabulary, rows: list[str]) -> tuple[torch.Tensor, object]:
    from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings

    side = args.view_size * (2 if n_views == 4 else 1)
    rgb = sample_image(side)
    slide = args.view_size if n_views == 4 else 0
    settings = SegEarthOV3Settings(
        confidence_threshold=args.confidence_threshold,
        slide_crop=slide,
        prompt_chunk=max(args.prompt_chunk, len(vocabulary.queries)),
        view_batch=args.view_batch,
        precision=args.precision,
    )
    segmenter = SegEarthOV3(sam3, vocabulary, settings)
    views = segmenter.views(side, side)
    device = sam3.device
    with torch.no_grad():
        t_off, m_off, official = timed(
            lambda: official_class_scores(sam3, rgb, vocabulary, settings, views), device, args.repeats
        )
        t_fr, m_fr, ours = timed(lambda: segmenter.class_scores(rgb), device, args.repeats)
    diff, agree = agreement(official, ours, settings.prob_thd, settings.bg_idx)
    work = len(views) * (TFLOP_PER_VIEW + TFLOP_PER_PROMPT * len(vocabulary.queries))
    for label, seconds, peak in (
        ("official (one class at a time)", t_off, m_off),
        (f"frugalvl (view_batch {segmenter.view_batch}, chunk {settings.prompt_chunk})", t_fr, m_fr),
    ):
        rate = f"{work / seconds:.0f}" if args.size == "full" and not args.sam3 else "–"
        rows.append(
            f"| {name} ({side}²) | {label} | {1000 * seconds:.1f} | {t_off / seconds:.2f}× | "
            f"{peak / 2**30:.2f} GiB | {rate} |"
        )
        print(rows[-1], flush=True)
    rows.append(f"| {name} | frugalvl vs official: max abs Δ {diff:.2e}, labels identical {agree:.3f}% | | | | |")
    print(rows[-1], flush=True)
    return ours, (segmenter, rgb)


def precision_row(sam3, vocabulary, args, scene) -> str:
    """frugalvl at bf16 autocast against fp32, same weights and image."""
    import dataclasses

    from frugalvl.segment.segearth_ov3 import SegEarthOV3

    segmenter, rgb = scene
    scores = {}
    for precision in ("fp32", "bf16"):
        settings = dataclasses.replace(segmenter.settings, precision=precision)
        with torch.no_grad():
            scores[precision] = SegEarthOV3(sam3, vocabulary, settings).class_scores(rgb)
    diff, agree = agreement(scores["fp32"], scores["bf16"], segmenter.settings.prob_thd, segmenter.settings.bg_idx)
    top2 = scores["fp32"].topk(2, dim=0).values
    margin = (top2[0] - top2[1]).median().item() if len(scores["fp32"]) > 1 else float("nan")
    return (
        f"| bf16 vs fp32 ({rgb.shape[0]}²) | max abs Δ {diff:.2e} | labels identical {agree:.3f}% | "
        f"median fp32 top-2 margin {margin:.2e} |"
    )


def sweep(sam3, vocabulary, args, scene) -> None:
    """frugalvl alone at several view batches on the same image, to pick the fastest on this device."""
    import dataclasses

    from frugalvl.segment.segearth_ov3 import SegEarthOV3

    segmenter, rgb = scene
    print()
    print(
        f"| view_batch ({rgb.shape[0]}², {len(segmenter.views(*rgb.shape[:2]))} views) | prompt_chunk | "
        "ms / image | peak memory |"
    )
    print("|---:|---:|---:|---:|")
    for view_batch in (1, 2, 4):
        settings = dataclasses.replace(segmenter.settings, view_batch=view_batch)
        candidate = SegEarthOV3(sam3, vocabulary, settings)
        with torch.no_grad():
            seconds, peak, _ = timed(lambda c=candidate: c.class_scores(rgb), sam3.device, args.repeats)
        print(f"| {view_batch} | {settings.prompt_chunk} | {1000 * seconds:.1f} | {peak / 2**30:.2f} GiB |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default=None,
        help="random SAM 3 size (default: full on CUDA, tiny on the CPU; never full on a CPU)",
    )
    parser.add_argument("--sam3", default=None, metavar="ID|PATH", help="real SAM 3 weights instead of random ones")
    parser.add_argument("--vocabulary", default=VOCABULARY, help=f"classes (default {VOCABULARY!r})")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto: bf16 autocast on CUDA (official), fp32 on the CPU",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed images per row (default 5 on GPU, 2 on CPU)")
    parser.add_argument("--prompt-chunk", type=int, default=16, help="prompts per batched call (default 16)")
    parser.add_argument("--view-batch", type=int, default=None, help="views per encoder pass (default: the device's)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="instance threshold (default 0.5)")
    parser.add_argument("--scenes", default="1,4", help="views per image to measure: 1, 4 or both (default 1,4)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 for the tiny model, else torch's choice)",
    )
    parser.add_argument("--sweep", action="store_true", help="also time frugalvl at view_batch 1, 2 and 4 (last scene)")
    args = parser.parse_args()

    from frugalvl.vocab import Vocabulary

    device = torch.device(args.device)
    if args.threads or (device.type == "cpu" and args.size in (None, "tiny")):
        torch.set_num_threads(args.threads or 1)  # tiny models: thread hand-offs cost more than the work
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    args.size = args.size or ("full" if device.type == "cuda" else "tiny")
    if args.size == "full" and device.type != "cuda" and not args.sam3:
        print("the full-size SAM 3 takes minutes per image on a CPU: use --size tiny or small", file=sys.stderr)
        return 2
    args.repeats = args.repeats or (5 if device.type == "cuda" else 2)

    start = time.perf_counter()
    sam3 = build(args)
    built = time.perf_counter() - start
    args.view_size = sam3.model.config.vision_config.backbone_config.image_size
    vocabulary = Vocabulary.parse(args.vocabulary)
    params = sum(p.numel() for p in sam3.model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    memory = "CUDA allocator peak, weights included" if device.type == "cuda" else "peak RSS above the start"
    print(
        f"# SegEarth-OV3 per image: {name}; SAM 3 {args.sam3 or 'random ' + args.size} ({params / 1e6:.1f}M "
        f"parameters, {args.view_size} px views, weights {sam3.dtype}, precision {args.precision}, built in "
        f"{built:.1f} s); {len(vocabulary)} classes / {len(vocabulary.queries)} prompts; confidence threshold "
        f"{args.confidence_threshold}; median of {args.repeats} after one warm-up; memory: {memory}"
    )
    print()
    rows = ["| scene | protocol | ms / image | speed-up | peak memory | ≈TFLOP/s |", "|---|---|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    scene = last = None
    for n_views in (int(v) for v in args.scenes.split(",")):
        _, scene_ = run_scene(sam3, args, "one view" if n_views == 1 else "2×2 views", n_views, vocabulary, rows)
        scene, last = scene or scene_, scene_
    print()
    print(precision_row(sam3, vocabulary, args, scene), flush=True)
    if args.sweep:
        sweep(sam3, vocabulary, args, last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
