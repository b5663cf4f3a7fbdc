"""A small real LLaVA-format dataset from the ``easy-vqa`` package (MIT): the public builder of
:mod:`frugalvl.select.demo`, for tests."""

from __future__ import annotations

from frugalvl.select.demo import COLORS, TEXT_ONLY, easyvqa_records, question_type, write_easyvqa_llava

__all__ = ["COLORS", "TEXT_ONLY", "easyvqa_records", "question_type", "write_easyvqa_llava"]
