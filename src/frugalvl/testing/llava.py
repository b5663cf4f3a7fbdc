"""A tiny random LLaVA saved as a model folder, built offline (docs/methods/coido.md#tiny-models-for-tests):
the public builder of :mod:`frugalvl.select.demo`, for tests."""

from __future__ import annotations

from frugalvl.select.demo import IMAGE_SIZE, PATCH, SPECIALS, WORDS, build_tiny_llava, build_tokenizer

__all__ = ["IMAGE_SIZE", "PATCH", "SPECIALS", "WORDS", "build_tiny_llava", "build_tokenizer"]
