"""Tiny random CLIP checkpoints for tests: the public builders of :mod:`frugalvl.models.tiny`."""

from __future__ import annotations

from frugalvl.models.tiny import (
    CONTEXT_LENGTH,
    VOCAB_SIZE,
    tiny_clip,
    write_tiny_openai_clip,
    write_tiny_torchscript_clip,
)

__all__ = ["CONTEXT_LENGTH", "VOCAB_SIZE", "tiny_clip", "write_tiny_openai_clip", "write_tiny_torchscript_clip"]
