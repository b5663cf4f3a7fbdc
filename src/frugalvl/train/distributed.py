"""Data-parallel upsampler training across processes, GPUs and nodes (``accelerate launch``, ``torchrun``).

The official SimFeatUp run used Lightning DDP on 2 GPUs with a batch of 4 per GPU
(docs/methods/simfeatup.md#optimisation-and-checkpoints). Here every process builds the same modules from the same
seed (so no weight broadcast is needed), trains on its own share of the image stream (:class:`~.images.ImageStream`
``rank``/``world``), and the gradients are averaged over the processes before each optimiser step
(:meth:`~.trainer.UpsamplerTrainer.backward`), which is what DDP computes. :class:`Ranks` is the small slice of
``torch.distributed`` the training needs; with one process it does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Ranks:
    """Which process this is among how many; every method is a no-op for a single process."""

    index: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def average_(self, flat: torch.Tensor) -> torch.Tensor:
        """Average ``flat`` over the processes, in place (all of them must call this)."""
        if self.world > 1:
            torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
            flat.div_(self.world)
        return flat

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on one (e.g. a Ctrl-C that reached one process)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device or "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return bool(t.item() > 0)

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order (picklable plain data)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def launched_processes() -> int:
    """How many processes the launcher (``accelerate launch``, ``torchrun``) started; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_ranks(device: torch.device | None = None) -> Ranks:
    """The ranks of an already initialised process group, else a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(dist.get_rank(), dist.get_world_size(), device)
    return Ranks(device=device)


def init_ranks(device_option: str = "auto") -> Ranks:
    """Join the launcher's process group through accelerate (NCCL on GPUs, gloo with ``--device cpu``
    or without CUDA); each process then trains on ``cuda:LOCAL_RANK``. A single process is left alone."""
    if launched_processes() == 1:
        return Ranks()
    from accelerate import PartialState

    state = PartialState(cpu=device_option == "cpu" or not torch.cuda.is_available())
    return Ranks(state.process_index, state.num_processes, torch.device(state.device))
