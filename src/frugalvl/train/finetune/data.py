"""The subset to fine-tune on: records, global batches per epoch, and where the optimiser steps.

The subset is read in whatever format ``frugalvl select pick`` wrote it (the input's: LLaVA JSON, JSON
lines, ShareGPT, Parquet, ``save_to_disk``, WebDataset; :mod:`frugalvl.select.formats`), streamed one
row group or shard run at a time. Images held inside the subset (Parquet or Arrow cells, tar members)
are named by references and decoded from memory when a micro-batch needs them; their bytes are checked
here and dropped, so memory holds the conversations, never the images. A multi-image sample keeps every
image, in order.

The samples go through CoIDO's LLaVA data pipeline (``frugalvl.select.prompting`` and
``frugalvl.select.batching``): Vicuna v1 prompts, labels only on the answers, images padded to a
square, micro-batches of one modality planned from the seed and the epoch only (so a resumed run
sees the same batches). The same records in the same order give the same run in every format.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError
from .settings import FinetuneSettings

PICK_HINT = "give the selection written by `frugalvl select pick -o`"


@dataclass
class _Problems:
    """Unusable samples met while reading, by kind: (count, first sample id, first detail)."""

    found: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, kind: str, sample: str, detail: str) -> None:
        entry = self.found.setdefault(kind, [0, sample, detail])
        entry[0] += 1


def _is_image(data: bytes | None) -> bool:
    """Whether bytes held in the subset open as an image (the header only: cheap)."""
    from PIL import Image

    if not data:
        return False
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:  # noqa: BLE001 - any decoder refusal means the bytes are not an image
        return False


def _sample(k: int, item: Any, root: Path, problems: _Problems) -> dict[str, Any]:
    """One subset item as a work-folder-like sample (``image_path``, ``image_paths``, ``status``)."""
    rec = item.record
    sample_id = str(rec.get("id", k))
    sources = list(item.images) if item.embedded else [str(root / image) for image in item.images]
    if item.problem:
        problems.add("invalid", sample_id, item.problem)
    elif item.embedded:
        for source, data in zip(sources, item.payload or [None] * len(sources)):
            if not _is_image(data):
                problems.add("not an image", sample_id, source)
    else:
        for source in sources:
            if not Path(source).is_file():
                problems.add("missing", sample_id, source)
    sample = {
        "unique_idx": k,
        "id": sample_id,
        "image": rec.get("image"),
        "image_path": sources[0] if sources else None,
        "status": "ok" if sources else "text",
        "conversations": rec.get("conversations", []),
    }
    if len(sources) > 1:
        sample["image_paths"] = sources  # every image is fed (select.batching)
    return sample


def _refuse(data: Path, problems: _Problems) -> None:
    """One line for the first kind of unusable sample found: invalid samples, missing image files,
    image bytes that are empty or not an image."""
    found = problems.found
    if "invalid" in found:
        n, sample, why = found["invalid"]
        raise UserError(
            f"{data}: {n} samples cannot be used (e.g. sample {sample}: {why}): "
            "fix or remove them, or select again from a prepared input"
        )
    if "missing" in found:
        n, sample, source = found["missing"]
        raise UserError(
            f"{n} images of {data} are missing (e.g. {source}, sample {sample}): set image_root, the "
            "folder their 'image' paths are relative to"
        )
    if "not an image" in found:
        n, sample, source = found["not an image"]
        raise UserError(
            f"{data}: {n} images are empty or not images (e.g. sample {sample}, {source}): "
            "fix or remove those samples, or select again from a prepared input"
        )


def read_records(data: Path, image_root: str | None) -> list[dict[str, Any]]:
    """The subset as samples for the batching: ``image_path`` (a file, or a reference to bytes inside
    the subset), ``image_paths`` for a multi-image sample, ``status`` ok / text; in subset order."""
    from ...select import formats

    data = Path(data)
    if not data.exists():
        raise UserError(f"subset {data} does not exist: {PICK_HINT} (a file or a folder)")
    fmt = formats.detect(data)
    root = Path(image_root) if image_root else data.parent
    problems = _Problems()
    samples = [_sample(k, item, root, problems) for k, item in enumerate(formats.iter_items(data, fmt))]
    _refuse(data, problems)
    if not samples:
        raise UserError(f"{data} holds no samples: {PICK_HINT}, with at least one sample")
    return samples


def data_digest(path: Path) -> str:
    """The subset's identity (part of the result key: another subset is another result): the file's
    SHA-256, or a folder's files' (names and contents)."""
    from ...select.formats import input_digest

    return input_digest(path)


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
