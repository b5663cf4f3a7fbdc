"""Ways to apply JBU's per-pixel kernels (spec §2.3), timed at the official last-stage size.

``out[b,c,y,x] = Σ_p K[b,p,y,x] · src[b,c,y+i,x+j]`` for 9 windows (one 448² image), 512 channels,
224², 11×11 taps. Compares frugalvl's shift-and-accumulate with an unfold+einsum in channel chunks and,
on CUDA, the shift loop under ``torch.compile``; prints the time of each and its largest deviation.

    python bench/jbu_adaptive_conv.py [--device cuda] [--batch 9] [--channels 512]
"""

from __future__ import annotations

import argparse
import time

import torch

from frugalvl.models.jbu import adaptive_conv, adaptive_conv_unfold


def chunked_unfold(src: torch.Tensor, kernel: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    return torch.cat([adaptive_conv_unfold(src[:, c:c + chunk], kernel) for c in range(0, src.shape[1], chunk)], 1)


def shift_sum(src: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The shift loop as one expression (what a compiler can fuse into a single kernel)."""
    taps, h, w = kernel.shape[1:]
    d = int(round(taps ** 0.5))
    out = kernel[:, :1] * src[:, :, :h, :w]
    for p in range(1, taps):
        i, j = divmod(p, d)
        out = out + kernel[:, p:p + 1] * src[:, :, i:i + h, j:j + w]
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
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the shift loop")
    args = ap.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    d = 2 * args.radius + 1
    torch.manual_seed(0)
    src = torch.randn(args.batch, args.channels, args.size + d - 1, args.size + d - 1, device=args.device, dtype=dtype)
    kernel = torch.softmax(torch.randn(args.batch, d * d, args.size, args.size, device=args.device), 1).to(dtype)
    rows = []
    with torch.no_grad():
        base_t, base = timed(adaptive_conv, src, kernel)
        rows.append(("shift-and-accumulate (frugalvl)", base_t, 0.0))
        t, out = timed(chunked_unfold, src, kernel)
        rows.append(("unfold+einsum, 64-channel chunks", t, (out - base).abs().max().item()))
        if args.compile:
            t0 = time.perf_counter()
            compiled = torch.compile(shift_sum, dynamic=False)
            compiled(src, kernel)
            compile_s = time.perf_counter() - t0
            t, out = timed(compiled, src, kernel)
            rows.append((f"torch.compile shift loop (compile {compile_s:.0f} s)", t, (out - base).abs().max().item()))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\nJBU kernel application: {args.batch}×{args.channels}×{args.size}², {d}×{d} taps, {dtype}, {name}")
    print(f"{'implementation':<44} {'ms':>9} {'max |Δ|':>10}")
    for label, t, dev in rows:
        print(f"{label:<44} {1000 * t:>9.2f} {dev:>10.2e}")


if __name__ == "__main__":
    main()
