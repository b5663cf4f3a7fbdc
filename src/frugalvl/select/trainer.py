"""Stage 4 of CoIDO: the scorer and the MLLM trained together on the subset S
(docs/methods/coido.md#what-one-step-does).

Per per-device micro-batch of B samples (all image or all text when grouping by modality):

    r = scorer([CLIP ‖ scores])            [B]
    w = softmax(r)                         Σw = 1
    logits = LLaVA(prompt, image)          Vicuna v1 prompt, labels −100 outside the answers
    L_I, L_D, total (losses.py)            total = L_I·e^{−2 s1} + L_D·e^{−2 s2}/2 + s1 + s2

and AdamW steps the LM + projector (or a LoRA adapter), the scorer and s1/s2 (own lr option). The
vision tower is frozen. Devices, mixed precision and multi-GPU (DDP, DeepSpeed, FSDP) come from
accelerate: ``accelerate launch -m frugalvl select train ...``.

The pieces live beside this loop: prompts (prompting.py), micro-batches (batching.py), the MLLM's
set-up (mllm.py), checkpoints (checkpoints.py, over accelerate_state.py which the LoRA fine-tuning
shares). Checkpoints are written every ``save_minutes`` (and every ``save_steps``, when set) and on
Ctrl-C; a run restarted on the same folder continues from the latest one and ends where the
uninterrupted run would: the data order is a function of the seed and the epoch, and the RNG
states are restored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import write_json
from ..settings import FieldError
from . import losses as L
from .accelerate_state import make_accelerator
from .batching import Batch, iterate_batches, plan_batches
from .checkpoints import resume_state, save_checkpoint, save_mllm
from .mllm import load_mllm, prepare_mllm
from .prompting import estimated_length
from .scorer import Scorer, save_scorer
from .train_settings import TrainSettings, check_train_settings
from .workdir import Subset, read_subset

log = logging.getLogger(__name__)

__all__ = ["CoupledModel", "TrainSettings", "build_training", "param_groups", "train"]


class CoupledModel(nn.Module):
    """The MLLM, the scorer and s1/s2 (log σ) in one module, so one optimiser and one DDP wrapper
    cover them; ``forward`` returns the objective of the chosen loss variant and its parts."""

    def __init__(self, mllm: nn.Module, scorer: Scorer, loss: str = "coido", lam: float | None = None):
        super().__init__()
        self.mllm, self.scorer, self.loss, self.lam = mllm, scorer, loss, lam
        self.s1 = nn.Parameter(torch.zeros(()), requires_grad=loss == "coido")
        self.s2 = nn.Parameter(torch.zeros(()), requires_grad=loss == "coido")

    def forward(self, batch: Batch) -> L.Losses:
        out = self.mllm(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            use_cache=False,
        )
        r = self.scorer(batch.features.to(next(self.scorer.parameters()).dtype))
        return L.coido_losses(
            r, out.logits, batch.labels, batch.clusters, self.loss, self.s1.float(), self.s2.float(), self.lam
        )


def param_groups(coupled: CoupledModel, settings: TrainSettings) -> list[dict[str, Any]]:
    """AdamW groups: weights (wd), biases and norms (no wd), and s1/s2 at ``uncertainty_lr``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in coupled.named_parameters():
        if p.requires_grad and name not in ("s1", "s2"):
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.loss == "coido":
        groups.append({"params": [coupled.s1, coupled.s2], "weight_decay": 0.0, "lr": settings.s_lr})
    return groups


def coupled_model(llava: Any, subset: Subset, settings: TrainSettings) -> CoupledModel:
    """The MLLM prepared for training (mllm.py) with a fresh scorer (seeded) and s1 = s2 = 0."""
    torch.manual_seed(settings.seed)  # the scorer's initialisation
    scorer = Scorer(subset.feature_dim, subset.score_names)
    return CoupledModel(prepare_mllm(llava.model, settings), scorer, settings.loss, settings.lam)


def _cosine_scheduler(optimizer, total: int, warmup_ratio: float):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total), total)


def build_training(work: Path, settings: TrainSettings, accelerator):
    """Everything a run needs: coupled model, optimiser, scheduler, data, plans per epoch."""
    subset = read_subset(work)
    llava = load_mllm(settings)
    coupled = coupled_model(llava, subset, settings)
    lengths = [estimated_length(s, llava.image_seq_length) for s in subset.samples]
    plans = [
        plan_batches(
            lengths, settings.batch_size, accelerator.num_processes, settings.seed, e, settings.group_by_modality
        )
        for e in range(settings.epochs)
    ]
    total_steps = sum(math.ceil(len(p) / settings.grad_accum) for p in plans)
    if total_steps == 0:
        raise FieldError(
            "batch_size",
            f"the subset ({len(subset.samples)} usable samples) is too small for one batch: lower {{batch_size}}",
            TrainSettings,
        )
    optimizer = torch.optim.AdamW(param_groups(coupled, settings), lr=settings.lr)
    scheduler = _cosine_scheduler(optimizer, total_steps, settings.warmup_ratio)
    return subset, llava, coupled, optimizer, scheduler, plans, total_steps


def _step_bounds(plans, grad_accum: int) -> list[int]:
    """Global batch numbers after which the optimiser steps (accumulation restarts each epoch)."""
    ends, first = [], 0
    for plan in plans:
        ends += [min(first + k + grad_accum, first + len(plan)) - 1 for k in range(0, len(plan), grad_accum)]
        first += len(plan)
    return ends


