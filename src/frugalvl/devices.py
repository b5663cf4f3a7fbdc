"""Choosing the torch device from a user's ``--device`` value."""

from __future__ import annotations

import torch

from .errors import UserError
from .settings import FieldError


def resolve_device(name: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a checked ``torch.device``."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FieldError("device", f"{{device}} {name}: no CUDA GPU is visible here; use {{device}} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FieldError("device", f"{{device}} {name}: only {torch.cuda.device_count()} GPU(s) here")
    return device
