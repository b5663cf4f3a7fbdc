"""accelerate state shared by CoIDO's coupled training and the LoRA fine-tuning
(docs/methods/coido_finetune.md#checkpoints-and-resume).

One place for what both loops need from accelerate:

* :func:`make_accelerator`: devices, processes, mixed precision (``auto``: bf16 on a GPU, fp32 on
  the CPU), TF32, gradient accumulation, an optional DeepSpeed config;
* resumable checkpoints ``FOLDER/checkpoints/step-N/``: accelerate's state (model weights,
  optimiser, scheduler, every process's RNG) plus a JSON file of the loop's own state, written under
  a temporary name and renamed when complete, so a run killed while saving leaves the previous
  checkpoint usable (:func:`save_checkpoint`, :func:`resume`, :func:`checkpoint_dirs`);
* only *trainable* weights are saved (a LoRA adapter, the projector, a scorer; not the frozen base
  model, which the run loads again from its source);
* :func:`save_model_folder`: the trained model (or its adapter) beside tokenizer and image processor.

Imports no torch at module level. The fine-tuning package (``frugalvl.train.finetune``) builds on
this module and on CoIDO's LLaVA data pipeline; nothing in ``frugalvl.select`` imports ``train``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_json

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


class SettingsChanged(UserError):
    """``where`` (a checkpoint or result) was made with other settings, named in ``changed``."""

    def __init__(self, message: str, where: Path, changed: list[str]):
        super().__init__(message)
        self.where, self.changed = Path(where), changed


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names whose values differ between two settings records (either side may lack a name)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# ------------------------------------------------------------------------------------ accelerator


def mixed_precision(settings: Any) -> str:
    """accelerate's ``mixed_precision`` for ``settings.precision`` here ("no" = fp32)."""
    import torch

    from ..precision import resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(settings.precision, device)
    if precision != "fp32" and device != "cuda":
        raise UserError(f"precision {precision} needs a GPU here: use fp32 on the CPU")
    return {"fp32": "no"}.get(precision, precision)


def make_accelerator(settings: Any, grad_accum: int = 1, deepspeed: dict[str, Any] | None = None) -> Any:
    """The ``Accelerator`` of a run (``settings.precision``, ``settings.tf32``), accumulating over
    ``grad_accum`` micro-batches, under DeepSpeed when a filled ``deepspeed`` config is given."""
    import torch
    from accelerate import Accelerator, DistributedDataParallelKwargs

    precision = mixed_precision(settings)
    if settings.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    kwargs: dict[str, Any] = {}
    if deepspeed is not None:
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("DeepSpeed needs the deepspeed package: pip install deepspeed (on the GPU machine)")
        from accelerate.utils import DeepSpeedPlugin

        stage3 = deepspeed.get("zero_optimization", {}).get("stage") == 3
        # ZeRO-3: the base is partitioned while it loads, not materialised whole in every process
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed, zero3_init_flag=stage3)
    # text-only micro-batches leave the projector and the vision path unused: DDP must allow that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # cpu=True without CUDA: accelerate then sets up gloo for several CPU processes (torchrun)
    # step_scheduler_with_optimizer=False: the schedules count global steps already, so accelerate
    # must not step them once per process
    return Accelerator(
        mixed_precision=precision,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[ddp],
        gradient_accumulation_steps=grad_accum,
        step_scheduler_with_optimizer=False,
        **kwargs,
    )


def _under_deepspeed(accelerator: Any) -> bool:
    return getattr(accelerator.state, "deepspeed_plugin", None) is not None


# ------------------------------------------------------------------------------------ checkpoints


def checkpoint_dirs(folder: Path, state_file: str) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (folders of a save cut short are ignored)."""
    root = Path(folder) / CHECKPOINTS
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / state_file).is_file()] if root.is_dir() else []
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
    accelerator: Any, folder: Path, step: int, state_file: str, state: dict[str, Any], keep: int
) -> Path:
    """accelerate's state (trainable weights only) + ``state`` as ``state_file``, renamed into
    ``folder/checkpoints/step-{step}`` when complete; the ``keep`` newest are kept (0: all)."""
    root = Path(folder) / CHECKPOINTS
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(_trainable_only)
    try:
        extra = {"exclude_frozen_parameters": True} if _under_deepspeed(accelerator) else {}
        accelerator.save_state(str(tmp), **extra)
    finally:
        hook.remove()
    accelerator.wait_for_everyone()  # every process has written its RNG state
    if accelerator.is_main_process:
        write_json(tmp / state_file, state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_dirs(folder, state_file)[:-keep] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log.info("checkpoint saved: %s", final)
    return final


def resume(
    accelerator: Any, folder: Path, state_file: str, key_name: str, key: dict[str, Any], fix: str
) -> dict[str, Any] | None:
    """Restore the newest checkpoint and return its state file's content (None when there is none).

    ``state[key_name]`` must equal ``key`` (the settings that decide the result); otherwise one line
    names the settings that differ, followed by ``fix``. The prepared model must be the one the
    checkpoint was made from, its frozen weights loaded from the same source (the checkpoint holds
    only the trainable ones).
    """
    if accelerator.is_main_process:  # saves a killed run cut short: never resumed, removed here
        for cut in [*(Path(folder) / CHECKPOINTS).glob(".step-*.tmp"), *Path(folder).glob(".*.tmp")]:
            if cut.is_dir():
                shutil.rmtree(cut, ignore_errors=True)
    found = checkpoint_dirs(folder, state_file)
    if not found:
        return None
    state = json.loads((found[-1] / state_file).read_text())
    changed = changed_keys(state[key_name], key)
    if changed:
        raise SettingsChanged(
            f"{found[-1]} was made with other settings ({', '.join(changed)}): {fix}", found[-1], changed
        )
    extra = {"load_module_strict": False} if _under_deepspeed(accelerator) else {"strict": False}
    accelerator.load_state(str(found[-1]), **extra)  # the frozen weights are absent by design
    log.info("resuming from %s", found[-1])
    return state


def saved_weight_names(checkpoint: Path) -> set[str]:
    """Names of the model weights a checkpoint holds (for checks and tests)."""
    from safetensors import safe_open

    names: set[str] = set()
    for path in sorted(Path(checkpoint).glob("model*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            names.update(f.keys())
    return names


def save_model_folder(accelerator: Any, model: Any, llava: Any, folder: Path) -> None:
    """``model`` (a PEFT model saves its adapter only) beside the tokenizer and image processor of
    ``llava``, renamed into ``folder`` when complete. Every process calls it (ZeRO-3 gathers shards)."""
    folder = Path(folder)
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state)
        llava.tokenizer.save_pretrained(tmp)
        llava.image_processor.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    accelerator.wait_for_everyone()