class _StopRequest:
    """Ctrl-C (SIGINT) during training asks for a stop after the current optimiser step instead of
    raising at once, so that step is saved; a second Ctrl-C raises at once. (Image-loading workers
    ignore SIGINT, see batching.py, so the step in progress can still get its batches.)"""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupted: saving a checkpoint after the current step (Ctrl-C again to quit at once)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _agreed(accelerator, *flags: bool) -> list[bool]:
    """Each flag true on any process (every process must take the same save/stop decisions)."""
    if accelerator.num_processes == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return [bool(x) for x in accelerator.reduce(t, reduction="sum").tolist()]


def train(work: Path, settings: TrainSettings, folder: Path | None = None) -> Path:
    """Run stage 4 on ``work``, writing into ``folder`` (default ``work/train``); returns its ``scorer.pt``."""
    work = Path(work)
    folder = Path(folder) if folder is not None else work / "train"
    check_train_settings(settings)
    accelerator = make_accelerator(settings)
    subset, llava, coupled, optimizer, scheduler, plans, total_steps = build_training(work, settings, accelerator)
    coupled, optimizer, scheduler = accelerator.prepare(coupled, optimizer, scheduler)
    step, done, history = resume_state(accelerator, folder, settings)
    ends = _step_bounds(plans, settings.grad_accum)
    bar = _progress(accelerator, total_steps, step, settings.progress)
    coupled.train()
    pending: list[L.Losses] = []
    last_save = time.monotonic()
    batches = iterate_batches(
        subset,
        plans,
        llava,
        settings.max_length,
        settings.image_aspect_ratio,
        accelerator.process_index,
        settings.num_workers,
        done,
    )
    with _StopRequest() as stop:
        for j, batch in batches:
            end = ends[step]
            n_micro = end - (ends[step - 1] if step else -1)
            sync = j == end
            with accelerator.no_sync(coupled) if not sync else contextlib.nullcontext():
                with accelerator.autocast():
                    parts = coupled(batch.to(accelerator.device))
                accelerator.backward(parts.total / n_micro)
            pending.append(L.Losses(*(t.detach() for t in parts)))
            if not sync:
                continue
            step, done = _optimiser_step(
                accelerator, coupled, optimizer, scheduler, settings, step, j, pending, history, bar
            )
            pending = []
            # saves and stops happen only between optimiser steps, so a checkpoint (RNG included) is
            # exactly the state the uninterrupted run had there
            due = step < total_steps and (
                (settings.save_steps > 0 and step % settings.save_steps == 0)
                or (settings.save_minutes > 0 and time.monotonic() - last_save >= 60 * settings.save_minutes)
            )
            halt, due = _agreed(accelerator, stop.requested, due)
            halt = halt and step < total_steps  # at the last step: finish instead
            if due or halt:
                save_checkpoint(accelerator, folder, step, done, history, settings)
                last_save = time.monotonic()
            if halt:
                bar.close()
                raise KeyboardInterrupt("training interrupted; a rerun resumes from the last checkpoint")
    bar.close()
    return _finish(accelerator, coupled, llava, folder, settings, step, history)


def _optimiser_step(
    accelerator,
    coupled,
    optimizer,
    scheduler,
    settings: TrainSettings,
    step: int,
    j: int,
    pending: Sequence[L.Losses],
    history: list[dict],
    bar,
) -> tuple[int, int]:
    """Clip, step, schedule, record; returns (optimiser steps, global batches) done."""
    if settings.max_grad_norm > 0:
        accelerator.clip_grad_norm_(coupled.parameters(), settings.max_grad_norm)
    lr = float(scheduler.get_last_lr()[0])  # the lr this step uses
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    history.append(_record(step + 1, pending, accelerator.unwrap_model(coupled), lr))
    bar.update(1)
    bar.set_postfix({k: f"{history[-1][k]:.4g}" for k in ("L_I", "L_D", "s1", "s2")})
    return step + 1, j + 1


def _progress(accelerator, total: int, start: int, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc="coido train",
        dynamic_ncols=True,
        disable=not (enabled and accelerator.is_main_process),
    )


def _record(step: int, pending: Sequence[L.Losses], coupled: CoupledModel, lr: float) -> dict[str, float]:
    mean = lambda xs: float(torch.stack([x.float() for x in xs]).mean())  # noqa: E731
    return {
        "step": step,
        "loss": mean([p.total for p in pending]),
        "L_I": mean([p.importance for p in pending]),
        "L_D": mean([p.diversity for p in pending]),
        "s1": float(coupled.s1.detach()),
        "s2": float(coupled.s2.detach()),
        "lr": lr,
    }


def _finish(accelerator, coupled, llava, folder: Path, settings: TrainSettings, step: int, history) -> Path:
    out = folder / "scorer.pt"
    accelerator.wait_for_everyone()
    model: CoupledModel = accelerator.unwrap_model(coupled)
    if accelerator.is_main_process:
        save_scorer(
            out,
            model.scorer,
            {
                "s1": float(model.s1.detach()),
                "s2": float(model.s2.detach()),
                "steps": step,
                "settings": asdict(settings),
                "mllm_source": llava.source,
            },
        )
        write_json(folder / "history.json", history)
    if settings.save_mllm:
        save_mllm(accelerator, model.mllm, llava, folder / "mllm")
    accelerator.wait_for_everyone()
    return out
