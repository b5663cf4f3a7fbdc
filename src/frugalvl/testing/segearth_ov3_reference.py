"""The official SegEarth-OV3 schedule, kept as the reference for tests and the benchmark.

One prompt at a time, its text re-encoded, transformers' full ``Sam3Model.forward`` at batch 1 and a
Python loop over the kept instances: what the official code does per view. frugalvl's batched path
(:class:`frugalvl.segment.segearth_ov3.SegEarthOV3`) must give the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sam3 import Sam3Bundle
from ..precision import autocast
from ..segment.segearth_ov3 import SegEarthOV3Settings


@torch.no_grad()
def official_style_view_scores(
    sam3: Sam3Bundle, view: np.ndarray, queries: Sequence[str], settings: SegEarthOV3Settings = SegEarthOV3Settings()
) -> torch.Tensor:
    """``[Q, h, w]`` the way the official code schedules it: one prompt at a time, its text re-encoded,
    transformers' full ``Sam3Model.forward`` at batch 1, and a Python loop over kept instances."""
    from PIL import Image

    model: Any = sam3.model
    device = sam3.device
    processor: Any = sam3.processor
    size = (view.shape[0], view.shape[1])
    out = torch.zeros(len(queries), *size, device=device)
    with autocast(device, settings.precision):
        pixels = processor(images=Image.fromarray(view), return_tensors="pt")["pixel_values"]
        vision = model.get_vision_features(pixel_values=pixels.to(device, sam3.dtype))
        for q, word in enumerate(queries):
            text = processor(text=[word], return_tensors="pt").to(device)
            result = model(vision_embeds=vision, input_ids=text["input_ids"], attention_mask=text["attention_mask"])
            presence = result.presence_logits[0, 0].float().sigmoid()
            scores = result.pred_logits[0].float().sigmoid() * presence
            if settings.use_instances:
                for i in (scores > settings.confidence_threshold).nonzero()[:, 0].tolist():
                    mask = F.interpolate(
                        result.pred_masks[0, i][None, None].float(), size=size, mode="bilinear", align_corners=False
                    )[0, 0].sigmoid()
                    out[q] = torch.max(out[q], mask * scores[i])
            if settings.use_semantic:
                semantic = F.interpolate(result.semantic_seg.float(), size=size, mode="bilinear", align_corners=False)[
                    0, 0
                ].sigmoid()
                out[q] = torch.max(out[q], semantic)
            if settings.use_presence:
                out[q] = out[q] * presence
    return out
