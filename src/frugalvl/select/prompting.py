"""A LLaVA conversation as the token ids and labels the coupled training sees
(docs/methods/coido.md#what-one-step-does).

Vicuna v1 template (LLaVA-1.5's ``conv_vicuna_v1``): the system line, then ``USER: … ASSISTANT: …</s>``
per exchange; labels are the answers (and their ``</s>``) only, −100 everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IMAGE_TAG = "<image>"  # where LLaVA data puts the image in a human turn
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ROLES = {"human": "USER", "gpt": "ASSISTANT"}


def has_image(sample: dict[str, Any]) -> bool:
    """Whether a work-folder sample is trained with its image (status ok and a path)."""
    return sample.get("status", "ok") == "ok" and bool(sample.get("image_path"))


def estimated_length(sample: dict[str, Any], image_tokens: int) -> int:
    """Length for length grouping, as LLaVA's ``modality_lengths``: words (+ image tokens), signed
    positive for image samples and negative for text-only ones."""
    words = sum(len(str(t.get("value", "")).split()) for t in sample["conversations"])
    return words + image_tokens if has_image(sample) else -max(words, 1)


def build_prompt(
    conversations: Sequence[dict[str, Any]], image_tokens: str | None
) -> tuple[str, list[tuple[int, int]]]:
    """Vicuna v1 prompt text and the character spans of the targets (each answer plus ``</s>``).

    The first human turn gets the image tokens in front, as LLaVA moves ``<image>`` there; a sample
    without a usable image gets no image tokens (``<image>`` is removed from its text).
    """
    text, spans = VICUNA_SYSTEM + " ", []
    turns = list(conversations)
    if turns and turns[0].get("from") != "human":  # LLaVA drops a leading non-human turn
        turns = turns[1:]
    for k, turn in enumerate(turns):
        value = str(turn.get("value", "")).replace(IMAGE_TAG, "").strip()
        role = ROLES.get(str(turn.get("from")), "USER")
        if role == "USER":
            if k == 0 and image_tokens:
                value = image_tokens + "\n" + value
            text += f"USER: {value} "
        else:
            text += "ASSISTANT: "
            start = len(text)
            text += value + "</s>"
            spans.append((start, len(text)))
    return text, spans


def tokenize_sample(
    tokenizer, conversations: Sequence[dict[str, Any]], image_tokens: str | None, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids and labels (−100 on system, human turns, image tokens and role names)."""
    from .losses import IGNORE_INDEX  # torch; this module stays importable without it (data.py uses IMAGE_TAG)

    text, spans = build_prompt(conversations, image_tokens)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    labels = [tid if any(s < b and e > a for a, b in spans) else IGNORE_INDEX for tid, (s, e) in zip(ids, offsets)]
    if tokenizer.bos_token_id is not None:
        ids, labels = [tokenizer.bos_token_id] + ids, [IGNORE_INDEX] + labels
    return ids[:max_length], labels[:max_length]
