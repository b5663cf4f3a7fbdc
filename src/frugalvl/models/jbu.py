"""SimFeatUp's joint-bilateral upsamplers (JBU-One and FeatUp's JBU-Stack), in plain PyTorch.

docs/methods/simfeatup.md#jbu-one (and the sections after it). Each stage doubles the resolution of a feature map
under the guidance of the image: a per-pixel ``d×d`` kernel (range kernel from a learned projection of the guidance
× a Gaussian spatial kernel, renormalised, then a learned fix-up) is applied to the bicubically upsampled features,
the same kernel for every channel.

The official code applies the kernel with FeatUp's compiled ``AdaptiveConv`` CUDA op. Here it is a
shift-and-accumulate over the ``d²`` offsets (docs/methods/simfeatup.md#applying-the-kernels-without-cuda): memory
O(C·H·W), no compiled extension, any device. ``JBUOne`` shares one stage module across the four ×2 stages (14→224
for ViT-B/16); ``JBUStack`` has four (``up1``..``up4``).

Checkpoints (the official Lightning layout and FeatUp's JBU-Stack) are read and written by
:mod:`frugalvl.models.upsampler` (``load_upsampler``, ``save_upsampler``).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import FieldError
from .jbu_compiled import block_sum, compiler_available

KERNEL_BACKENDS = ("auto", "triton", "torch", "compiled")

# On the CPU, working on blocks of (one sample) × rows × channels keeps the operands of all d² taps in
# cache; the arithmetic per element (and its order) is unchanged, so the result is bit-identical.
_CPU_BLOCK_ROWS, _CPU_BLOCK_CHANNELS = 8, 64  # 8 rows: 1.25 s vs 1.46 s (32 rows), one thread, 512×224²


def _blocks(t: torch.Tensor, h: int, channels: int):
    """(sample, row, channel) slices: cache-sized blocks on the CPU, the whole tensor elsewhere."""
    if t.device.type != "cpu":
        yield slice(None), slice(0, h), slice(0, channels)
        return
    for b in range(t.shape[0]):
        for c0 in range(0, channels, _CPU_BLOCK_CHANNELS):
            for y0 in range(0, h, _CPU_BLOCK_ROWS):
                yield slice(b, b + 1), slice(y0, min(y0 + _CPU_BLOCK_ROWS, h)), slice(c0, c0 + _CPU_BLOCK_CHANNELS)


def _flush_subnormals(weights: torch.Tensor) -> torch.Tensor:
    """Zero the subnormal entries of softmax weights on the CPU (no-op elsewhere).

    exp() underflows to subnormals for neighbours far below the best one (peaky range kernels, e.g. a
    large learned temperature or unnormalised guidance). They are 0 to within 2^-126, below half an ulp
    of anything they are later added to, so zeroing them leaves the upsampler's output bit-identical
    (tested on the real FeatUp checkpoint) and keeps the CPU off its slow subnormal path downstream.
    """
    if weights.device.type != "cpu" or not weights.is_floating_point():
        return weights
    return weights.masked_fill(weights < torch.finfo(weights.dtype).tiny, 0)


_POOL: ThreadPoolExecutor | None = None


def _run_blocks(task, blocks: list) -> None:
    """Run ``task(block)`` for every block; on the CPU, blocks are spread over a thread pool.

    Each block is ~d² small in-place ops. With intra-op threading every op is its own OpenMP region
    ending in a barrier, and on a busy machine (more runnable threads than cores) each barrier waits
    for a descheduled thread: measured 65–92 s instead of 7 s for one 224² JBU-One window on 2 shared
    cores (docs/methods/jbu_kernels.md). Here each pool thread runs whole blocks with single-threaded
    ops, so there is no barrier until the end. Per element the arithmetic is unchanged (bit-identical).
    ``torch.set_num_threads`` also sets the default that threads first using torch read; it is restored
    when the blocks are done.
    """
    threads = torch.get_num_threads()
    if threads == 1 or len(blocks) < 2:
        for block in blocks:
            task(block)
        return
    global _POOL
    if _POOL is None or _POOL._max_workers != threads:
        _POOL = ThreadPoolExecutor(threads, thread_name_prefix="frugalvl-jbu")

    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()  # both are thread-local

    def single_threaded(block) -> None:
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            task(block)

    try:
        list(_POOL.map(single_threaded, blocks))
    finally:
        torch.set_num_threads(threads)


def _shift_accumulate(source_padded: torch.Tensor, kernel: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """``compiled``: each block's taps summed by :func:`.jbu_compiled.block_sum` (CPU, inference only)."""
    b, taps, h, w = kernel.shape
    d = int(round(taps**0.5))
    out = torch.zeros(
        source_padded.shape[:2] + (h, w),
        dtype=torch.promote_types(source_padded.dtype, kernel.dtype),
        device=source_padded.device,
    )

    def accumulate(block) -> None:
        sample, rows, chans = block
        o, k = out[sample, chans, rows], kernel[sample, :, rows]
        src = source_padded[sample, chans, rows.start : rows.stop + d - 1]
        n = rows.stop - rows.start
        if compiled:
            o[0].copy_(block_sum(src[0], k[0]))
            return
        for p in range(taps):
            i, j = divmod(p, d)
            o.addcmul_(k[:, p : p + 1], src[:, :, i : i + n, j : j + w])

    _run_blocks(accumulate, list(_blocks(out, h, out.shape[1])))
    return out


