"""The subset to fine-tune on: records, global batches per epoch, and where the optimiser steps.

The samples go through CoIDO's LLaVA data pipeline (``frugalvl.select.prompting`` and
``frugalvl.select.batching``): Vicuna v1 prompts, labels only on the answers, images padded to a
square, micro-batches of one modality planned from the seed and the epoch only (so a resumed run
sees the same batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError
from .settings import FinetuneSettings


def read_records(data: Path, image_root: str | None) -> list[dict[str, Any]]:
    """The subset JSON as samples for the batching: ``image_path`` resolved, ``status`` ok / text."""
    from ...select.data import read_llava_json

    data = Path(data)
    if not data.is_file():
        raise UserError(f"subset file {data} does not exist: give the JSON written by `frugalvl select pick -o`")
    records = read_llava_json(data)
    root = Path(image_root) if image_root else data.parent
    samples, missing = [], []
    for k, rec in enumerate(records):
        image = rec.get("image")
        path = (root / image) if image else None
        if path is not None and not path.is_file():
            missing.append(str(path))
        samples.append(
            {
                "unique_idx": k,
                "id": str(rec.get("id", k)),
                "image": image,
                "image_path": str(path) if path is not None else None,
                "status": "ok" if image else "text",
                "conversations": rec.get("conversations", []),
            }
        )
    if missing:
        raise UserError(
            f"{len(missing)} images of {data} are missing (e.g. {missing[0]}): set image_root, the "
            "folder their 'image' paths are relative to"
        )
    if not samples:
        raise UserError(f"{data} holds no samples: give a non-empty LLaVA JSON")
    return samples


def data_digest(path: Path) -> str:
    """The subset file's identity (part of the result key: another subset is another result)."""
    from ...identity import file_digest

    return file_digest(path)


def as_subset(samples: list[dict[str, Any]]) -> Any:
    """The samples in the shape the micro-batches read (no scorer features, no clusters)."""
    from ...select.workdir import Subset

    n = len(samples)
    return Subset(samples, np.zeros((n, 0), np.float32), np.full(n, -1, np.int64), 0, [])


def plans_for(
    samples: list[dict[str, Any]], image_seq_length: int, settings: FinetuneSettings, world: int
) -> list[list[list[list[int]]]]:
    """Per epoch, the global batches (one micro-batch per process), LLaVA's modality-length grouping."""
    from ...select.batching import plan_batches
    from ...select.prompting import estimated_length

    lengths = [estimated_length(s, image_seq_length) for s in samples]
    return [
        plan_batches(lengths, settings.batch_size, world, settings.seed, e, settings.group_by_modality)
        for e in range(settings.epochs)
    ]


def step_ends(plans: Sequence[Sequence[Any]], accum: int) -> list[int]:
    """Global batch numbers after which the optimiser steps: full accumulation groups of each epoch
    (a last group that is not full is left out, as transformers 4.37's Trainer does)."""
    ends: list[int] = []
    first = 0
    for plan in plans:
        ends += [first + k + accum - 1 for k in range(0, len(plan) - accum + 1, accum)]
        first += len(plan)
    return ends
