"""Speed of SegEarth-OV: the official protocol next to frugalvl's default path, timed interleaved.

Real ViT-B/16 dimensions with random weights (numbers are for speed only), the Potsdam preset's 8
queries, without an upsampler (bilinear, ``--upsamplers none``) and with JBU-One (``jbu-one``). For
each image size and upsampler, the protocols:

* ``official``: the official code's work, re-stated on frugalvl's model: windows one at a time
  (batch 1); the tower sequence-first (LND), so its 11 stock blocks go through
  ``nn.MultiheadAttention``'s general path; the replaced block's attention written out as explicit
  ``softmax(q·qᵀ)…`` matrices; the stock last block then run on the real tokens and discarded; the
  JBU kernel applied by a re-implementation of FeatUp's ``AdaptiveConv`` fallback in the same dtype
  (unfold + einsum, in channel chunks); every window's logits interpolated to the window size and
  padded to full size before adding; one-hot synonym merge. PyTorch's intra-op threads, as the
  official code gets them;
* ``before``: frugalvl's default path before the CPU window workers (one window at a time on PyTorch's
  intra-op threads; the JBU's bicubic resize by ``F.interpolate``, its kernels on 32-row blocks):
  what the window workers and the JBU changes gain together;
* ``default``: frugalvl's default settings (on the CPU: windows side by side on single-threaded
  workers, :mod:`frugalvl.cpu_pool`; the stock last block never run; SDPA mixing; the cache-blocked
  shift-and-accumulate JBU kernel; on CUDA: 16 windows per pass and the Triton JBU kernel);
* ``commuted``: plus the exact upsampler reordering (``commute_upsampler=True``,
  docs/methods/simfeatup.md#commuting-the-final-convolution), with an upsampler only;
* ``compiled`` (CPU, with an upsampler): the default with ``jbu_kernel="compiled"``, the JBU's kernel
  application compiled by ``torch.compile`` (exact up to rounding; its one-off compile time, cached on disk
  by inductor, is printed and not in the table), only with ``--compiled``;
* ``bf16``: the CLIP in bfloat16 (approximate; AMX on recent Intel CPUs; the upsampler stays fp32), only with
  ``--bf16``; its label agreement is printed (random weights on a real crop: a pessimistic proxy, the
  scores of a random CLIP are nearly tied).

* ``floor`` (CPU, full size only): a bound, not a protocol: the work no exact protocol can avoid done as
  nothing but matrix products at this CPU's fastest (:class:`MatmulFloor`). Its ratio is the largest
  speed-up any exact fp32 implementation can reach over the official protocol on this machine.

With JBU-One on a CPU, the official protocol's FeatUp fallback (unfold + einsum) takes many minutes per
image: it is timed on the first window only, once, and multiplied by the number of windows
(``official×N`` in the table; scores are then checked against ``before``).

The protocols of one configuration run interleaved (official, default, ..., official, default, ...)
so that a machine shared with other jobs slows them alike; the table gives medians. The input is a
512² tile (a real crop; one scene tile at ``--tile 512``), resized to 448 and cut into 9 windows, so
the MPix/min column is the whole-scene throughput at tile 512.

    python bench/segearth_ov.py --device cpu             # the CPU table of docs/benchmarks.md
    python bench/segearth_ov.py --device cpu --bf16      # plus the approximate bf16 protocol
    python bench/segearth_ov.py --device cpu --compiled  # plus the compiled JBU kernels (needs g++)
    python bench/segearth_ov.py --tiny                   # smoke run: tiny models, seconds
    python bench/segearth_ov.py --device cuda --sizes 448 896 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PROTOCOLS = ("official", "before", "default", "commuted", "bf16", "compiled")
UPSAMPLERS = ("none", "jbu-one")
SHARED_CROP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rs" / "potsdam_2_10_0_0_512_512.png"
VOCAB = "road,parking lot;building;low vegetation;tree;car;clutter,background"


def build_clip(device: str, precision: str, tiny: bool = False):
    import open_clip

    from frugalvl.models.clip import ClipModel

    torch.manual_seed(0)
    if tiny:  # smoke runs: a 2-layer CLIP and a 32-d upsampler
        from frugalvl.testing.clip import tiny_clip

        model = tiny_clip()
    else:
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return ClipModel(
        model.to(device=device, dtype=dtype).eval(), open_clip.get_tokenizer("ViT-B-16"), "random:ViT-B-16"
    )


def build(clip, upsampler: str, long_side: int, protocol: str, tiny: bool = False):
    from frugalvl.models.jbu import JBUOne
    from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
    from frugalvl.vocab import Vocabulary

    torch.manual_seed(1)
    up = None
    if upsampler == "jbu-one":
        up = JBUOne(32 if tiny else 512).eval()
    settings = SegEarthOVSettings(
        long_side=long_side,
        window_batch=1 if protocol == "official" else None,
        commute_upsampler=protocol == "commuted",
        jbu_kernel="compiled" if protocol == "compiled" else "auto",
    )
    return SegEarthOV(clip, Vocabulary.parse(VOCAB, strip="newline"), up, settings)


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


def official_tower(visual, images: torch.Tensor, last: str = "segearth", residual: bool = False):
    """The official ``VisionTransformer.forward`` on frugalvl's model: sequence-first tokens, the 11 stock
    blocks, the replaced attention (explicit matrices), the stock last block run and its output
    discarded, then ``ln_post`` and the projection of every token."""
    from frugalvl.models.dense_clip import positional_embedding

    assert not residual, "the official default drops the last block's residual"
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    b, width, gh, gw = x.shape
    x = x.reshape(b, width, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype).expand(b, 1, width), x], dim=1)
    x = visual.ln_pre(x + positional_embedding(visual, gh, gw).to(x.dtype)).permute(1, 0, 2)  # NLD -> LND
    blocks = visual.transformer.resblocks
    for blk in blocks:  # sequence-first: nn.MultiheadAttention's general path, as in the official code
        blk.attn.batch_first = False
    try:
        for blk in blocks[:-1]:
            x = blk(x)
        last_blk = blocks[-1]
        attn = last_blk.attn
        n, bsz, dim = x.shape
        heads = attn.num_heads
        q, k, v = F.linear(last_blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.contiguous().view(-1, bsz * heads, dim // heads).transpose(0, 1) for t in (q, k, v))
        mixed = explicit_mixing(q, k, v, last)
        out = attn.out_proj(mixed.transpose(0, 1).contiguous().view(-1, bsz, dim))
        last_blk(x)  # the official loop runs the stock last block too; its output is never used
    finally:
        for blk in blocks:
            blk.attn.batch_first = True
    return visual.ln_post(out.permute(1, 0, 2)) @ visual.proj, (gh, gw)


@contextlib.contextmanager
def official_kernels():
    """Swap frugalvl's tower, fused attention and JBU kernels for the official code's."""
    from frugalvl.models import jbu
    from frugalvl.segment import segearth_ov

    saved = jbu.adaptive_conv, segearth_ov.dense_tokens
    jbu.adaptive_conv, segearth_ov.dense_tokens = featup_adaptive_conv, official_tower
    try:
        yield
    finally:
        jbu.adaptive_conv, segearth_ov.dense_tokens = saved


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


def necessary_vit_flops(visual, window: int = 224) -> float:
    """FLOPs the default protocol cannot avoid in the ViT of one window: the patch embedding, the stock
    blocks but the last, the last block's projections and its three self-attentions (no FFN, no stock
    last block), the output projection: a lower bound for any exact implementation."""
    width = visual.conv1.weight.shape[0]
    patch = visual.conv1.weight.shape[-1]
    layers = len(visual.transformer.resblocks)
    n = (window // patch) ** 2 + 1
    macs = 3 * patch * patch * width * (n - 1) + (layers - 1) * (12 * n * width**2 + 2 * n * n * width)
    macs += 4 * n * width**2 + 3 * 2 * n * n * width + n * width * visual.proj.shape[1]
    return 2.0 * macs


class MatmulFloor:
    """A lower bound on the time of any exact fp32 protocol on this CPU: the image's necessary FLOPs
    (:func:`necessary_vit_flops` plus the upsampler's) done as nothing but the matrix products of one ViT
    block on one window, with the faster of PyTorch's default kernel and oneDNN's prepacked weights (what
    ``torch.compile`` with freezing uses) for each, one single-threaded stream per intra-op thread as the
    window workers run. Every other operation of a real protocol only adds time."""

    def __init__(self, visual, flops: float) -> None:
        width = visual.conv1.weight.shape[0]
        n = (224 // visual.conv1.weight.shape[-1]) ** 2 + 1
        shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]
        self.products = [self._fastest(torch.randn(n, k), torch.randn(out, k)) for k, out in shapes]
        self.items = max(1, round(flops / (2.0 * 12 * n * width**2)))
        self.flops = self.items * 2.0 * 12 * n * width**2
        self.streams = max(1, torch.get_num_threads())

    @staticmethod
    def _fastest(x: torch.Tensor, w: torch.Tensor):
        plain = lambda: F.linear(x, w)  # noqa: E731
        candidates = [plain]
        with contextlib.suppress(Exception):  # oneDNN's prepacked weights, where PyTorch has them
            packed = torch.ops.mkldnn._reorder_linear_weight(w, x.shape[0])
            candidates.append(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""))
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return min(candidates, key=lambda f: min(_seconds(f) for _ in range(5)))
        finally:
            torch.set_num_threads(saved)

    def _block(self, _: int) -> None:
        for product in self.products:
            product()

    def __call__(self) -> None:
        from frugalvl.cpu_pool import map_in_order

        list(map_in_order(self._block, range(self.items), self.streams))


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interpolate_bicubic(source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(source, size=size, mode="bicubic", align_corners=False)


@torch.no_grad()
def before_default(seg, rgb: np.ndarray) -> torch.Tensor:
    """frugalvl's default path before the CPU window workers: one window at a time on the intra-op threads, the JBU's
    bicubic resize by ``F.interpolate`` and its kernels on 32-row blocks."""
    from frugalvl.models import jbu
    from frugalvl.segment import segearth_ov

    saved = segearth_ov.cpu_workers, jbu.bicubic, jbu._CPU_BLOCK_ROWS
    segearth_ov.cpu_workers, jbu.bicubic, jbu._CPU_BLOCK_ROWS = (lambda device, tasks: 1), _interpolate_bicubic, 32
    try:
        return seg.class_scores(rgb)
    finally:
        segearth_ov.cpu_workers, jbu.bicubic, jbu._CPU_BLOCK_ROWS = saved


@torch.no_grad()
def official_style(seg, rgb: np.ndarray, max_windows: int | None = None) -> torch.Tensor:
    """The official forward_slide + postprocess structure around the same per-window computation
    (only the first ``max_windows`` windows when given: a timing of part of the work)."""
    from frugalvl.windows import plan_windows

    device, dtype = seg.clip.device, seg.clip.dtype
    image = seg.preprocess(rgb).to(device=device, dtype=dtype)
    _, _, h, w = image.shape
    q = len(seg.vocabulary.queries)
    preds = image.new_zeros((1, q, h, w))
    count = image.new_zeros((1, 1, h, w))
    with official_kernels():
        for win in plan_windows(h, w, 224, 112)[:max_windows]:
            crop = image[:, :, win.y0 : win.y1, win.x0 : win.x1]
            logits = seg.window_logits(crop)
            logits = F.interpolate(logits, size=crop.shape[-2:], mode="bilinear")  # the official always resizes
            preds += F.pad(logits, (win.x0, w - win.x1, win.y0, h - win.y1))
            count[:, :, win.y0 : win.y1, win.x0 : win.x1] += 1
    logits = F.interpolate(preds / count, size=rgb.shape[:2], mode="bilinear")[0]
    probs = (logits * 50).softmax(0)
    onehot = F.one_hot(torch.tensor(seg.query_to_class, device=device)).T.view(len(seg.vocabulary), q, 1, 1)
    return (probs[None] * onehot.to(probs.dtype)).max(1)[0]


def load_image(path: str | None, side: int) -> tuple[np.ndarray, str]:
    """The bench image: a real crop (``--image``, else the shared Potsdam crop) or random pixels."""
    candidate = Path(path) if path else SHARED_CROP
    if candidate.is_file():
        from PIL import Image

        rgb = np.asarray(Image.open(candidate).convert("RGB"))[:side, :side]
        if rgb.shape[:2] == (side, side):
            return np.ascontiguousarray(rgb), candidate.name
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8), "random pixels"


def interleaved(fns: dict, repeats: int, device: str) -> dict[str, list[float]]:
    """Seconds per call of each function, run in turn ``repeats`` times (the caller has warmed them up)."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
        print(
            f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()),
            file=sys.stderr,
            flush=True,
        )
    return times


