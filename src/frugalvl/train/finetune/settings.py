"""Settings of the LLaVA-1.5 LoRA fine-tuning, with ``finetune_lora.sh``'s values as defaults.

No torch here: the command line builds its options from these fields without loading a model.
Each field documents itself (:func:`frugalvl.settings.option`); ranges and choices are checked when
the settings are made (``ValueError`` naming the field); what needs the file system (the base
model's paths, a DeepSpeed file) is checked by :func:`check_settings` before a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import UserError
from ...precision import PRECISIONS
from ...settings import option

ASPECT_RATIOS = ("pad", "resize")  # LLaVA-1.5: pad to a square with the mean colour


@dataclass(frozen=True)
class FinetuneSettings:
    """LLaVA-1.5 LoRA fine-tuning (docs/methods/coido_finetune.md#recipe-and-where-each-number-comes-from);
    defaults = ``finetune_lora.sh``."""

    mllm: str = option(
        "",
        "base LLaVA: llava-hf folder, hub id, or lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR "
        "(the paper's start)",
        cli=False,  # a required option, added by the command itself
    )
    image_root: str | None = option(
        None,
        "folder the records' 'image' paths are relative to (images inside Parquet, Arrow or tar need none); "
        "none: the folder holding the subset",
    )
    lora_r: int = option(128, "LoRA rank")
    lora_alpha: int = option(256, "LoRA scale α")
    lora_dropout: float = option(0.05, "dropout on the LoRA input, from 0 to below 1")
    lr: float = option(2e-4, "LoRA learning rate")
    projector_lr: float = option(2e-5, "projector learning rate (mm_projector_lr)")
    weight_decay: float = option(0.0, "AdamW weight decay of the weight matrices")
    warmup_ratio: float = option(0.03, "share of the steps spent warming up the learning rate")
    epochs: int = option(1, "passes over the subset")
    global_batch: int = option(128, "effective batch = per-device batch × accumulation × processes")
    batch_size: int = option(16, "samples per device and micro-batch")
    max_grad_norm: float = option(1.0, "gradient-norm clipping; 0 disables it")
    max_length: int = option(2048, "tokens per prompt at most")
    image_aspect_ratio: str = option(
        "pad", "pad images to a square (mean colour) or resize them", choices=ASPECT_RATIOS
    )
    group_by_modality: bool = option(True, "mix image and text-only samples in micro-batches (LLaVA keeps them apart)")
    precision: str = option("auto", "auto = bf16 on a GPU, fp32 on the CPU", choices=PRECISIONS)
    tf32: bool = option(True, "no TF32 matrix products on the GPU")
    gradient_checkpointing: bool = option(True, "no gradient checkpointing (faster, more memory)")
    deepspeed: str | None = option(None, "zero2 | zero3 (configs shipped with frugalvl) | a DeepSpeed JSON file")
    seed: int = option(42, "seed of the LoRA initialisation, dropout and data order")
    save_steps: int = option(500, "checkpoint every N optimiser steps; 0: only at the end")
    keep_checkpoints: int = option(1, "newest checkpoints kept; 0: all")
    num_workers: int = option(2, "image-loading processes")
    progress: bool = option(True, "no progress bar")

    def __post_init__(self) -> None:
        _check_ranges(self)


_AT_LEAST_1 = ("lora_r", "lora_alpha", "epochs", "global_batch", "batch_size", "max_length")
_AT_LEAST_0 = ("save_steps", "keep_checkpoints", "num_workers")


def _check_ranges(s: FinetuneSettings) -> None:
    """Ranges and choices; each message starts with the field's name."""
    for name in _AT_LEAST_1:
        if getattr(s, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(s, name)}")
    for name in _AT_LEAST_0:
        if getattr(s, name) < 0:
            raise ValueError(f"{name} must be 0 or more, got {getattr(s, name)}")
    for name in ("lr", "projector_lr"):
        if not (getattr(s, name) > 0 and math.isfinite(getattr(s, name))):
            raise ValueError(f"{name} must be a finite number > 0, got {getattr(s, name)}")
    for name in ("weight_decay", "max_grad_norm"):
        if not (getattr(s, name) >= 0 and math.isfinite(getattr(s, name))):
            raise ValueError(f"{name} must be a finite number >= 0, got {getattr(s, name)}")
    if not 0 <= s.warmup_ratio <= 1:  # nan fails too
        raise ValueError(f"warmup_ratio must be in [0, 1], got {s.warmup_ratio}")
    if not 0 <= s.lora_dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {s.lora_dropout}")
    if s.precision not in PRECISIONS:
        raise ValueError(f"precision {s.precision!r} is unknown: choose one of {', '.join(PRECISIONS)}")
    if s.image_aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"image_aspect_ratio {s.image_aspect_ratio!r}: choose one of {', '.join(ASPECT_RATIOS)}")


# Settings that do not change the result: a checkpoint made under other values still resumes.
RESUME_FREE = frozenset({"save_steps", "keep_checkpoints", "num_workers", "progress", "gradient_checkpointing"})


def result_key(settings: FinetuneSettings, world: int) -> dict[str, Any]:
    """What decides the result: the settings (less the resume-free ones) and the number of processes."""
    key = {k: v for k, v in asdict(settings).items() if k not in RESUME_FREE}
    key["world"] = world
    return key


def grad_accum(settings: FinetuneSettings, world: int) -> int:
    """Accumulation steps giving the effective batch; one line when it does not divide."""
    per_step = settings.batch_size * world
    if settings.global_batch % per_step:
        raise UserError(
            f"global_batch {settings.global_batch} is not a multiple of batch_size {settings.batch_size} "
            f"× {world} processes: choose sizes that divide it (e.g. batch size 16 on 8 GPUs, 4 on 4 × 8)"
        )
    return settings.global_batch // per_step


def check_settings(s: FinetuneSettings) -> None:
    """One line for what the file system refuses (base model, DeepSpeed file), before anything is loaded."""
    from ...select.train_settings import check_mllm_paths
    from .deepspeed import deepspeed_config_path

    if not s.mllm:
        raise UserError("no base model: give mllm, a llava-hf folder, a hub id, or lm=...,projector=...,vision=...")
    check_mllm_paths(s.mllm)
    if s.deepspeed is not None:
        deepspeed_config_path(s.deepspeed)
