"""Speed and memory of SegEarth-OV: the official window loop next to frugalvl's batched path.

Real ViT-B/16 dimensions with random weights (numbers are for speed only), a JBU-One upsampler,
the Potsdam preset's 8 queries. For each image size, three protocols:

* ``official``: the official protocol: windows one at a time (batch 1), the stock last block run
  and discarded, the replaced block's attention written out (softmax(q·qᵀ)… as explicit matrices),
  the JBU kernel applied by a re-implementation of FeatUp's ``AdaptiveConv`` op in the same dtype
  (unfold + einsum, in channel chunks), every window's logits padded to full size before adding,
  one-hot synonym merge;
* ``batched``: frugalvl's default path (16 windows per forward pass on a GPU; one at a time on the
  CPU, where batching is slower; SDPA attention; the fused Triton JBU kernel on CUDA);
* ``batched+commuted``: plus the exact upsampler reordering (``--commute-upsampler``,
  docs/methods/simfeatup.md#commuting-the-final-convolution): frugalvl's fastest exact configuration.

The table gives images/s, the ratio to the official protocol, peak memory (GPU: allocated by torch;
CPU: process RSS), and the model FLOPs per image (counted analytically: ViT matmuls and attention, the
JBU kernel application and 1×1 convs) over the time, as a fraction of the GPU's dense fp16 peak
(``--peak-tflops``, H200 ≈ 989). "ViT %peak" counts only the ViT's FLOPs over the whole image time,
a lower bound on the ViT part's own efficiency.

``--sizes`` are working resolutions (the image is fed at that size, ``long_side=size``); the
official protocol always works at 448. Each protocol runs in its own process on CPU so that peak
RSS is its own; on CUDA, peak allocated memory is read from torch.

    python bench/segearth_ov.py                      # CPU, 448
    python bench/segearth_ov.py --tiny --sizes 448   # CPU smoke run: tiny models, 9 windows
    python bench/segearth_ov.py --device cuda --sizes 448 896 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

PROTOCOLS = ("official", "batched", "batched+commuted")


def build(device: str, precision: str, long_side: int, protocol: str, tiny: bool = False):
    import open_clip

    from frugalvl.models.clip import ClipModel
    from frugalvl.models.jbu import JBUOne
    from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
    from frugalvl.vocab import Vocabulary

    torch.manual_seed(0)
    if tiny:  # smoke runs: a 2-layer CLIP and a 32-d upsampler
        from frugalvl.testing.clip import tiny_clip

        model = tiny_clip()
    else:
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    clip = ClipModel(
        model.to(device=device, dtype=dtype).eval(), open_clip.get_tokenizer("ViT-B-16"), "random:ViT-B-16"
    )
    vocab = Vocabulary.parse("road,parking lot;building;low vegetation;tree;car;clutter,background", strip="newline")
    settings = SegEarthOVSettings(
        long_side=long_side,
        window_batch=1 if protocol == "official" else None,
        commute_upsampler=protocol.endswith("commuted"),
    )
    return SegEarthOV(clip, vocab, JBUOne(32 if tiny else 512).eval(), settings)


def featup_adaptive_conv(
    source_padded: torch.Tensor, kernel: torch.Tensor, backend: str = "torch", chunk: int = 128
) -> torch.Tensor:
    """FeatUp's ``AdaptiveConv`` forward re-implemented: unfold + einsum in the inputs' dtype, channel chunks."""
    from frugalvl.models.jbu import adaptive_conv_unfold

    kernel = kernel.to(source_padded.dtype)
    return torch.cat(
        [
            adaptive_conv_unfold(source_padded[:, c : c + chunk], kernel)
            for c in range(0, source_padded.shape[1], chunk)
        ],
        1,
    )


def explicit_mixing(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str) -> torch.Tensor:
    """The replaced block as the official code writes it: explicit attention matrices, then ``@ v``."""
    from frugalvl.models.attention import attention_weights

    weights = attention_weights(q, k, v, mode)
    return v if weights is None else weights @ v


@contextlib.contextmanager
def official_kernels():
    """Swap frugalvl's fused paths (Triton/shift-and-accumulate JBU, SDPA) for the official ones."""
    from frugalvl.models import attention, jbu

    saved = jbu.adaptive_conv, attention.mix_tokens
    jbu.adaptive_conv, attention.mix_tokens = featup_adaptive_conv, explicit_mixing
    try:
        yield
    finally:
        jbu.adaptive_conv, attention.mix_tokens = saved


