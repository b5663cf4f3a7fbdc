"""Settings of CoIDO's coupled training (stage 4, docs/methods/coido.md#training-settings), with the official run's
defaults.

Kept apart from the training code (and free of torch) so that the command line, the work-folder
bookkeeping and the LoRA fine-tuning can read them without loading a model library.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..precision import PRECISIONS
from ..settings import FieldError, check_above, check_at_least, check_choice, option

ASPECT_RATIOS = ("pad", "resize")
SCHEDULERS = ("cosine",)
LOSS_VARIANTS = ("coido", "importance", "importance+diversity", "weighted")  # the losses of .losses


def default_workers() -> int:
    """Image-loading processes: one core is left to the training process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class TrainSettings:
    """Stage-1 settings; defaults from the official run_stage1.sh (#training-settings).

    Values are checked when the settings are made (:class:`~frugalvl.settings.FieldError` naming the
    field); that ``mllm`` is given and exists is checked when training starts
    (:func:`check_train_settings`), so ``TrainSettings()`` itself is valid.
    """

    mllm: str = option(
        "", "LLaVA: a llava-hf folder, a hub id, or lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR"
    )
    loss: str = option(
        "coido",
        "coido | importance | importance+diversity | weighted: uncertainty-weighted | L_I | "
        "L_I + lam·L_D | (1-lam)·L_I + lam·L_D",
    )
    lam: float | None = option(
        None, "λ of importance+diversity / weighted", parse=float, shown="1 for importance+diversity, 0.5 for weighted"
    )
    lr: float = option(2e-5, "learning rate")
    uncertainty_lr: float | None = option(
        None, "lr of s1/s2 (none: one group with the rest, as the paper's code)", parse=float, shown="the lr"
    )
    weight_decay: float = option(0.0, "weight decay")
    scheduler: str = option("cosine", "learning-rate schedule (only the official cosine)", cli=False)
    warmup_ratio: float = option(0.03, "fraction of the steps spent warming up, from 0 to 1")
    epochs: int = option(1, "passes over the subset")
    batch_size: int = option(16, "per device: the softmax micro-batch")
    grad_accum: int = option(1, "micro-batches per optimiser step")
    max_grad_norm: float = option(1.0, "gradient-norm clipping (HF Trainer's default); 0 disables clipping")
    max_length: int = option(2048, "tokens per sample at most")
    precision: str = option("auto", "auto: bf16 mixed precision on a GPU, fp32 on the CPU", choices=PRECISIONS)
    tf32: bool = option(True, "no TF32 matrix products (used by default on Ampere and later GPUs)")
    gradient_checkpointing: bool = option(True, "no gradient checkpointing in the LM (faster, more memory)")
    group_by_modality: bool = option(True, "mix image and text-only samples in a batch (LLaVA batches them apart)")
    image_aspect_ratio: str = option(
        "pad", "LLaVA-1.5 pads to a square with the mean colour; resize squashes", choices=ASPECT_RATIOS
    )
    lora: bool = option(False, "train a LoRA adapter (+ projector) instead of the full LM")
    lora_r: int = option(128, "LoRA rank")
    lora_alpha: int = option(256, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout, from 0 to below 1", cli=False)
    save_minutes: float = option(10.0, "checkpoint every this many minutes, and on Ctrl-C (0: only on Ctrl-C)")
    save_steps: int = option(0, "also checkpoint every N steps (0: never)")
    keep_checkpoints: int = option(1, "newest checkpoints kept (0: all)")
    seed: int = option(42, "seed of the scorer's weights, the shuffling and dropout")
    num_workers: int = option(
        default_factory=default_workers,
        help="image-loading processes",
        shown="this machine's cores less one, at most 4",
    )
    save_mllm: bool = option(False, "also write the trained MLLM (or adapter) to train/mllm/")
    progress: bool = option(True, "no progress bar")  # the switch turns it off

    def __post_init__(self) -> None:
        check_choice(self, "loss", LOSS_VARIANTS)
        if self.scheduler not in SCHEDULERS:
            raise FieldError(
                "scheduler", f"{self.scheduler!r}: only cosine (the official one) is implemented", TrainSettings
            )
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "image_aspect_ratio", ASPECT_RATIOS)
        check_at_least(self, _AT_LEAST_1, 1)
        check_at_least(self, ("save_steps", "keep_checkpoints", "num_workers"), 0)
        check_at_least(self, ("weight_decay", "max_grad_norm", "save_minutes"), 0.0)
        check_above(self, ("lr", "uncertainty_lr"), optional=True)
        if not 0 <= self.warmup_ratio <= 1:
            raise FieldError("warmup_ratio", f"must be in [0, 1], got {self.warmup_ratio}", TrainSettings)
        if not 0 <= self.lora_dropout < 1:
            raise FieldError("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}", TrainSettings)
        check_at_least(self, ("lam",), 0.0, optional=True)

    @property
    def s_lr(self) -> float:
        return self.lr if self.uncertainty_lr is None else self.uncertainty_lr


_AT_LEAST_1 = ("epochs", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha")

# Settings that do not change the result: a checkpoint or result made under other values still counts.
RESUME_FREE = frozenset(
    {"save_minutes", "save_steps", "keep_checkpoints", "num_workers", "save_mllm", "gradient_checkpointing", "progress"}
)


def result_settings(settings: TrainSettings) -> dict[str, Any]:
    """The settings that decide the trained result (what checkpoints and ``meta.json`` record)."""
    return {k: v for k, v in asdict(settings).items() if k not in RESUME_FREE}


def check_train_settings(s: TrainSettings) -> None:
    """Before anything is loaded or deleted: an MLLM is given and, when local, exists (the values
    themselves were checked when the settings were made)."""
    if not s.mllm:
        raise FieldError(
            "mllm",
            "no MLLM given: pass {mllm} with a LLaVA folder, a hub id, or lm=...,projector=...,vision=...",
            TrainSettings,
        )
    check_mllm_paths(s.mllm)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(spec: str) -> bool:
    """``org/name`` that is not a local path (its first part is no local folder either)."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists() and not Path(spec.split("/")[0]).exists()


def check_mllm_paths(spec: str) -> None:
    """A local MLLM path (or each part of ``lm=...,projector=...,vision=...``) that does not exist is
    named as such, before anything else happens; a hub id (``org/name``) is left to the loader."""
    parts = [p.split("=", 1) for p in spec.split(",")] if "=" in spec else [("", spec)]
    for part in parts:
        if len(part) != 2:
            raise FieldError("mllm", f"{spec!r}: write the parts as lm=DIR,projector=FILE,vision=DIR")
        key, value = part
        if not Path(os.path.expanduser(value)).exists() and (key or not is_hub_id(value)):
            what = f"part {key}= " if key else ""
            raise FieldError(
                "mllm",
                f"{what}{value}: this path does not exist: give an existing LLaVA folder "
                "(or a hub id such as llava-hf/llava-1.5-7b-hf)",
            )
