"""What one CoIDO training step costs with and without the scorer + losses (bench/coido.py, tests).

Times one training step (forward + backward + AdamW) of the MLLM alone, of the coupled model, and of
the scorer and losses alone from given logits, on the first micro-batch of a work folder's plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..precision import autocast
from ..select import losses as L
from ..select.batching import Batch, micro_batches, plan_batches
from ..select.mllm import load_mllm
from ..select.prompting import estimated_length
from ..select.train_settings import TrainSettings, check_train_settings
from ..select.trainer import CoupledModel, coupled_model
from ..select.workdir import read_subset


@dataclass
class StepCost:
    """Seconds per training step (forward + backward + AdamW), medians over repeats."""

    mllm_step_s: float  # the MLLM alone, standard LM loss
    coupled_step_s: float  # MLLM + scorer + CoIDO losses (the real step)
    scorer_losses_s: float  # scorer forward/backward + losses from given logits, alone
    batch_size: int
    seq_len: int

    @property
    def overhead(self) -> float:
        """Relative extra cost of the coupled step over the MLLM step."""
        return self.coupled_step_s / self.mllm_step_s - 1.0


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def step_cost(coupled: CoupledModel, batch: Batch, repeats: int = 3, precision: str = "fp32") -> StepCost:
    """Time one training step with and without the scorer + losses on ``batch`` (lr 0: weights stay).

    ``precision`` runs the forward passes under that autocast (frugalvl.precision), as training does.
    """
    mllm, scorer = coupled.mllm, coupled.scorer
    coupled.train()
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values)
    opt_mllm = torch.optim.AdamW([p for p in mllm.parameters() if p.requires_grad], lr=0.0)
    opt_all = torch.optim.AdamW([p for p in coupled.parameters() if p.requires_grad], lr=0.0)
    opt_scorer = torch.optim.AdamW([p for p in scorer.parameters()] + [coupled.s1, coupled.s2], lr=0.0)
    device = batch.input_ids.device

    def mllm_step():
        with autocast(device, precision):
            loss = mllm(**inputs, labels=batch.labels, use_cache=False).loss
        loss.backward()
        opt_mllm.step()
        opt_mllm.zero_grad(set_to_none=True)

    def coupled_step():
        with autocast(device, precision):
            total = coupled(batch).total
        total.backward()
        opt_all.step()
        opt_all.zero_grad(set_to_none=True)

    with torch.no_grad(), autocast(device, precision):
        logits = mllm(**inputs, use_cache=False).logits.detach()

    def scorer_step():
        with autocast(device, precision):
            total = L.coido_losses(
                scorer(batch.features),
                logits,
                batch.labels,
                batch.clusters,
                coupled.loss,
                coupled.s1,
                coupled.s2,
                coupled.lam,
            ).total
        total.backward()
        opt_scorer.step()
        opt_scorer.zero_grad(set_to_none=True)

    return StepCost(
        _median_time(mllm_step, repeats),
        _median_time(coupled_step, repeats),
        _median_time(scorer_step, repeats),
        int(batch.input_ids.shape[0]),
        int(batch.input_ids.shape[1]),
    )


def step_cost_from_work(work: Path, settings: TrainSettings, repeats: int = 3) -> StepCost:
    """:func:`step_cost` on the first micro-batch of ``work``'s training plan (single process)."""
    work = Path(work)
    check_train_settings(settings)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    subset = read_subset(work)
    llava = load_mllm(settings, device=device)
    coupled = coupled_model(llava, subset, settings).to(device)
    lengths = [estimated_length(s, llava.image_seq_length) for s in subset.samples]
    plan = plan_batches(lengths, settings.batch_size, 1, settings.seed, 0, settings.group_by_modality)
    plan.sort(key=lambda mega: -sum(lengths[i] > 0 for i in mega[0]))  # an image batch when there is one
    data = micro_batches(subset, [m[0] for m in plan[:1]], llava, settings.max_length, settings.image_aspect_ratio)
    precision = "bf16" if device == "cuda" and settings.precision in ("auto", "bf16") else "fp32"
    return step_cost(coupled, data[0].to(device), repeats, precision=precision)
