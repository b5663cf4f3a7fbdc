"""LLaVA JSON, JSON lines, and ShareGPT records in either container.

Read: the list of records (a JSON list, or one record per line for ``.jsonl``), each in LLaVA shape
(ShareGPT turns normalised by :mod:`.conversation`); images are paths under the image root.
Written: the selected records unchanged, in the order given (lowest r first), in the input's container.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError
from ...fileio import atomic_path
from .base import Item
from .conversation import normalise

HINT = "give a LLaVA-format JSON list (or JSON lines) of samples"


def is_lines(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def load(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON list or JSON-lines file, with one-line errors for bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: give the LLaVA JSON, e.g. llava_v1_5_mix665k.json")
    try:
        text = path.read_text(encoding="utf-8")
        if is_lines(path):
            data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): {HINT}") from None
    if not isinstance(data, list):
        raise UserError(f"{path} holds a {type(data).__name__}, not a list of samples: {HINT}")
    if not data:
        raise UserError(f"{path} holds no sample (an empty list): {HINT}")
    for i, sample in enumerate(data):
        turns = sample.get("conversations", sample.get("messages")) if isinstance(sample, dict) else None
        if not isinstance(turns, list):
            raise UserError(f"{path}: sample {i} has no 'conversations' list: every sample needs one (LLaVA format)")
    return data


def _images(record: dict[str, Any]) -> list[str]:
    image = record.get("image")
    images = image if isinstance(image, list) else [image]
    return [i for i in images if isinstance(i, str) and i]


def iter_items(path: Path, sharegpt: bool) -> Iterator[Item]:
    for record in load(path):
        problem = None
        if sharegpt:
            record, problem = normalise(record)
        yield Item(record, _images(record), problem=problem)


def write(path: Path, out: Path, chosen: Sequence[int], extra: Sequence[dict[str, Any]] | None) -> None:
    """The chosen records (positions, in that order), ``extra`` fields merged in, in ``path``'s container."""
    records = load(path)
    selected = [records[i] if extra is None else {**records[i], **extra[j]} for j, i in enumerate(chosen)]
    if not is_lines(path):
        from ...fileio import write_json

        write_json(out, selected, indent=None)
        return
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in selected:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