def configuration(args, clip, clip_bf16, upsampler: str, size: int, rgb: np.ndarray) -> list[dict]:
    """Interleaved timings of the protocols for one upsampler and working size, with exactness checks."""
    from frugalvl.windows import plan_windows

    protocols = [p for p in args.protocols if not (p == "commuted" and upsampler == "none")]
    protocols = [p for p in protocols if p != "bf16" or clip_bf16 is not None]
    cpu = not args.device.startswith("cuda")
    protocols = [p for p in protocols if p != "compiled" or (cpu and upsampler != "none")]
    segs = {p: build(clip_bf16 if p == "bf16" else clip, upsampler, size, p, args.tiny) for p in protocols}
    for twin in ("bf16", "compiled"):
        if twin in segs and upsampler == "jbu-one" and "default" in segs:  # same upsampler weights
            segs[twin].upsampler.load_state_dict(segs["default"].upsampler.state_dict())
    first = next(iter(segs.values()))
    hh, ww = first.preprocess(rgb).shape[-2:]
    windows = len(plan_windows(hh, ww, 224, 112))
    extrapolate = cpu and upsampler != "none" and "official" in segs and not args.tiny and not args.full_official
    fns = {p: (lambda s=s: s.class_scores(rgb)) for p, s in segs.items()}
    floor = None
    if cpu and not args.tiny:  # the bound on any exact fp32 protocol, timed among the protocols
        seg = segs.get("default", first)
        vit, total = flops_per_window(seg.clip.model.visual, seg.upsampler)
        floor = MatmulFloor(seg.clip.model.visual, windows * (necessary_vit_flops(seg.clip.model.visual) + total - vit))
        floor()
    if "official" in segs:
        fns["official"] = lambda s=segs["official"]: official_style(s, rgb, 1 if extrapolate else None)
    if "before" in segs:
        fns["before"] = lambda s=segs["before"]: before_default(s, rgb)
    official = fns.pop("official") if extrapolate else None
    scores, first_call = {}, {}
    for p, fn in fns.items():  # also the warm-up (the compiled protocol compiles here)
        t0 = time.perf_counter()
        scores[p] = fn().float().cpu()
        first_call[p] = time.perf_counter() - t0
    if "compiled" in first_call:
        print(f"  compiled: first image {first_call['compiled']:.1f} s (compiling or loading)", file=sys.stderr)
    times = interleaved(fns if floor is None else {**fns, "floor": floor}, args.repeats, args.device)
    if official is not None:  # one window, once: minutes on a CPU
        t0 = time.perf_counter()
        official()
        times = {"official": [windows * (time.perf_counter() - t0)], **times}
    ref = scores.get("official", scores.get("before", scores.get("default")))
    rows = []
    if floor is not None:
        rows_floor = {
            "upsampler": upsampler,
            "size": size,
            "protocol": "floor",
            "s_per_image": float(np.median(times["floor"])),
            "times": times["floor"],
            "windows": windows,
            "vit_flops": float("nan"),
            "flops": floor.flops,
            "necessary_flops": floor.flops,
            "max_diff": float("nan"),
            "labels_equal": float("nan"),
        }
    for p, s in segs.items():
        vit, total = flops_per_window(s.clip.model.visual, s.upsampler, commuted=p == "commuted")
        rows.append(
            {
                "upsampler": upsampler,
                "size": size,
                "protocol": f"official×{windows}" if p == "official" and official is not None else p,
                "s_per_image": float(np.median(times[p])),
                "times": times[p],
                "windows": windows,
                "vit_flops": windows * vit,
                "flops": windows * total,
                "necessary_flops": windows * (necessary_vit_flops(s.clip.model.visual) + total - vit),
                "max_diff": float((scores[p] - ref).abs().max()) if p in scores else float("nan"),
                "labels_equal": float((scores[p].argmax(0) == ref.argmax(0)).float().mean())
                if p in scores
                else float("nan"),
            }
        )
    if floor is not None:
        rows.append(rows_floor)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, help="fp32 (CPU default) or fp16 (CUDA default, as official)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[448], help="working sizes (long_side)")
    ap.add_argument("--input", type=int, default=512, help="side of the input tile in pixels (512: a scene tile)")
    ap.add_argument("--image", help="a real RGB image to crop the input from (default: the shared Potsdam crop)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--upsamplers", nargs="+", default=list(UPSAMPLERS), choices=UPSAMPLERS)
    ap.add_argument("--protocols", nargs="+", default=["official", "before", "default"], choices=PROTOCOLS)
    ap.add_argument(
        "--full-official", action="store_true", help="time the official protocol with JBU-One on every window"
    )
    ap.add_argument("--bf16", action="store_true", help="add the approximate bf16 protocol")
    ap.add_argument("--compiled", action="store_true", help="add the compiled JBU kernels (CPU, needs g++)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak of the GPU (H200: 989)")
    ap.add_argument(
        "--tiny", action="store_true", help="smoke run: tiny CLIP and upsampler instead of paper dimensions"
    )
    args = ap.parse_args()
    for extra in ("bf16", "compiled"):
        if getattr(args, extra) and extra not in args.protocols:
            args.protocols.append(extra)
    precision = args.precision or ("fp16" if args.device.startswith("cuda") else "fp32")
    rgb, source = load_image(args.image, args.input)
    clip = build_clip(args.device, precision, args.tiny)
    clip_bf16 = build_clip(args.device, "bf16", args.tiny) if "bf16" in args.protocols else None
    start = time.perf_counter()
    rows = []
    for upsampler in args.upsamplers:
        for size in args.sizes:
            print(f"  {upsampler} @ {size}", file=sys.stderr, flush=True)
            rows.extend(configuration(args, clip, clip_bf16, upsampler, size, rgb))
    gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    model = "tiny CLIP + 32-d JBU-One" if args.tiny else "ViT-B/16 (+ JBU-One)"
    print(f"\nSegEarth-OV, {model} (random weights), 8 queries, {precision}, {name}")
    print(f"input: {args.input}² tile of {source}; medians of {args.repeats} interleaved repeats")
    print(
        f"{'upsampler':<9} {'size':>5} {'win':>4} {'protocol':<9} {'s/image':>8} {'ratio':>7} {'MPix/min':>9} "
        f"{'max|Δp|':>9} {'labels=':>8} {'TFLOP/img':>10} {'%peak' if gpu else 'GFLOP/s':>7}"
    )
    mpix = args.input**2 / 1e6
    for r in rows:
        base = next(b for b in rows if b["size"] == r["size"] and b["upsampler"] == r["upsampler"])
        speed = f"{base['s_per_image'] / r['s_per_image']:.2f}x" if base["protocol"].startswith("official") else "-"
        rate = r["necessary_flops"] / r["s_per_image"]  # the work any exact protocol must do, per second
        frac = f"{100 * r['flops'] / (1e12 * args.peak_tflops * r['s_per_image']):.2f}" if gpu else f"{rate / 1e9:.0f}"
        diff = "-" if np.isnan(r["max_diff"]) else f"{r['max_diff']:.1e}"
        equal = "-" if np.isnan(r["labels_equal"]) else f"{100 * r['labels_equal']:.2f}%"
        print(
            f"{r['upsampler']:<9} {r['size']:>5} {r['windows']:>4} {r['protocol']:<9} {r['s_per_image']:>8.3f} "
            f"{speed:>7} {60 * mpix / r['s_per_image']:>9.2f} {diff:>9} {equal:>8} "
            f"{r['flops'] / 1e12:>10.3f} {frac:>7}"
        )
    print(
        "GFLOP/s: the work any exact protocol must do (no stock last block, no FFN in the replaced one) per second."
        " floor (CPU): that work as nothing but the ViT's matrix products at their fastest, one single-threaded"
        " stream per thread: no exact fp32 protocol is faster, so its ratio bounds every exact speed-up."
        " max|Δp|, labels=: class scores and labels against the official protocol (before where official×N). MPix/min: input pixels per minute,"
        f" the whole-scene throughput at tile {args.input}. Bench time {time.perf_counter() - start:.0f} s"
        + ("." if gpu else f", peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB.")
    )


if __name__ == "__main__":
    main()
