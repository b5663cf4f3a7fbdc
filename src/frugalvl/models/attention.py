"""The replaceable last block of the CLIP ViT (docs/methods/segearth_ov.md#the-last-block, #attention-modes).

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
original SCLIP does. The stock last block is never run. The mixing runs through
``scaled_dot_product_attention`` (:func:`mix_tokens`), so fused attention kernels apply; the rest of
the tower already does (open_clip calls ``nn.MultiheadAttention`` with ``need_weights=False``).
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


# The (query, key) pairs whose softmax weights are summed; every mode's value is ``v``.
_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "segearth": (("q", "q"), ("k", "k"), ("v", "v")),
    "clearclip": (("q", "q"),),
    "sclip": (("q", "q"), ("k", "k")),
    "vanilla": (("q", "k"),),
}


def mix_tokens(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str) -> torch.Tensor:
    """``weights·v`` of a mode, ``[B, heads, N, head_dim]``, through ``scaled_dot_product_attention``.

    Each softmax term is one SDPA call with ``scale = head_dim^-0.5`` (its default); SegEarth-OV's three
    terms run as one call on the queries stacked along the batch, so flash/efficient kernels apply and
    no ``N×N`` matrix is kept. Equal to ``attention_weights(...) @ v`` up to rounding.
    """
    if mode == "maskclip":
        return v
    if mode not in _PAIRS:
        raise UserError(f"unknown attention mode {mode!r}: choose one of {', '.join(MODES)}")
    named = {"q": q, "k": k, "v": v}
    pairs = _PAIRS[mode]
    if len(pairs) == 1:
        a, b = pairs[0]
        return F.scaled_dot_product_attention(named[a], named[b], v)
    queries = torch.cat([named[a] for a, _ in pairs])  # [T·B, heads, N, hd]; keys equal queries here
    out = F.scaled_dot_product_attention(queries, queries, v.repeat(len(pairs), 1, 1, 1))
    return out.view(len(pairs), *v.shape).sum(0)


def last_block(block: nn.Module, x: torch.Tensor, mode: str = "segearth", residual: bool = False) -> torch.Tensor:
    """Run the last ViT block with the attention of ``mode`` on tokens ``x`` ``[B, N, D]``."""
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention):
        raise UserError(
            "this CLIP's last block is not a standard multi-head attention: attention modes need a plain ViT CLIP (OpenAI/open_clip ViT)"
        )
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (_heads(t, attn.num_heads) for t in (q, k, v))
    mixed = mix_tokens(q, k, v, mode)
    b, h, n, hd = mixed.shape
    out = attn.out_proj(mixed.transpose(1, 2).reshape(b, n, h * hd))
    if not residual:
        return out
    x = x + out
    return x + block.mlp(block.ln_2(x))
