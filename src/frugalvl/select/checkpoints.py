"""Saving and restoring the state of CoIDO's coupled training (``train/checkpoints/step-N/``).

A checkpoint is accelerate's state (model weights, optimiser, scheduler, every process's RNG) plus
``trainer_state.json`` (steps, global batches done, loss history, the settings that decide the
result). It is written under a temporary name and renamed when complete, so a run killed while
saving leaves the previous checkpoint usable.

Only *trainable* weights are saved: with ``--lora`` the adapter, the projector, the scorer and s1/s2
(not the frozen base model); in full fine-tuning everything but the frozen vision tower. The frozen
weights are those of ``--mllm``, which the run records (its identity is in the stage's meta.json).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_json
from .train_settings import TrainSettings, result_settings

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"


def clear_training(folder: Path) -> None:
    """Forget a previous run in the train folder (scorer, history, checkpoints), so that the next
    training starts afresh instead of resuming."""
    shutil.rmtree(folder, ignore_errors=True)


def checkpoint_dirs(folder: Path) -> list[Path]:
    """Complete checkpoints in a train folder, oldest first (folders of an interrupted save are ignored)."""
    root = Path(folder) / CHECKPOINTS
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def frozen_names(model: Any) -> set[str]:
    """Parameter names of ``model`` that do not train (left out of checkpoints)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def _trainable_only(models: list[Any], weights: list[dict[str, Any]], _output_dir: str) -> None:
    """accelerate save hook: keep buffers and trainable parameters of each model's state dict."""
    for i, model in enumerate(models):
        if i < len(weights):
            frozen = frozen_names(model)
            weights[i] = {k: v for k, v in weights[i].items() if k not in frozen}


def save_checkpoint(
    accelerator: Any, folder: Path, step: int, done: int, history: list[dict], settings: TrainSettings
) -> Path:
    """accelerate state (trainable weights only) + trainer_state.json, renamed into place when complete."""
    root = Path(folder) / CHECKPOINTS
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(_trainable_only)
    try:
        accelerator.save_state(str(tmp))
    finally:
        hook.remove()
    accelerator.wait_for_everyone()  # every process has written its RNG state
    if accelerator.is_main_process:
        write_json(
            tmp / STATE_FILE,
            {"step": step, "batches_done": done, "history": history, "settings": result_settings(settings)},
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_dirs(folder)[: -settings.keep_checkpoints] if settings.keep_checkpoints else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    log.info("checkpoint saved: %s", final)
    return final


def resume_state(accelerator: Any, folder: Path, settings: TrainSettings) -> tuple[int, int, list[dict]]:
    """Restore the latest checkpoint; (optimiser steps, global batches done, history), zeros if none.

    The prepared model must be the one the checkpoint was made from, with its frozen weights loaded
    from the same ``--mllm`` (the checkpoint holds only the trainable ones).
    """
    found = checkpoint_dirs(folder)
    if not found:
        return 0, 0, []
    state = json.loads((found[-1] / STATE_FILE).read_text())
    wanted = result_settings(settings)
    changed = sorted(k for k in set(wanted) | set(state["settings"]) if state["settings"].get(k) != wanted.get(k))
    if changed:
        raise UserError(
            f"{found[-1]} was made with other settings ({', '.join(changed)}): "
            f"rerun with the same ones, or delete {folder} (--force) to start over"
        )
    accelerator.load_state(str(found[-1]), strict=False)  # frozen weights are absent by design
    log.info("resuming from %s", found[-1])
    return int(state["step"]), int(state["batches_done"]), list(state["history"])


def saved_weight_names(checkpoint: Path) -> set[str]:
    """Names of the model weights a checkpoint holds (for checks and tests)."""
    from safetensors import safe_open

    files = sorted(Path(checkpoint).glob("model*.safetensors"))
    names: set[str] = set()
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            names.update(f.keys())
    return names


def save_mllm(accelerator: Any, model: Any, llava: Any, folder: Path) -> None:
    """The trained MLLM (or its LoRA adapter) beside tokenizer and image processor, renamed when done."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=state)
        llava.tokenizer.save_pretrained(tmp)
        llava.image_processor.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
