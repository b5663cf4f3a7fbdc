"""The MLLM of CoIDO's coupled training, set up for training (docs/methods/coido.md#the-mllm).

Loading (``models/llava.py``), what is trained (the vision tower is frozen; the LM + projector, or a
LoRA adapter on the LM + the projector) and gradient checkpointing. The accelerator (devices,
numeric precision) is :func:`.accelerate_state.make_accelerator`, shared with the LoRA fine-tuning.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .train_settings import TrainSettings

log = logging.getLogger(__name__)

# LoRA on every linear map of the LM's blocks, as LLaVA's --lora_enable
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PROJECTOR = "multi_modal_projector"


def load_mllm(settings: TrainSettings, device: str | torch.device = "cpu"):
    """The LLaVA bundle (model, tokenizer, image processor, source) named by ``settings.mllm``."""
    from ..models.llava import load_llava

    return load_llava(settings.mllm, device=device)


def prepare_mllm(model: Any, settings: TrainSettings) -> Any:
    """Freeze the vision tower; train LM + projector, or a LoRA adapter on the LM + the projector."""
    if not settings.lora:
        return freeze_vision(model, settings.gradient_checkpointing)
    return lora_mllm(
        model, settings.lora_r, settings.lora_alpha, settings.lora_dropout, settings.gradient_checkpointing
    )


def freeze_vision(model: Any, gradient_checkpointing: bool) -> Any:
    """The vision tower frozen, gradient checkpointing (non-reentrant) on when asked; ``model`` itself."""
    model.model.vision_tower.requires_grad_(False)
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def lora_mllm(model: Any, r: int, alpha: int, dropout: float, gradient_checkpointing: bool) -> Any:
    """The vision tower frozen and a LoRA adapter on the LM, the projector trained in full beside it."""
    freeze_vision(model, gradient_checkpointing)
    return add_lora(model, r, alpha, dropout, input_grads=gradient_checkpointing)


def add_lora(model: Any, r: int, alpha: int, dropout: float, input_grads: bool = False) -> Any:
    """A PEFT LoRA adapter on the LM's linear maps; the projector is trained in full beside it."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LORA_TARGETS,
        modules_to_save=[PROJECTOR],
        bias="none",
    )
    if input_grads:  # checkpointed blocks need a grad-requiring input when the embeddings are frozen
        model.enable_input_require_grads()
    return get_peft_model(model, config)
