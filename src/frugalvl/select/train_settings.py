"""Settings of CoIDO's coupled training (stage 4, docs/methods/coido.md#training-settings), with the official run's
defaults.

Kept apart from the training code (and free of torch) so that the command line, the work-folder
bookkeeping and the LoRA fine-tuning can read them without loading a model library.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..precision import PRECISIONS

ASPECT_RATIOS = ("pad", "resize")
SCHEDULERS = ("cosine",)


def default_workers() -> int:
    """Image-loading processes: one core is left to the training process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class TrainSettings:
    """Stage-1 settings; defaults from the official run_stage1.sh (#training-settings)."""

    mllm: str = ""  # folder, hub id or lm=...,projector=...,vision=... (models/llava.py)
    loss: str = "coido"  # one of losses.LOSS_VARIANTS
    lam: float | None = None  # λ for importance+diversity / weighted
    lr: float = 2e-5
    uncertainty_lr: float | None = None  # lr of s1/s2; None = lr (one group, as the paper's code)
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: int = 1
    batch_size: int = 16  # per device; the softmax runs over this micro-batch
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # HF Trainer's default, in force in the official run
    max_length: int = 2048
    precision: str = "auto"  # auto = bf16 on GPU, fp32 on CPU (frugalvl.precision)
    tf32: bool = True
    gradient_checkpointing: bool = True
    group_by_modality: bool = True
    image_aspect_ratio: str = "pad"  # LLaVA-1.5: pad to a square with the mean colour
    lora: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    save_minutes: float = 10.0  # checkpoint when this much time passed since the last (0: never)
    save_steps: int = 0  # also checkpoint every N optimiser steps (0: never)
    keep_checkpoints: int = 1  # newest checkpoints kept (0 = all)
    seed: int = 42
    num_workers: int = field(default_factory=default_workers)
    save_mllm: bool = False  # also write the trained MLLM (or adapter) to train/mllm/
    progress: bool = True  # a progress bar on the main process

    @property
    def s_lr(self) -> float:
        return self.lr if self.uncertainty_lr is None else self.uncertainty_lr


# Settings that do not change the result: a checkpoint or result made under other values still counts.
RESUME_FREE = frozenset(
    {"save_minutes", "save_steps", "keep_checkpoints", "num_workers", "save_mllm", "gradient_checkpointing", "progress"}
)


def result_settings(settings: TrainSettings) -> dict[str, Any]:
    """The settings that decide the trained result (what checkpoints and ``meta.json`` record)."""
    return {k: v for k, v in asdict(settings).items() if k not in RESUME_FREE}


_AT_LEAST_1 = ("epochs", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha")
_AT_LEAST_0 = ("weight_decay", "max_grad_norm", "save_minutes", "save_steps", "keep_checkpoints", "num_workers")


def check_train_settings(s: TrainSettings) -> None:
    """One line for the first setting out of its range, before anything is loaded or deleted."""
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if not s.mllm:
        raise UserError("no MLLM given: pass --mllm with a LLaVA folder, a hub id, or lm=...,projector=...,vision=...")
    check_mllm_paths(s.mllm)
    from .losses import LOSS_VARIANTS  # torch: only once a run is asked for

    if s.loss not in LOSS_VARIANTS:
        raise UserError(f"--loss {s.loss!r} is unknown: choose one of {', '.join(LOSS_VARIANTS)}")
    if s.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {s.scheduler!r}: only cosine (the official one) is implemented")
    if s.precision not in PRECISIONS:
        raise UserError(f"--precision {s.precision!r} is unknown: choose one of {', '.join(PRECISIONS)}")
    if s.image_aspect_ratio not in ASPECT_RATIOS:
        raise UserError(f"--image-aspect-ratio {s.image_aspect_ratio!r}: choose one of {', '.join(ASPECT_RATIOS)}")
    for name in _AT_LEAST_1:
        if getattr(s, name) < 1:
            raise UserError(f"{flag(name)} must be at least 1, got {getattr(s, name)}")
    for name in _AT_LEAST_0:
        value = getattr(s, name)
        if not value >= 0 or (isinstance(value, float) and math.isinf(value)):
            raise UserError(f"{flag(name)} must be a finite number >= 0, got {value}")
    for name in ("lr", "uncertainty_lr"):
        value = getattr(s, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UserError(f"{flag(name)} must be a finite number > 0, got {value}")
    if not 0 <= s.warmup_ratio <= 1:
        raise UserError(f"--warmup-ratio must be in [0, 1], got {s.warmup_ratio}")
    if not 0 <= s.lora_dropout < 1:
        raise UserError(f"--lora-dropout must be in [0, 1), got {s.lora_dropout}")
    if s.lam is not None and not (math.isfinite(s.lam) and s.lam >= 0):
        raise UserError(f"--lam must be a finite number >= 0, got {s.lam}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(spec: str) -> bool:
    """``org/name`` that is not a local path (its first part is no local folder either)."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists() and not Path(spec.split("/")[0]).exists()


def check_mllm_paths(spec: str) -> None:
    """A local MLLM path (or each part of ``lm=...,projector=...,vision=...``) that does not exist is
    named as such, before anything else happens; a hub id (``org/name``) is left to the loader."""
    parts = [p.split("=", 1) for p in spec.split(",")] if "=" in spec else [("--mllm", spec)]
    for part in parts:
        if len(part) != 2:
            raise UserError(f"--mllm {spec!r}: write the parts as lm=DIR,projector=FILE,vision=DIR")
        key, value = part
        if not Path(os.path.expanduser(value)).exists() and (key != "--mllm" or not is_hub_id(value)):
            what = "--mllm" if key == "--mllm" else f"--mllm part {key}="
            raise UserError(
                f"{what} {value}: this path does not exist: give an existing LLaVA folder "
                "(or a hub id such as llava-hf/llava-1.5-7b-hf)"
            )
