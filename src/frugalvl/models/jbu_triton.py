"""JBU's kernel application as fused Triton kernels, forward and backward
(docs/methods/simfeatup.md#applying-the-kernels-without-cuda).

``out[b,c,y,x] = Σ_{i,j} K[b,i·d+j,y,x] · src[b,c,y+i,x+j]`` (``src`` reflect-padded by ``r``,
``d = 2r+1``), the operation FeatUp's compiled ``AdaptiveConv`` CUDA op performs. Each program
holds a ``BLOCK_C × BLOCK_P`` tile of the output (channels × flattened pixels) in registers and
loops over the ``d²`` taps, reading the per-pixel weight once per channel tile and the shifted
source from cache; nothing of size ``C×d²×H×W`` or extra ``d²×H×W`` is written to global memory.
Accumulation is in float32 whatever the input dtype.

Backward (what ``train-upsampler`` needs), both without atomics:

* ``∂src[b,c,y',x'] = Σ_{i,j} K[b,i·d+j,y'-i,x'-j] · g[b,c,y'-i,x'-j]`` over the taps whose output
  pixel lies inside the image: a gather over the padded grid;
* ``∂K[b,p,y,x] = Σ_c g[b,c,y,x] · src[b,c,y+i,x+j]``: one program per (pixel tile, tap), looping over
  channel tiles.

The per-pixel kernel ``K`` itself (range × spatial, renormalised, plus the learned fix-up MLP that needs
all ``d²`` values of a pixel) is computed by :class:`frugalvl.models.jbu.JBULearnedRange` in PyTorch.

On the CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is
imported), which the tests use on tiny shapes; the PyTorch shift-and-accumulate stays the CPU path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_C, _BLOCK_P = 32, 64


@triton.jit
def _forward_kernel(
    src_ptr, k_ptr, out_ptr, C, H, W, HP, WP, D: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr
):
    pid_p, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    pix = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask, cmask = pix < H * W, ch < C
    y, x = pix // W, pix % W
    src_base = src_ptr + b * C * HP * WP + ch[:, None].to(tl.int64) * HP * WP
    k_base = k_ptr + b * D * D * H * W + pix
    mask2 = cmask[:, None] & pmask[None, :]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for i in range(D):
        for j in range(D):
            kv = tl.load(k_base + (i * D + j) * H * W, mask=pmask, other=0.0).to(tl.float32)
            sv = tl.load(src_base + ((y + i) * WP + x + j)[None, :], mask=mask2, other=0.0).to(tl.float32)
            acc += sv * kv[None, :]
    out = out_ptr + b * C * H * W + ch[:, None].to(tl.int64) * H * W + pix[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _grad_source_kernel(
    g_ptr, k_ptr, gs_ptr, C, H, W, HP, WP, D: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr
):
    pid_p, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    pix = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # over the padded grid
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask, cmask = pix < HP * WP, ch < C
    yp, xp = pix // WP, pix % WP
    g_base = g_ptr + b * C * H * W + ch[:, None].to(tl.int64) * H * W
    k_base = k_ptr + b * D * D * H * W
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for i in range(D):
        for j in range(D):
            yy, xx = yp - i, xp - j
            valid = pmask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            offs = tl.where(valid, yy * W + xx, 0)
            kv = tl.load(k_base + (i * D + j) * H * W + offs, mask=valid, other=0.0).to(tl.float32)
            gv = tl.load(g_base + offs[None, :], mask=cmask[:, None] & valid[None, :], other=0.0).to(tl.float32)
            acc += gv * kv[None, :]
    out = gs_ptr + b * C * HP * WP + ch[:, None].to(tl.int64) * HP * WP + pix[None, :]
    tl.store(out, acc.to(gs_ptr.dtype.element_ty), mask=cmask[:, None] & pmask[None, :])


@triton.jit
def _grad_kernel_kernel(
    g_ptr, src_ptr, gk_ptr, C, H, W, HP, WP, D: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr
):
    pid_p, tap, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    i, j = tap // D, tap % D
    pix = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pix < H * W
    y, x = pix // W, pix % W
    shifted = (y + i) * WP + x + j
    acc = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        mask2 = (ch < C)[:, None] & pmask[None, :]
        chl = ch[:, None].to(tl.int64)
        gv = tl.load(g_ptr + b * C * H * W + chl * H * W + pix[None, :], mask=mask2, other=0.0).to(tl.float32)
        sv = tl.load(src_ptr + b * C * HP * WP + chl * HP * WP + shifted[None, :], mask=mask2, other=0.0)
        acc += tl.sum(gv * sv.to(tl.float32), axis=0)
    out = gk_ptr + b * D * D * H * W + tap * H * W + pix
    tl.store(out, acc.to(gk_ptr.dtype.element_ty), mask=pmask)


def _dims(source_padded: torch.Tensor, kernel: torch.Tensor) -> tuple[int, int, int, int, int, int, int]:
    b, taps, h, w = kernel.shape
    d = int(round(taps**0.5))
    c, hp, wp = source_padded.shape[1:]
    if d * d != taps or (hp, wp) != (h + d - 1, w + d - 1) or source_padded.shape[0] != b:
        raise ValueError(
            f"adaptive conv shapes do not match: source {tuple(source_padded.shape)}, kernel {tuple(kernel.shape)}"
        )
    return b, c, h, w, hp, wp, d


def forward(source_padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The fused kernel application, no autograd: ``[B, C, H, W]`` in ``promote(src, kernel)`` dtype."""
    b, c, h, w, hp, wp, d = _dims(source_padded, kernel)
    src, k = source_padded.contiguous(), kernel.contiguous()
    out = src.new_empty((b, c, h, w), dtype=torch.promote_types(src.dtype, k.dtype))
    grid = (triton.cdiv(h * w, _BLOCK_P), triton.cdiv(c, _BLOCK_C), b)
    _forward_kernel[grid](src, k, out, c, h, w, hp, wp, D=d, BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P)
    return out


