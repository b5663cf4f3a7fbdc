"""The model being fine-tuned: frozen base + LoRA on the LM + the projector in full, its optimiser
groups and learning-rate schedule.

LLaVA-1.5's recipe: LoRA r = 128, α = 256, dropout 0.05 on every linear map of the LM's blocks at
lr 2e-4; the ``mlp2x_gelu`` projector trained in full at 2e-5; the CLIP ViT-L/14-336 vision tower
frozen; AdamW (no weight decay on biases and norms); cosine schedule with warm-up.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ...select.mllm import PROJECTOR
from .settings import FinetuneSettings

log = logging.getLogger(__name__)

# LLaVA-1.5's base: what the recipe expects of the base model (checked, not enforced: tests use a tiny model)
RECIPE_VISION_PX = 336
RECIPE_PROJECTOR = "mlp2x_gelu"


def build_model(llava: Any, settings: FinetuneSettings) -> Any:
    """Frozen base (vision tower, LM, embeddings, head) + LoRA on the LM + the projector in full."""
    from ...select.mllm import lora_mllm

    cfg = llava.model.config
    vision = getattr(cfg.vision_config, "image_size", None)
    if vision != RECIPE_VISION_PX:
        log.warning(
            "the recipe uses a %d-px CLIP (clip-vit-large-patch14-336); this model's vision tower takes %s px",
            RECIPE_VISION_PX,
            vision,
        )
    if getattr(cfg, "projector_hidden_act", "gelu") != "gelu":
        log.warning(
            "the recipe uses the %s projector (Linear, GELU, Linear); this one has %s",
            RECIPE_PROJECTOR,
            cfg.projector_hidden_act,
        )
    llava.model.requires_grad_(False)
    return lora_mllm(
        llava.model, settings.lora_r, settings.lora_alpha, settings.lora_dropout, settings.gradient_checkpointing
    )


def param_groups(model: Any, settings: FinetuneSettings) -> list[dict[str, Any]]:
    """LoRA weights at ``lr``, the projector at ``projector_lr``; no decay on biases and norms."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((PROJECTOR in name, p.ndim >= 2), []).append(p)
    out = []
    for (projector, matrix), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": settings.projector_lr if projector else settings.lr,
                "weight_decay": settings.weight_decay if matrix else 0.0,
                "name": ("projector" if projector else "lora") + ("" if matrix else "_no_decay"),
            }
        )
    return out


def projector_lr(optimizer: Any, lrs: list[float]) -> float | None:
    """The projector's learning rate among the groups' ``lrs`` (None without a projector group)."""
    names = [g.get("name", "") for g in optimizer.param_groups]
    for name, lr in zip(names, lrs):
        if name.startswith("projector"):
            return lr
    return None


def cosine_schedule(optimizer: Any, total: int, warmup_ratio: float) -> Any:
    """Linear warm-up over ``ceil(warmup_ratio × total)`` steps, then cosine decay to 0 at ``total``."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total), total)


def base_dtype_for(accelerator: Any) -> Any:
    """The frozen base in the mixed-precision dtype on a GPU (as LLaVA loads it), fp32 otherwise."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision))


def trainable_in_fp32(model: Any) -> None:
    """Adapter and projector weights in fp32 (AdamW state and updates in full precision); autocast
    runs the forward pass in the mixed dtype."""
    import torch

    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
