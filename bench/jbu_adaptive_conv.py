"""Ways to apply JBU's per-pixel kernels (docs/methods/simfeatup.md#applying-the-kernels-without-cuda), timed at the
official last-stage size.

``out[b,c,y,x] = Σ_p K[b,p,y,x] · src[b,c,y+i,x+j]`` for 9 windows (one 448² image), 512 channels,
224², 11×11 taps. Compares frugalvl's shift-and-accumulate (CPU: blocks spread over a thread pool) with
the same loop with one OpenMP region per op (the code before the pool), with subnormals flushed by
``torch.set_flush_denormal``, an unfold+einsum in channel chunks, on CUDA the fused Triton kernel, and
optionally (``--compile``) the shift loop under ``torch.compile``, whole and, on the CPU, in the cache-sized
blocks that ``jbu_kernel="compiled"`` runs; prints the time of each and its largest deviation.
``--upsampler CKPT --image PNG`` adds the same rows for a whole upsampler on one 224² window of a real
crop (docs/methods/jbu_kernels.md).

    python bench/jbu_adaptive_conv.py [--device cuda] [--batch 9] [--channels 512]
    python bench/jbu_adaptive_conv.py --batch 1 --upsampler ../shared/data/weights/featup_clip_jbu_stack_cocostuff.ckpt \
        --image ../shared/data/rs/potsdam_2_10_0_0_512_512.png
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from frugalvl.models import jbu
from frugalvl.models.jbu import adaptive_conv, adaptive_conv_unfold


@contextlib.contextmanager
def serial_blocks():
    """The CPU loop as it was before the thread pool: every op its own OpenMP region."""
    pooled = jbu._run_blocks
    jbu._run_blocks = lambda task, blocks: [task(b) for b in blocks]
    try:
        yield
    finally:
        jbu._run_blocks = pooled


@contextlib.contextmanager
def flush_denormal():
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def serial_and_flushed():
    with serial_blocks(), flush_denormal():
        yield


def variants(device: str) -> list[tuple[str, object]]:
    """(label, context-manager factory) for each way of running the CPU loop."""
    if device != "cpu":
        return [("", contextlib.nullcontext)]
    return [
        (" (thread pool, frugalvl)", contextlib.nullcontext),
        (", one OpenMP region per op (before)", serial_blocks),
        (", OpenMP per op + flush_denormal", serial_and_flushed),
        (" (thread pool) + flush_denormal", flush_denormal),
    ]


def timed_in(context, fn, *args, repeats: int = 5):
    with context():
        return timed(fn, *args, repeats=repeats)


def real_window(path: str, image: str, device: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A loaded upsampler, CLIP-normalised 224² guidance from the top-left of ``image``, random 14² features."""
    import cv2

    from frugalvl.models.upsampler import load_upsampler

    rgb = cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB)[:224, :224].copy()
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1) * 255
    up = load_upsampler(path).to(device)
    feat_dim = up.fixup_proj[1].weight.shape[0]
    return up, torch.randn(1, feat_dim, 14, 14, device=device), ((x - mean) / std).to(device)


def chunked_unfold(src: torch.Tensor, kernel: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    return torch.cat([adaptive_conv_unfold(src[:, c : c + chunk], kernel) for c in range(0, src.shape[1], chunk)], 1)


def shift_sum(src: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The shift loop as one expression (what a compiler can fuse into a single kernel)."""
    taps, h, w = kernel.shape[1:]
    d = int(round(taps**0.5))
    out = kernel[:, :1] * src[:, :, :h, :w]
    for p in range(1, taps):
        i, j = divmod(p, d)
        out = out + kernel[:, p : p + 1] * src[:, :, i : i + h, j : j + w]
    return out


def timed(fn, *args, repeats: int = 5) -> tuple[float, torch.Tensor]:
    out = fn(*args)
    sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    sync()
    return (time.perf_counter() - t0) / repeats, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=9)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--radius", type=int, default=5)
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of the shift loop (whole, and in blocks on the CPU)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--upsampler", help="also time a whole upsampler (checkpoint) on one real 224² window")
    ap.add_argument("--image", help="the crop whose top-left 224² window guides --upsampler")
    args = ap.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    d = 2 * args.radius + 1
    torch.manual_seed(0)
    src = torch.randn(args.batch, args.channels, args.size + d - 1, args.size + d - 1, device=args.device, dtype=dtype)
    kernel = torch.softmax(torch.randn(args.batch, d * d, args.size, args.size, device=args.device), 1).to(dtype)
    rows = []
    with torch.no_grad():
        base = None
        for label, context in variants(args.device):
            t, out = timed_in(context, adaptive_conv, src, kernel, repeats=args.repeats)
            base = out if base is None else base
            rows.append((f"shift-and-accumulate{label}", t, (out - base).abs().max().item()))
        if args.device.startswith("cuda"):
            t, out = timed(lambda s, k: adaptive_conv(s, k, backend="triton"), src, kernel, repeats=args.repeats)
            rows.append(("Triton fused kernel (--jbu-kernel triton)", t, (out - base).abs().max().item()))
        t, out = timed(chunked_unfold, src, kernel, repeats=args.repeats)
        rows.append(("unfold+einsum, 64-channel chunks", t, (out - base).abs().max().item()))
        if args.upsampler:
            up, feats, guide = real_window(args.upsampler, args.image, args.device)
            ref = None
            for label, context in variants(args.device):
                t, out = timed_in(context, up, feats, guide, repeats=1)
                ref = out if ref is None else ref
                rows.append((f"whole upsampler, 1 window{label}", t, (out - ref).abs().max().item()))
        if args.compile:
            t0 = time.perf_counter()
            compiled = torch.compile(shift_sum, dynamic=False)
            compiled(src, kernel)
            compile_s = time.perf_counter() - t0
            t, out = timed(compiled, src, kernel)
            rows.append((f"torch.compile shift loop (compile {compile_s:.0f} s)", t, (out - base).abs().max().item()))
            if not args.device.startswith("cuda"):  # what jbu_kernel="compiled" runs: compiled cache-sized blocks
                t0 = time.perf_counter()
                adaptive_conv(src, kernel, "compiled")
                compile_s = time.perf_counter() - t0
                t, out = timed(lambda s, k: adaptive_conv(s, k, "compiled"), src, kernel, repeats=args.repeats)
                label = f"compiled blocks, --jbu-kernel compiled (first call {compile_s:.0f} s)"
                rows.append((label, t, (out - base).abs().max().item()))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\nJBU kernel application: {args.batch}×{args.channels}×{args.size}², {d}×{d} taps, {dtype}, {name}")
    print(f"{'implementation':<66} {'ms':>10} {'max |Δ|':>10}")
    for label, t, dev in rows:
        print(f"{label:<66} {1000 * t:>10.2f} {dev:>10.2e}")


if __name__ == "__main__":
    main()
