"""Checkpoints of CoIDO's coupled training (``train/checkpoints/step-N/``).

A checkpoint is accelerate's state (trainable weights, optimiser, scheduler, every process's RNG;
see :mod:`.accelerate_state`) plus ``trainer_state.json`` (steps, global batches done, loss
history, the settings that decide the result).

Only *trainable* weights are saved: with LoRA the adapter, the projector, the scorer and s1/s2
(not the frozen base model); in full fine-tuning everything but the frozen vision tower. The frozen
weights are those of the settings' ``mllm``, which the run records (its identity is in the stage's
meta.json).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import accelerate_state as state
from .accelerate_state import saved_weight_names
from .train_settings import TrainSettings, result_settings

__all__ = ["checkpoint_dirs", "clear_training", "resume_state", "save_checkpoint", "save_mllm", "saved_weight_names"]

STATE_FILE = "trainer_state.json"
CHECKPOINTS = state.CHECKPOINTS


def clear_training(folder: Path) -> None:
    """Forget a previous run in the train folder (scorer, history, checkpoints), so that the next
    training starts afresh instead of resuming."""
    shutil.rmtree(folder, ignore_errors=True)


def checkpoint_dirs(folder: Path) -> list[Path]:
    """Complete checkpoints in a train folder, oldest first (folders of an interrupted save are ignored)."""
    return state.checkpoint_dirs(folder, STATE_FILE)


def save_checkpoint(
    accelerator: Any, folder: Path, step: int, done: int, history: list[dict], settings: TrainSettings
) -> Path:
    """accelerate state (trainable weights only) + trainer_state.json, renamed into place when complete."""
    record = {"step": step, "batches_done": done, "history": history, "settings": result_settings(settings)}
    return state.save_checkpoint(accelerator, folder, step, STATE_FILE, record, settings.keep_checkpoints)


def resume_state(accelerator: Any, folder: Path, settings: TrainSettings) -> tuple[int, int, list[dict]]:
    """Restore the latest checkpoint; (optimiser steps, global batches done, history), zeros if none."""
    fix = f"rerun with the same ones, or delete {folder} (force) to start over"
    found = state.resume(accelerator, folder, STATE_FILE, "settings", result_settings(settings), fix)
    if found is None:
        return 0, 0, []
    return int(found["step"]), int(found["batches_done"]), list(found["history"])


def save_mllm(accelerator: Any, model: Any, llava: Any, folder: Path) -> None:
    """The trained MLLM (or its LoRA adapter) beside tokenizer and image processor, renamed when done."""
    state.save_model_folder(accelerator, model, llava, folder)
