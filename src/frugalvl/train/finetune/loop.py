"""The fine-tuning run: :func:`finetune`, from the selected subset (any format pick writes) to
``OUT/adapter`` (and ``OUT/merged``).

The loss is the mean token cross-entropy of a micro-batch, divided by the accumulation steps, as
LLaVA's (transformers 4.37) Trainer; like that Trainer, a last accumulation group that is not full
is not stepped (docs/methods/coido_finetune.md#loss-and-accumulation). Checkpoints every ``save_steps`` optimiser steps (trainable weights only, see
:mod:`frugalvl.select.accelerate_state`); a run restarted on the same folder continues from the
newest one and ends where the uninterrupted run would (data order = f(seed, epoch); RNG states
restored; docs/methods/coido_finetune.md#checkpoints-and-resume).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UserError
from ...fileio import check_folder_output, output_lock, remove_stale_temporaries, write_json
from ...select import accelerate_state as state
from .data import as_subset, data_digest, plans_for, read_records, step_ends
from .deepspeed import run_deepspeed_config
from .merge import merge_adapter
from .model import base_dtype_for, build_model, cosine_schedule, param_groups, projector_lr, trainable_in_fp32
from .settings import FinetuneSettings, check_settings, grad_accum, result_key

log = logging.getLogger(__name__)

STATE_FILE = "finetune_state.json"
RECIPE = "LLaVA-1.5 LoRA (finetune_lora.sh)"


@dataclass
class Progress:
    """Where a run stands: optimiser steps and global batches done, the history of the steps."""

    step: int = 0
    done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    """What the loop works with: the prepared objects, the data and its plan, where to save."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    llava: Any
    samples: list[dict[str, Any]]
    plans: list[list[list[list[int]]]]
    ends: list[int]  # global batch after which each optimiser step happens
    settings: FinetuneSettings
    out: Path
    key: dict[str, Any]  # what decides the result (checked on resume)


# ------------------------------------------------------------------------------------ checkpoints


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints of a fine-tuning folder, oldest first (a save cut short is ignored)."""
    return state.checkpoint_dirs(out, STATE_FILE)


def save_checkpoint(run: Run, progress: Progress) -> Path:
    """Trainable weights, optimiser, scheduler, RNG states and the loop state, renamed into place."""
    record = {"step": progress.step, "batches_done": progress.done, "history": progress.history, "key": run.key}
    return state.save_checkpoint(
        run.accelerator, run.out, progress.step, STATE_FILE, record, run.settings.keep_checkpoints
    )


def resume(accelerator: Any, out: Path, key: dict[str, Any]) -> Progress:
    """Restore the newest checkpoint (zeros if none)."""
    fix = f"rerun with the same ones, or start over in {out} (force)"
    found = state.resume(accelerator, out, STATE_FILE, "key", key, fix)
    if found is None:
        return Progress()
    return Progress(int(found["step"]), int(found["batches_done"]), list(found["history"]))


def _finished(out: Path, key: dict[str, Any]) -> bool:
    meta = out / "finetune.json"
    if not (meta.is_file() and (out / "adapter/adapter_config.json").is_file()):
        return False
    old = json.loads(meta.read_text())["key"]
    changed = state.changed_keys(old, key)
    if changed:
        raise state.SettingsChanged(
            f"{out} holds a fine-tune made with other settings ({', '.join(changed)}): redo it with force, "
            "or use another output folder",
            out,
            changed,
        )
    return True


# ------------------------------------------------------------------------------------ the run


def finetune(
    data: str | Path,
    out: str | Path,
    settings: FinetuneSettings,
    merge: bool = False,
    force: bool = False,
    merge_dtype: str = "auto",
) -> Path:
    """Fine-tune ``settings.mllm`` with LoRA on the subset ``data`` (a file or a folder, in any format
    pick writes); returns ``OUT/adapter`` (and writes ``OUT/merged`` with ``merge``)."""
    out, data = Path(out), Path(data)
    check_settings(settings)
    check_finetune_output(out, data, settings)
    samples = read_records(data, settings.image_root)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = grad_accum(settings, world)
    key = {**result_key(settings, world), "data": data_digest(data)}
    precision = state.mixed_precision(settings)
    accelerator = state.make_accelerator(settings, accum, run_deepspeed_config(settings, accum, precision))
    with output_lock(out) if accelerator.is_main_process else contextlib.nullcontext(out):  # one writer per folder
        return _finetune(accelerator, data, out, samples, settings, accum, key, merge, force, merge_dtype)


OWN = ("checkpoints", "adapter", "merged", "finetune.json")  # what a fine-tune writes in its output folder


def check_finetune_output(out: Path, data: Path, settings: FinetuneSettings) -> None:
    """Refuse an output folder that is, holds or lies in an input (the subset file or folder, the image root,
    a local base model), or that holds files while no fine-tune recorded writing there (its ``finetune.json`` or a
    checkpoint): ``force`` starts a fine-tune over, never someone else's folder."""
    inputs = [data, *(Path(p) for p in (settings.image_root, settings.mllm) if p and Path(p).is_dir())]
    recorded = [out / "finetune.json", *checkpoint_dirs(out)]
    check_folder_output(out, inputs, recorded, field="out", can_overwrite=False)


