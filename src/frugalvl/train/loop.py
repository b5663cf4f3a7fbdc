"""The training run: ``train_upsampler`` ties the image stream, the trainer and the checkpoints together
(docs/methods/simfeatup.md#optimisation-and-checkpoints: one epoch over the images by default, a checkpoint every
100 steps) and writes the final upsampler in the official layout (#checkpoint-layouts).

Several processes, GPUs or nodes (data parallel, as the official 2 GPUs × batch 4)::

    accelerate launch --num_processes 2 -m frugalvl train-upsampler --images DIR -o up.ckpt --batch-size 4
    torchrun --nproc_per_node 2 -m frugalvl train-upsampler --images DIR -o up.ckpt --batch-size 4

``--batch-size`` is per process: a step consumes ``batch_size × processes`` crops, and the default
length (one epoch) is ``ceil(images / (batch_size × processes))`` steps. Each process takes its own
share of the shuffled image order (see :class:`~.images.ImageStream`), the gradients are averaged
over the processes before every step (see :mod:`.distributed`), so all processes hold the same
weights. Only the main process shows progress, writes ``log.jsonl``, the checkpoints and the
output; checkpoints keep every process's stream position, and ``--resume`` restores each process's
state (resuming with another number of processes also works, from the earliest saved position).
Over several nodes the checkpoint folder must be on a filesystem they share. Without CUDA,
``accelerate launch --multi_gpu --num_processes 2`` (or torchrun) gives 2 CPU processes on gloo
(``--cpu`` makes accelerate start one). A single process (no launcher) trains exactly as before.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.clip import ClipModel
from ..models.upsampler import save_upsampler
from ..settings import FieldError
from .checkpoints import RunCheckpoints, StopOnInterrupt, default_checkpoint_dir, list_checkpoints
from .distributed import Ranks, current_ranks
from .images import ImageStream
from .settings import UpsamplerTrainSettings
from .trainer import UpsamplerTrainer

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a call of :func:`train_upsampler` did, for the summary line."""

    output: Path
    steps: int
    start_step: int
    images: int
    crops_seen: int
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    losses: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        done = self.steps - self.start_step
        return done / self.seconds if self.seconds > 0 else float("nan")


def _progress(total: int, start: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=start, desc="train-upsampler", unit="step", disable=not enabled, dynamic_ncols=True
    )


def _logs_beside(bar_enabled: bool) -> contextlib.AbstractContextManager:
    """Route console log lines through tqdm while a progress bar is shown, so they do not break it."""
    if not bar_enabled:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def train_upsampler(
    clip: ClipModel,
    images: Sequence[Path],
    output: str | os.PathLike,
    settings: UpsamplerTrainSettings = UpsamplerTrainSettings(),
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    ranks: Ranks | None = None,
) -> TrainSummary:
    """Train a JBU upsampler for ``clip`` on ``images``; write resumable checkpoints and the final
    upsampler to ``output`` in the official layout. Returns what happened, for the summary line.

    Notes for the user (skipped images, resumption, interruption) go to ``report`` when given,
    else to this module's logger. ``ranks``: this process among data-parallel ones (default: those
    of an initialised ``torch.distributed`` process group, else a single process).
    """
    ranks = ranks or current_ranks(clip.device)
    quiet: Callable[[str], None] = lambda message: None  # noqa: E731 - other processes: no duplicate notes
    main_note = (report or log.info) if ranks.is_main else quiet
    output = Path(output)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(output)
    existing = list_checkpoints(folder)
    if existing and not resume:
        raise FieldError(
            "resume",
            f"{folder} holds checkpoints of an earlier run (last: step {existing[-1][0]}): "
            "add {resume} to continue it, or remove the folder to start over",
        )
    per_step = settings.batch_size * ranks.world
    steps = settings.steps if settings.steps is not None else math.ceil(len(images) / per_step)
    trainer = UpsamplerTrainer(clip, settings, ranks)
    stream = ImageStream(
        images, settings.crop_size, settings.seed, settings.workers, report=report, rank=ranks.index, world=ranks.world
    )
    run = RunCheckpoints(trainer, stream, folder, clip.identity, ranks)
    if existing:
        run.restore(existing[-1][1], (report or log.warning) if ranks.is_main else quiet)
        main_note(f"resuming from {existing[-1][1]} (step {trainer.step} of {steps})")
    elif resume:
        main_note(f"no checkpoint in {folder}: starting from step 0")
    if ranks.world > 1:
        main_note(f"{ranks.world} processes, {settings.batch_size} crops each: {per_step} crops per step")
    folder.mkdir(parents=True, exist_ok=True)
    start, begin = trainer.step, time.perf_counter()
    losses = _run_steps(trainer, stream, run, steps, progress and ranks.is_main, report or log.warning)
    if trainer.step == start:  # nothing trained (a finished run resumed): still agree on what was skipped
        run.share()
    if ranks.is_main:
        save_upsampler(output, trainer.upsampler, global_step=trainer.step, frugalvl=run.meta())
    ranks.barrier()
    return TrainSummary(
        output=output,
        steps=trainer.step,
        start_step=start,
        images=len(images),
        crops_seen=run.crops_seen,
        skipped=dict(stream.skipped),
        seconds=time.perf_counter() - begin,
        losses=losses,
    )


def _run_steps(
    trainer: UpsamplerTrainer,
    stream: ImageStream,
    run: RunCheckpoints,
    steps: int,
    progress: bool,
    note: Callable[[str], None],
) -> list[dict[str, float]]:
    """Steps up to ``steps``, checkpointing as set; the first Ctrl-C saves, then interrupts."""
    every = trainer.settings.checkpoint_every
    ranks = run.ranks
    losses: list[dict[str, float]] = []
    bar = _progress(steps, trainer.step, progress)
    batches = stream.batches(trainer.settings.batch_size, run.position)
    try:
        with StopOnInterrupt() as stop, _logs_beside(progress):
            while trainer.step < steps:
                batch, after = next(batches)
                tick = time.perf_counter()
                terms = trainer.train_step(batch)
                run.position, run.crops_seen = after, run.crops_seen + len(batch) * ranks.world
                losses.append(terms)
                if ranks.is_main:
                    run.log(terms, time.perf_counter() - tick)
                bar.update(1)
                bar.set_postfix(
                    rec=f"{terms['rec']:.4f}",
                    img=f"{terms['img']:.4f}",
                    loss=f"{terms['loss']:.4f}",
                    skipped=len(stream.skipped),
                    refresh=False,
                )
                if trainer.step % every == 0 or trainer.step >= steps:
                    run.save()
                if ranks.any(stop.requested):  # every process stops after the same step
                    saved = run.save()
                    if ranks.is_main:
                        note(f"interrupted: saved {saved}; resume from it to continue (resume)")
                    raise KeyboardInterrupt
    finally:
        batches.close()
        bar.close()
    return losses


def summary_line(summary: TrainSummary) -> str:
    """Two lines for the user: what was trained, and where the result is (the CLI adds how to use it)."""
    done = summary.steps - summary.start_step
    rate = f", {summary.steps_per_second:.2f} steps/s" if done else ""
    last = summary.losses[-1] if summary.losses else None
    loss = f"; last loss {last['loss']:.4f} (rec {last['rec']:.4f}, img {last['img']:.4f})" if last else ""
    return (
        f"trained {done} step(s) (now at step {summary.steps}) on {summary.images} image(s), "
        f"{summary.crops_seen} crops seen, {len(summary.skipped)} unreadable skipped, {summary.seconds:.1f} s{rate}{loss}\n"
        f"wrote {summary.output}"
    )