def grad_source(
    grad_out: torch.Tensor, kernel: torch.Tensor, source_shape: torch.Size, dtype: torch.dtype
) -> torch.Tensor:
    """``∂L/∂source_padded`` for an output gradient ``grad_out`` ``[B, C, H, W]``."""
    b, c, hp, wp = source_shape
    h, w = grad_out.shape[-2:]
    d = hp - h + 1
    gs = grad_out.new_empty((b, c, hp, wp), dtype=dtype)
    grid = (triton.cdiv(hp * wp, _BLOCK_P), triton.cdiv(c, _BLOCK_C), b)
    _grad_source_kernel[grid](
        grad_out.contiguous(), kernel.contiguous(), gs, c, h, w, hp, wp, D=d, BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P
    )
    return gs


def grad_kernel(grad_out: torch.Tensor, source_padded: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``∂L/∂kernel`` ``[B, d², H, W]`` for an output gradient ``grad_out``."""
    b, c, hp, wp = source_padded.shape
    h, w = grad_out.shape[-2:]
    d = hp - h + 1
    gk = grad_out.new_empty((b, d * d, h, w), dtype=dtype)
    grid = (triton.cdiv(h * w, _BLOCK_P), d * d, b)
    _grad_kernel_kernel[grid](
        grad_out.contiguous(), source_padded.contiguous(), gk, c, h, w, hp, wp, D=d, BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P
    )
    return gk


class AdaptiveConvTriton(torch.autograd.Function):
    """Autograd wrapper: fused forward, gather-form source gradient, channel-reduced kernel gradient."""

    @staticmethod
    def forward(ctx, source_padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(source_padded, kernel)
        return forward(source_padded, kernel)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        source_padded, kernel = ctx.saved_tensors
        grad_src = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_src = grad_source(grad_out, kernel, source_padded.shape, source_padded.dtype)
        if ctx.needs_input_grad[1]:
            grad_k = grad_kernel(grad_out, source_padded, kernel.dtype)
        return grad_src, grad_k


def adaptive_conv_triton(source_padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`frugalvl.models.jbu.adaptive_conv` through the fused Triton kernels (differentiable)."""
    if torch.is_grad_enabled() and (source_padded.requires_grad or kernel.requires_grad):
        return AdaptiveConvTriton.apply(source_padded, kernel)
    return forward(source_padded, kernel)