def _finetune(accelerator, data, out, samples, settings, accum, key, merge, force, merge_dtype) -> Path:
    adapter = out / "adapter"
    if accelerator.is_main_process:
        remove_stale_temporaries(out, recursive=True)  # a killed run's (the lock is ours)
    if force and accelerator.is_main_process:  # only what a fine-tune wrote: checked above to be this folder
        for path in (out / name for name in OWN):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    if _finished(out, key):
        log.info("finetune: done already (%s); skipping training", adapter)
    else:
        run = _prepare(accelerator, data, samples, settings, accum, out, key)
        _loop(run, resume(accelerator, out, key))
        state.save_model_folder(accelerator, run.model, run.llava, adapter)
        if accelerator.is_main_process:
            meta = {
                "key": key,
                "base": run.llava.source,
                "n_samples": len(samples),
                "steps": len(run.ends),
                "grad_accum": accum,
                "data": str(data.resolve()),
                "recipe": RECIPE,
            }
            write_json(out / "finetune.json", meta)
        accelerator.wait_for_everyone()
        del run
    if merge and accelerator.is_main_process:
        merge_adapter(settings.mllm, adapter, out / "merged", merge_dtype)
    accelerator.wait_for_everyone()
    return adapter


def _prepare(
    accelerator: Any,
    data: Path,
    samples: list[dict[str, Any]],
    settings: FinetuneSettings,
    accum: int,
    out: Path,
    key: dict[str, Any],
) -> Run:
    """Base + adapter, optimiser and schedule prepared by accelerate, the data's plan."""
    import torch
    from accelerate.utils import set_seed

    from ...models.llava import load_llava

    set_seed(settings.seed)  # LoRA initialisation, dropout
    llava = load_llava(settings.mllm, dtype=base_dtype_for(accelerator))
    model = build_model(llava, settings)
    trainable_in_fp32(model)
    plans = plans_for(samples, llava.image_seq_length, settings, accelerator.num_processes)
    ends = step_ends(plans, accum)
    if not ends:
        raise UserError(
            f"{data}: {len(samples)} samples give no full step of {settings.global_batch}: "
            "lower global_batch (and batch_size)"
        )
    optimizer = torch.optim.AdamW(param_groups(model, settings), lr=settings.lr)
    scheduler = cosine_schedule(optimizer, len(ends), settings.warmup_ratio)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return Run(accelerator, model, optimizer, scheduler, llava, samples, plans, ends, settings, out, key)


def _loop(run: Run, progress: Progress) -> Progress:
    """Micro-batches from ``progress.done`` on; an optimiser step after each full accumulation group."""
    import torch
    from tqdm.auto import tqdm

    from ...select.batching import iterate_batches

    accelerator, model, optimizer, scheduler, settings = (
        run.accelerator,
        run.model,
        run.optimizer,
        run.scheduler,
        run.settings,
    )
    total = len(run.ends)
    bar = tqdm(
        total=total,
        initial=progress.step,
        desc="finetune",
        dynamic_ncols=True,
        disable=not (settings.progress and accelerator.is_main_process),
    )
    model.train()
    losses: list[torch.Tensor] = []
    batches = iterate_batches(
        as_subset(run.samples),
        run.plans,
        run.llava,
        settings.max_length,
        settings.image_aspect_ratio,
        accelerator.process_index,
        settings.num_workers,
        progress.done,
    )
    started = time.monotonic()
    for j, batch in batches:
        if progress.step >= total:
            break
        if j > run.ends[progress.step]:  # a micro-batch past the last full group of an epoch: skipped
            continue
        sync = j == run.ends[progress.step]
        with accelerator.accumulate(model):
            if accelerator.sync_gradients != sync:  # the groups are full, so accelerate's count agrees
                raise RuntimeError(f"accumulation out of step at global batch {j}")
            batch = batch.to(accelerator.device)
            output = model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                pixel_values=batch.pixel_values,
                labels=batch.labels,
                use_cache=False,
            )
            accelerator.backward(output.loss)
            losses.append(output.loss.detach().float())
            if sync:
                if settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                lrs = [float(x) for x in scheduler.get_last_lr()]
            optimizer.step()  # accelerate skips it (and zero_grad) inside a group
            if sync:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not sync:
            continue
        loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean")
        progress.step, progress.done, losses = progress.step + 1, j + 1, []
        progress.history.append(
            {"step": progress.step, "loss": float(loss), "lr": lrs[0], "projector_lr": projector_lr(optimizer, lrs)}
        )
        bar.update(1)
        bar.set_postfix(loss=f"{progress.history[-1]['loss']:.4g}")
        if settings.save_steps > 0 and progress.step % settings.save_steps == 0 and progress.step < total:
            save_checkpoint(run, progress)
    bar.close()
    if accelerator.is_main_process:
        log.info("finetune: %d steps in %.0f s", progress.step, time.monotonic() - started)
        write_json(run.out / "history.json", progress.history)
    return progress
