"""Numeric precision by name, shared by every method that runs a model: ``auto``, ``fp32``, ``bf16``, ``fp16``.

``auto`` means what the official code of each method does on a GPU, mixed precision under autocast with
fp32 weights: bf16 on CUDA (fp16 where the GPU has no bf16), and plain fp32 everywhere else.
torch is imported lazily, so option parsers can use :data:`PRECISIONS` without it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FIXED = PRECISIONS[1:]  # the explicit choices (for models loaded in one dtype, e.g. CLIP)
MIXED = ("bf16", "fp16")


def _device_type(device: Any) -> str:
    return (
        device if isinstance(device, str) and ":" not in device else getattr(device, "type", str(device).split(":")[0])
    )


def resolve_precision(precision: str, device: Any) -> str:
    """``precision`` with ``auto`` replaced by what it means on ``device``; unknown names are refused."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is unknown: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if _device_type(device) != "cuda":
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_dtype(precision: str, device: Any) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``; None means plain fp32 (no autocast).

    fp16 autocast is refused off CUDA (the CPU has no fp16 autocast worth using).
    """
    import torch

    resolved = resolve_precision(precision, device)
    if resolved == "fp16" and _device_type(device) != "cuda":
        raise UserError("precision fp16 needs a CUDA device: use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[resolved]


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    """A context running its body at ``precision`` on ``device`` (a null context for fp32)."""
    import torch

    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device_type(device), dtype=dtype)