def flops_per_window(visual, upsampler, window: int = 224, commuted: bool = False) -> tuple[float, float]:
    """(ViT FLOPs, total FLOPs) of one window: matmuls/convs and attention (2 FLOPs per MAC)."""
    width = visual.conv1.weight.shape[0]
    patch = visual.conv1.weight.shape[-1]
    layers = len(visual.transformer.resblocks)
    n = (window // patch) ** 2 + 1
    vit = 3 * patch * patch * width * (n - 1) + layers * (12 * n * width**2 + 2 * n * n * width)
    vit += 2 * n * n * width + n * width * visual.proj.shape[1]  # 3 self-attentions in the last block, projection
    jbu = 0
    if upsampler is not None:
        feat = upsampler.fixup_proj[1].weight.shape[0]
        side = window // patch
        for stage in upsampler.stages():
            side *= 2
            taps = stage.diameter**2
            jbu += side * side * (feat * taps + taps * (taps + 3) + taps * taps + 32 * taps + 32 * 35)
        jbu += (window // patch) ** 2 * feat * feat if commuted else side * side * feat * feat
    return 2.0 * vit, 2.0 * (vit + jbu)


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
        crop = image[:, :, win.y0 : win.y1, win.x0 : win.x1]
        tokens = (crop.shape[-2] // 16) * (crop.shape[-1] // 16) + 1
        stock_last(torch.zeros(1, tokens, stock_last.attn.embed_dim, device=device, dtype=dtype))  # run, discarded
        logits = seg.window_logits(crop)
        preds += F.pad(logits, (win.x0, w - win.x1, win.y0, h - win.y1))
        count[:, :, win.y0 : win.y1, win.x0 : win.x1] += 1
    logits = F.interpolate(preds / count, size=rgb.shape[:2], mode="bilinear")[0]
    probs = (logits * 50).softmax(0)
    onehot = F.one_hot(torch.tensor(seg.query_to_class, device=device)).T.view(len(seg.vocabulary), q, 1, 1)
    return (probs[None] * onehot.to(probs.dtype)).max(1)[0]


def run_single(protocol: str, size: int, device: str, precision: str, repeats: int, tiny: bool = False) -> dict:
    seg = build(device, precision, size, protocol, tiny)
    rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    if protocol == "official":

        def fn():
            with official_kernels():
                return official_style(seg, rgb)
    else:

        def fn():
            return seg.class_scores(rgb)

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
    peak = (
        torch.cuda.max_memory_allocated()
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    from frugalvl.windows import plan_windows

    windows = len(plan_windows(size, size, 224, 112))
    vit, total = flops_per_window(seg.clip.model.visual, seg.upsampler, commuted=protocol.endswith("commuted"))
    return {
        "protocol": protocol,
        "size": size,
        "s_per_image": float(np.median(times)),
        "peak_gib": peak / 2**30,
        "windows": windows,
        "vit_flops": windows * vit,
        "flops": windows * total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, help="fp32 (CPU default) or fp16 (CUDA default, as official)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[448])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak of the GPU (H200: 989)")
    ap.add_argument(
        "--tiny", action="store_true", help="smoke run: tiny CLIP and upsampler instead of paper dimensions"
    )
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()
    precision = args.precision or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.single:
        protocol, size = args.single.split("@")
        print(json.dumps(run_single(protocol, int(size), args.device, precision, args.repeats, args.tiny)))
        return
    rows = []
    for size in args.sizes:
        for protocol in args.protocols:
            if args.device.startswith("cuda"):
                rows.append(run_single(protocol, size, args.device, precision, args.repeats, args.tiny))
            else:  # own process: peak RSS is per process
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--single",
                        f"{protocol}@{size}",
                        "--device",
                        args.device,
                        "--precision",
                        precision,
                        "--repeats",
                        str(args.repeats),
                    ]
                    + ["--tiny"] * args.tiny,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  done {protocol} @ {size}", file=sys.stderr, flush=True)
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    model = "tiny CLIP + 32-d JBU-One" if args.tiny else "ViT-B/16 + JBU-One"
    print(f"\nSegEarth-OV, {model} (random weights), 8 queries, {precision}, {name}")
    gpu = args.device.startswith("cuda")
    print(
        f"{'size':>6} {'windows':>8} {'protocol':<18} {'s/image':>9} {'images/s':>9} {'ratio':>7} "
        f"{'peak GiB':>9} {'TFLOP/img':>10} {'%peak':>7} {'ViT %peak':>10}"
    )
    for size in args.sizes:
        base = next((r for r in rows if r["size"] == size and r["protocol"] == "official"), None)
        for r in (r for r in rows if r["size"] == size):
            speed = f"{base['s_per_image'] / r['s_per_image']:.2f}x" if base else "-"
            rate = 1e12 * args.peak_tflops * r["s_per_image"]
            frac = f"{100 * r['flops'] / rate:.2f}" if gpu else "-"
            vit = f"{100 * r['vit_flops'] / rate:.2f}" if gpu else "-"
            print(
                f"{size:>6} {r['windows']:>8} {r['protocol']:<18} {r['s_per_image']:>9.3f} {1 / r['s_per_image']:>9.2f} "
                f"{speed:>7} {r['peak_gib']:>9.2f} {r['flops'] / 1e12:>10.3f} {frac:>7} {vit:>10}"
            )


if __name__ == "__main__":
    main()
