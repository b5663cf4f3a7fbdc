"""The MLLM of CoIDO's coupled training, set up for training (docs/methods/coido.md#the-mllm).

Loading (``models/llava.py``), what is trained (the vision tower is frozen; the LM + projector, or a
LoRA adapter on the LM + the projector), gradient checkpointing, and the numeric precision of the
run, which accelerate applies (``auto``: bf16 mixed precision on a GPU, fp32 on the CPU).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import UserError
from ..precision import resolve_precision
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
    model.model.vision_tower.requires_grad_(False)
    if settings.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not settings.lora:
        return model
    return add_lora(
        model, settings.lora_r, settings.lora_alpha, settings.lora_dropout, input_grads=settings.gradient_checkpointing
    )


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


def mixed_precision(settings: Any) -> str:
    """accelerate's ``mixed_precision`` for ``settings.precision`` here ("no" = fp32)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(settings.precision, device)
    if precision != "fp32" and device != "cuda":
        raise UserError(f"--precision {precision} needs a GPU here: use fp32 on CPU")
    return {"fp32": "no"}.get(precision, precision)


def make_accelerator(settings: TrainSettings) -> Any:
    """The accelerate ``Accelerator`` of a run: devices, processes, mixed precision, TF32."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    precision = mixed_precision(settings)
    if settings.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # text-only micro-batches leave the projector and the vision path unused: DDP must allow that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # cpu=True without CUDA: accelerate then sets up gloo for several CPU processes (torchrun)
    # step_scheduler_with_optimizer=False: our schedule already counts global steps, so accelerate must
    # not step it once per process
    return Accelerator(
        mixed_precision=precision,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[ddp],
        step_scheduler_with_optimizer=False,
    )
