"""Speed and memory of SegEarth-OV: the official window loop next to frugalvl's batched path.

Real ViT-B/16 dimensions with random weights (numbers are for speed only), a JBU-One upsampler,
the Potsdam preset's 8 queries. For each image size, three protocols:

* ``official``: the official structure: windows one at a time (batch 1), the stock last block run
  and discarded, every window's logits padded to full size before adding, one-hot synonym merge;
* ``batched``: frugalvl's default path (16 windows per forward pass on a GPU; one at a time on the
  CPU, where batching is slower);
* ``batched+commuted``: plus the exact upsampler reordering (``--commute-upsampler``, spec §2.4).

``--sizes`` are working resolutions (the image is fed at that size, ``long_side=size``); the
official protocol always works at 448. Each protocol runs in its own process on CPU so that peak
RSS is its own; on CUDA, peak allocated memory is read from torch.

    python bench/segearth_ov.py                      # CPU, 448
    python bench/segearth_ov.py --device cuda --sizes 448 896 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

PROTOCOLS = ("official", "batched", "batched+commuted")


def build(device: str, precision: str, long_side: int, protocol: str):
    import open_clip

    from frugalvl.models.clip import ClipModel
    from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
    from frugalvl.models.jbu import JBUOne
    from frugalvl.vocab import Vocabulary

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    clip = ClipModel(model.to(device=device, dtype=dtype).eval(), open_clip.get_tokenizer("ViT-B-16"), "random:ViT-B-16")
    vocab = Vocabulary.parse("road,parking lot;building;low vegetation;tree;car;clutter,background", strip="newline")
    settings = SegEarthOVSettings(long_side=long_side, window_batch=1 if protocol == "official" else None,
                                  commute_upsampler=protocol.endswith("commuted"))
    return SegEarthOV(clip, vocab, JBUOne(512).eval(), settings)


@torch.no_grad()
def official_style(seg, rgb: np.ndarray) -> torch.Tensor:
    """The official forward_slide + postprocess structure around the same per-window computation."""
    from frugalvl.windows import plan_windows

    device, dtype = seg.clip.device, seg.clip.dtype
    image = seg.preprocess(rgb).to(device=device, dtype=dtype)
    _, _, h, w = image.shape
    q = len(seg.vocabulary.queries)
    preds = image.new_zeros((1, q, h, w))
    count = image.new_zeros((1, 1, h, w))
    stock_last = seg.clip.model.visual.transformer.resblocks[-1]
    for win in plan_windows(h, w, 224, 112):
        crop = image[:, :, win.y0:win.y1, win.x0:win.x1]
        tokens = (crop.shape[-2] // 16) * (crop.shape[-1] // 16) + 1
        stock_last(torch.zeros(1, tokens, stock_last.attn.embed_dim, device=device, dtype=dtype))  # run, discarded
        logits = seg.window_logits(crop)
        preds += F.pad(logits, (win.x0, w - win.x1, win.y0, h - win.y1))
        count[:, :, win.y0:win.y1, win.x0:win.x1] += 1
    logits = F.interpolate(preds / count, size=rgb.shape[:2], mode="bilinear")[0]
    probs = (logits * 50).softmax(0)
    onehot = F.one_hot(torch.tensor(seg.query_to_class, device=device)).T.view(len(seg.vocabulary), q, 1, 1)
    return (probs[None] * onehot.to(probs.dtype)).max(1)[0]


def run_single(protocol: str, size: int, device: str, precision: str, repeats: int) -> dict:
    seg = build(device, precision, size, protocol)
    rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    fn = (lambda: official_style(seg, rgb)) if protocol == "official" else (lambda: seg.class_scores(rgb))
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    assert torch.isfinite(out.float()).all()
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"protocol": protocol, "size": size, "s_per_image": float(np.median(times)), "peak_gib": peak / 2 ** 30,
            "windows": len(__import__("frugalvl.windows", fromlist=["plan_windows"]).plan_windows(size, size, 224, 112))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, help="fp32 (CPU default) or fp16 (CUDA default, as official)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[448])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()
    precision = args.precision or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.single:
        protocol, size = args.single.split("@")
        print(json.dumps(run_single(protocol, int(size), args.device, precision, args.repeats)))
        return
    rows = []
    for size in args.sizes:
        for protocol in args.protocols:
            if args.device.startswith("cuda"):
                rows.append(run_single(protocol, size, args.device, precision, args.repeats))
            else:  # own process: peak RSS is per process
                out = subprocess.run([sys.executable, __file__, "--single", f"{protocol}@{size}", "--device", args.device,
                                      "--precision", precision, "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  done {protocol} @ {size}", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nSegEarth-OV, ViT-B/16 + JBU-One (random weights), 8 queries, {precision}, {name}")
    print(f"{'size':>6} {'windows':>8} {'protocol':<18} {'s/image':>9} {'images/s':>9} {'peak GiB':>9} {'speed-up':>9}")
    for size in args.sizes:
        base = next((r for r in rows if r["size"] == size and r["protocol"] == "official"), None)
        for r in (r for r in rows if r["size"] == size):
            speed = f"{base['s_per_image'] / r['s_per_image']:.2f}x" if base else "-"
            print(f"{size:>6} {r['windows']:>8} {r['protocol']:<18} {r['s_per_image']:>9.3f} {1 / r['s_per_image']:>9.2f} "
                  f"{r['peak_gib']:>9.2f} {speed:>9}")


if __name__ == "__main__":
    main()
