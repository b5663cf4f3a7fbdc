"""ShareGPT-style conversations in LLaVA shape (docs/methods/coido.md#input-formats).

ShareGPT records hold ``conversations`` with ``from``/``value`` turns (roles ``human``/``gpt`` or
``user``/``assistant``) or ``messages`` with ``role``/``content`` turns, where ``content`` may be a
list of parts (``{"type": "text", "text": …}``, ``{"type": "image"}``). They become ``human``/``gpt``
turns with ``<image>`` where an image part was; ``system`` turns are dropped (LLaVA data has none);
any other role makes the sample invalid.
"""

from __future__ import annotations

from typing import Any

from ..prompting import IMAGE_TAG

ROLE_MAP = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
DROPPED = ("system",)


def is_sharegpt(record: Any) -> bool:
    """Whether a record uses a ShareGPT spelling that LLaVA data does not (``messages`` or other roles)."""
    if not isinstance(record, dict):
        return False
    if isinstance(record.get("messages"), list):
        return True
    turns = record.get("conversations")
    return isinstance(turns, list) and any(
        isinstance(t, dict) and ("role" in t or t.get("from") in ("user", "assistant", "system")) for t in turns
    )


def _text(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image":
            parts.append(IMAGE_TAG)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "\n".join(parts)


def normalise(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The record with LLaVA turns (and ``image`` from ``images``), and the reason it is unusable (or None)."""
    raw = record.get("messages") if isinstance(record.get("messages"), list) else record.get("conversations")
    out = {k: v for k, v in record.items() if k not in ("messages", "conversations", "images")}
    if "image" not in out and record.get("images") is not None:
        images = record["images"]
        out["image"] = images[0] if isinstance(images, list) and len(images) == 1 else images
    turns, problem = [], None
    for k, turn in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(turn, dict):
            problem = problem or f"turn {k} is not a mapping"
            continue
        role = turn.get("from", turn.get("role"))
        value = _text(turn.get("value", turn.get("content")))
        if role in DROPPED:
            continue
        if role not in ROLE_MAP:
            problem = problem or f"turn {k} has role {role!r}, not one of user, assistant, human, gpt, system"
            continue
        turns.append({"from": ROLE_MAP[role], "value": value})
    out["conversations"] = turns
    return out, problem
