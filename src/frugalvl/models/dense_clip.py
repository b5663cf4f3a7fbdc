"""Dense features from a CLIP ViT: every patch token, with the last block replaced or skipped.

Shared by SegEarth-OV's segmenter (the last block replaced by an attention mode,
docs/methods/segearth_ov.md#the-last-block) and SimFeatUp training (the official featurizer skips the last block,
docs/methods/simfeatup.md#featurizer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .attention import last_block


def positional_embedding(visual: nn.Module, grid_h: int, grid_w: int) -> torch.Tensor:
    """The ViT's positional embedding for a ``grid_h × grid_w`` token grid (plus CLS).

    Unchanged for the native square grid; otherwise bicubically resized by a scale factor nudged by
    +0.1, the recipe (from DINO) that the official code uses.
    """
    pos = visual.positional_embedding
    n = pos.shape[0] - 1
    side = int(round(n**0.5))
    if grid_h * grid_w == n and grid_h == grid_w:
        return pos
    patch = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch.float(), scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side), mode="bicubic")
    patch = patch.to(pos.dtype).permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)
    return torch.cat([pos[:1], patch])


def dense_tokens(
    visual: nn.Module, images: torch.Tensor, last: str = "segearth", residual: bool = False
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Projected tokens ``[B, 1 + h·w, D]`` (CLS first) and the token grid ``(h, w)``.

    ``last`` is an attention mode of :mod:`.attention` for the last block, or ``"skip"`` to drop the
    last block altogether. The stock last block is never run.
    """
    if not getattr(visual.transformer, "batch_first", True):
        raise UserError("this CLIP's transformer is not batch-first; use a current open_clip model")
    tokens = visual.conv1(images.to(visual.conv1.weight.dtype))
    b, width, gh, gw = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(tokens.dtype).expand(b, 1, width)
    tokens = torch.cat([cls, tokens], dim=1) + positional_embedding(visual, gh, gw).to(tokens.dtype)
    tokens = visual.ln_pre(tokens)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        tokens = block(tokens)
    if last != "skip":
        tokens = last_block(blocks[-1], tokens, last, residual)
    return visual.ln_post(tokens) @ visual.proj, (gh, gw)
