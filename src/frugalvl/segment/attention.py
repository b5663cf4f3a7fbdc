"""The replaceable last block of the CLIP ViT (SegEarth-OV spec §1.3 and §7).

Training-free CLIP segmenters differ mainly in how the last transformer block mixes tokens. Each
mode here builds that block's attention from its own q, k, v projections:

============  =========================================================  =====================
mode          attention weights                                          source
============  =========================================================  =====================
segearth      softmax(q·qᵀ·s) + softmax(k·kᵀ·s) + softmax(v·vᵀ·s)         SegEarth-OV (default)
clearclip     softmax(q·qᵀ·s)                                            ClearCLIP
sclip         softmax(q·qᵀ·s) + softmax(k·kᵀ·s)                          SCLIP, as SegEarth-OV emulates it
maskclip      identity (each token keeps its own value)                  MaskCLIP
vanilla       softmax(q·kᵀ·s)                                            the stock attention
============  =========================================================  =====================

with ``s = head_dim^-0.5``. The output is ``out_proj(weights·v)``. Officially the residual and the
FFN of the last block are dropped (``ignore_residual=True``); ``residual=True`` keeps both, as the
original SCLIP does. The stock last block is never run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

MODES = ("segearth", "clearclip", "sclip", "maskclip", "vanilla")


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).transpose(1, 2)  # [B, heads, N, head_dim]


def attention_weights(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str) -> torch.Tensor | None:
    """``[B, heads, N, N]`` attention weights of a mode (``None`` means identity, MaskCLIP)."""
    scale = q.shape[-1] ** -0.5

    def self_attn(t: torch.Tensor) -> torch.Tensor:
        return F.softmax(t @ t.transpose(-2, -1) * scale, dim=-1)

    if mode == "segearth":
        return self_attn(q) + self_attn(k) + self_attn(v)
    if mode == "clearclip":
        return self_attn(q)
    if mode == "sclip":
        return self_attn(q) + self_attn(k)
    if mode == "vanilla":
        return F.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
    if mode == "maskclip":
        return None
    raise UserError(f"unknown attention mode {mode!r}: choose one of {', '.join(MODES)}")


def last_block(block: nn.Module, x: torch.Tensor, mode: str = "segearth", residual: bool = False) -> torch.Tensor:
    """Run the last ViT block with the attention of ``mode`` on tokens ``x`` ``[B, N, D]``."""
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention):
        raise UserError("this CLIP's last block is not a standard multi-head attention: attention modes need a plain ViT CLIP (OpenAI/open_clip ViT)")
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (_heads(t, attn.num_heads) for t in (q, k, v))
    weights = attention_weights(q, k, v, mode)
    mixed = v if weights is None else weights @ v
    b, h, n, hd = mixed.shape
    out = attn.out_proj(mixed.transpose(1, 2).reshape(b, n, h * hd))
    if not residual:
        return out
    x = x + out
    return x + block.mlp(block.ln_2(x))