class _AdaptiveConv(torch.autograd.Function):
    """Shift-and-accumulate with a hand-written backward.

    Autograd of the loop would keep a full padded zero tensor per tap for the source gradient;
    here each tap's gradient is added in place into one buffer, which makes training ~1.5× faster.
    """

    @staticmethod
    def forward(ctx, source_padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(source_padded, kernel)
        return _shift_accumulate(source_padded, kernel)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        source_padded, kernel = ctx.saved_tensors
        b, taps, h, w = kernel.shape
        d = int(round(taps**0.5))
        grad_src = grad_kernel = None
        if ctx.needs_input_grad[0]:
            grad_src = torch.zeros_like(source_padded)
            for p in range(taps):
                i, j = divmod(p, d)
                grad_src[:, :, i : i + h, j : j + w].addcmul_(kernel[:, p : p + 1].to(grad_out.dtype), grad_out)
        if ctx.needs_input_grad[1]:
            grad_kernel = torch.stack(
                [(grad_out * source_padded[:, :, i : i + h, j : j + w]).sum(1) for i in range(d) for j in range(d)],
                dim=1,
            ).to(kernel.dtype)
        return grad_src, grad_kernel


def resolve_kernel_backend(backend: str, device: torch.device) -> str:
    """``"triton"``, ``"torch"`` or ``"compiled"`` for a ``jbu_kernel`` choice: ``auto`` is Triton on CUDA
    when installed, else ``torch``; ``compiled`` is for the CPU and needs a C++ compiler.

    ``triton`` off CUDA is allowed only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests).
    """
    if backend not in KERNEL_BACKENDS:
        raise FieldError("jbu_kernel", f"{backend!r} is unknown: choose one of {', '.join(KERNEL_BACKENDS)}")
    if backend == "torch":
        return "torch"
    if backend == "compiled":
        if device.type != "cpu":
            raise FieldError(
                "jbu_kernel", "{jbu_kernel} compiled is for the CPU: use {jbu_kernel} auto or triton on a GPU"
            )
        if not compiler_available():
            raise FieldError(
                "jbu_kernel",
                "{jbu_kernel} compiled needs a C++ compiler and Python's headers (apt-get install g++ "
                "python3-dev, or name a compiler in CXX), or use {jbu_kernel} torch",
            )
        return "compiled"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        if backend == "triton":
            raise FieldError(
                "jbu_kernel", "{jbu_kernel} triton needs a CUDA device: use {jbu_kernel} auto or torch on this machine"
            )
        return "torch"
    try:
        import triton  # noqa: F401
    except ImportError:
        if backend == "triton":
            raise FieldError(
                "jbu_kernel",
                "{jbu_kernel} triton needs the 'triton' package: pip install triton, or use {jbu_kernel} torch",
            ) from None
        return "torch"
    return "triton"


def adaptive_conv(source_padded: torch.Tensor, kernel: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """``out[b,c,y,x] = Σ_{i,j} kernel[b,i·d+j,y,x] · source_padded[b,c,y+i,x+j]``.

    ``source_padded``: ``[B, C, H+d-1, W+d-1]``; ``kernel``: ``[B, d², H, W]``. Shift-and-accumulate
    over the offsets, so no ``C×d²×H×W`` tensor is ever built (in either direction). ``backend``
    (``auto``/``triton``/``torch``/``compiled``) picks the fused Triton kernels of :mod:`.jbu_triton`
    or, on the CPU, the blocks compiled by :mod:`.jbu_compiled` instead.
    """
    chosen = resolve_kernel_backend(backend, source_padded.device)
    if chosen == "triton":
        from .jbu_triton import adaptive_conv_triton

        return adaptive_conv_triton(source_padded, kernel)
    if torch.is_grad_enabled() and (source_padded.requires_grad or kernel.requires_grad):
        return _AdaptiveConv.apply(source_padded, kernel)
    return _shift_accumulate(source_padded, kernel, compiled=chosen == "compiled")


def adaptive_conv_unfold(source_padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The same as :func:`adaptive_conv` with ``unfold``: simple, but O(C·d²·H·W) memory. For tests."""
    b, taps, h, w = kernel.shape
    d = int(round(taps**0.5))
    c = source_padded.shape[1]
    patches = F.unfold(source_padded, d).view(b, c, taps, h, w)
    return torch.einsum("bcphw,bphw->bchw", patches, kernel)


@functools.lru_cache(maxsize=64)
def _bicubic_matrix(n_in: int, n_out: int, dtype: torch.dtype) -> torch.Tensor:
    """``[n_out, n_in]``: the weights 1-D bicubic resizing (``align_corners=False``, borders clamped) gives
    each input sample, read off PyTorch's own kernel applied to impulses (a size-preserving axis is the
    identity there, so each column holds one impulse's response)."""
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor: usable by autograd later (training)
        eye = torch.eye(n_in, dtype=dtype).view(1, 1, n_in, n_in)
        return F.interpolate(eye, size=(n_out, n_in), mode="bicubic", align_corners=False)[0, 0].contiguous()


def bicubic(source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(source, size, mode="bicubic", align_corners=False)``.

    PyTorch's bicubic resize is separable (row weights × column weights), so on the CPU it runs as two
    matrix products with those weights: 3-4× faster for the JBU's 512-channel maps, equal up to the
    order of the float sums (≤ 1e-6 on unit-scale features). Elsewhere, and for half types, the
    plain call.
    """
    if source.device.type != "cpu" or source.dtype not in (torch.float32, torch.float64) or source.dim() != 4:
        return F.interpolate(source, size=size, mode="bicubic", align_corners=False)
    rows = _bicubic_matrix(source.shape[-2], size[0], source.dtype)
    cols = _bicubic_matrix(source.shape[-1], size[1], source.dtype)
    return torch.matmul(rows, source) @ cols.T


class JBULearnedRange(nn.Module):
    """One ×2 joint-bilateral upsampling stage with a learned range kernel (docs/methods/simfeatup.md#jbu-one,
    steps 1–7)."""

    def __init__(self, guidance_dim: int = 3, key_dim: int = 32, radius: int = 5, kernel_backend: str = "auto") -> None:
        super().__init__()
        self.kernel_backend = kernel_backend  # how the kernel is applied: auto | triton | torch | compiled
        self.radius = radius
        self.diameter = 2 * radius + 1
        self.key_dim = key_dim
        taps = self.diameter**2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        # Sequential indices 0 and 3 match the official checkpoints (conv, GELU, dropout, conv).
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(key_dim, key_dim, 1)
        )
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(guidance_dim + taps, taps, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(taps, taps, 1)
        )

    def range_kernel(self, guidance: torch.Tensor) -> torch.Tensor:
        """Softmax over the ``d²`` neighbours of ``temperature·⟨key_neighbour, key_centre⟩``: ``[B, d², H, W]``."""
        h, w = guidance.shape[-2:]
        keys = self.range_proj(guidance)
        padded = F.pad(keys, [self.radius] * 4, mode="reflect")
        # One dot product per offset, in unfold order (p = i·d + j); avoids a key_dim×d²×H×W tensor.
        d = self.diameter
        logits = keys.new_empty(keys.shape[0], d * d, h, w)

        def dots(block) -> None:
            sample, rows, _ = block
            n = rows.stop - rows.start
            centre, near = keys[sample, :, rows], padded[sample, :, rows.start : rows.stop + d - 1]
            for p in range(d * d):
                i, j = divmod(p, d)
                logits[sample, p, rows] = (near[:, :, i : i + n, j : j + w] * centre).sum(1)

        blocks = list(_blocks(keys, h, 1))
        if torch.is_grad_enabled() and keys.requires_grad:  # autograd records the writes: one thread
            for block in blocks:
                dots(block)
        else:
            _run_blocks(dots, blocks)
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        return _flush_subnormals(F.softmax(temperature * logits, dim=1))

    def spatial_kernel(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Gaussian over a ``d×d`` grid on [-1, 1]², flattened row by row: ``[1, d², 1, 1]``."""
        coords = torch.linspace(-1, 1, self.diameter, device=device, dtype=dtype)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        sq = (yy.square() + xx.square()).reshape(1, -1, 1, 1)
        return torch.exp(-sq / (2 * self.sigma_spatial.to(dtype) ** 2))

    def kernel(self, guidance: torch.Tensor) -> torch.Tensor:
        """The per-pixel kernel ``[B, d², H, W]`` (#jbu-one steps 2–5); it depends on the guidance only."""
        k = self.range_kernel(guidance) * self.spatial_kernel(guidance.device, guidance.dtype)
        k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
        # The fix-up is added without renormalising, as the official code does.
        return k + 0.1 * self.fixup_proj(torch.cat([k, guidance], dim=1))

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Upsample ``source`` ``[B, C, h, w]`` to the guidance size ``[B, 3, H, W]``."""
        h, w = guidance.shape[-2:]
        kernel = self.kernel(guidance)
        hr = F.pad(bicubic(source, (h, w)), [self.radius] * 4, mode="reflect")
        return adaptive_conv(hr, kernel.to(hr.dtype), self.kernel_backend)


class _JBUUpsampler(nn.Module):
    """Four ×2 stages guided by the image pooled to each size, then ``x + 0.1·Conv1×1(x)``."""

    stage_names: tuple[str, ...] = ()

    def __init__(self, feat_dim: int = 512) -> None:
        super().__init__()
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(feat_dim, feat_dim, 1))

    def set_kernel_backend(self, backend: str) -> _JBUUpsampler:
        """Apply the kernels with ``auto`` (Triton on CUDA), ``triton``, ``torch`` or ``compiled`` (CPU) (the
        ``jbu_kernel`` setting)."""
        if backend not in KERNEL_BACKENDS:
            raise FieldError("jbu_kernel", f"{backend!r} is unknown: choose one of {', '.join(KERNEL_BACKENDS)}")
        for stage in self.stages():
            stage.kernel_backend = backend
        return self

    def stages(self) -> list[JBULearnedRange]:
        return [getattr(self, name) for name in self.stage_names]

    def upsample_chain(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """The four JBU stages without the final 1×1 conv; linear in ``source``."""
        x = source
        for stage in self.stages():
            h, w = x.shape[-2:]
            x = stage(x, F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w)))
        return x

    @property
    def feature_dim(self) -> int:
        """Width of the features this upsampler works on (its final 1×1 conv's channels)."""
        return int(self.fixup_proj[1].weight.shape[0])

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        x = self.upsample_chain(source, guidance)
        return x + 0.1 * self.fixup_proj(x)

    def forward_commuted(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Exact reordering (docs/methods/simfeatup.md#commuting-the-final-convolution), eval mode only: apply
        ``(I + 0.1·W)`` at low resolution.

        The chain is linear in the source and its kernels ignore the source, so the 1×1 conv
        commutes with it; only the bias must be added after upsampling (the kernels do not
        preserve constants). Saves the full-resolution 1×1 conv, about half the FLOPs.
        """
        conv = self.fixup_proj[1]
        weight = conv.weight[:, :, 0, 0]
        mixed = source + 0.1 * torch.einsum("oc,bchw->bohw", weight.to(source.dtype), source)
        x = self.upsample_chain(mixed, guidance)
        return x + 0.1 * conv.bias.to(x.dtype).view(1, -1, 1, 1)


class JBUOne(_JBUUpsampler):
    """SimFeatUp's JBU-One: one shared 11×11 stage (radius 5) used four times (#jbu-one)."""

    stage_names = ("up", "up", "up", "up")

    def __init__(self, feat_dim: int = 512, radius: int = 5) -> None:
        super().__init__(feat_dim)
        self.up = JBULearnedRange(3, 32, radius)


class JBUStack(_JBUUpsampler):
    """FeatUp's JBU-Stack: four separate 7×7 stages (radius 3), ``up1``..``up4``
    (docs/methods/simfeatup.md#jbu-stack)."""

    stage_names = ("up1", "up2", "up3", "up4")

    def __init__(self, feat_dim: int = 512, radius: int = 3) -> None:
        super().__init__(feat_dim)
        for name in self.stage_names:
            setattr(self, name, JBULearnedRange(3, 32, radius))
