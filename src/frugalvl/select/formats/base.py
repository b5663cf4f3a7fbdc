"""What every input format gives the prepare stage: one :class:`Item` per sample, in input order.

An item is the record in LLaVA shape (``id``, ``image``, ``conversations`` of ``from``/``value``
turns, ``dataset`` when given), its image sources (file paths relative to the image root, or
references to bytes inside the input: :mod:`.images`), the image bytes while the input is streamed
(checked, then dropped), and a problem found while reading (an unknown role, an image without its
JSON): such a sample is kept as ``invalid`` with that reason, the rest are prepared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    record: dict[str, Any]  # LLaVA shape
    images: list[str] = field(default_factory=list)  # image sources, in order
    embedded: bool = False  # the sources are references into the input (not paths under the image root)
    payload: list[bytes | None] | None = None  # the embedded images' bytes, while streaming
    problem: str | None = None  # why the sample cannot be used, found while reading


def format_error(path: Any, what: str, fix: str) -> str:
    """One line naming the input, what is wrong and the fix."""
    return f"{path}: {what}: {fix}"
