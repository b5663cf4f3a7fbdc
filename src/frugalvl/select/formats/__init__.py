"""Instruction data in every common format, read as one stream of samples and written back filtered
(docs/methods/coido.md#input-formats).

One module per format behind three functions: :func:`detect` (from the input's name and first
records), :func:`iter_items` (one :class:`~.base.Item` per sample, in input order: ``unique_idx`` is
that position) and :func:`write_selection` (a filtered copy of the input, nothing else changed).

========== ==================================================== =====================================
name       input                                                 selection written as
========== ==================================================== =====================================
llava      JSON list of LLaVA records                            JSON list, lowest r first
jsonl      the same records, one per line                        JSON lines, lowest r first
sharegpt   ShareGPT records (``conversations`` or ``messages``)  same container, lowest r first
parquet    a Parquet file or a folder of them                    the same files, selected rows
hf-disk    a Hugging Face ``save_to_disk`` folder                the same Arrow files, selected rows
webdataset uncompressed tar shards (``KEY.json`` + ``KEY.jpg``)  the same shards, selected keys
========== ==================================================== =====================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError
from ...identity import file_digest
from ..settings import INPUT_FORMATS
from . import jsonfile, tables, webdataset
from .base import Item
from .conversation import is_sharegpt
from .images import is_reference, open_image

FORMATS = INPUT_FORMATS[1:]
JSON_FORMATS = ("llava", "jsonl", "sharegpt")
TABLE_FORMATS = ("parquet", "hf-disk")

__all__ = ["FORMATS", "Item", "detect", "input_digest", "is_reference", "iter_items", "open_image", "write_selection"]


def _first_records(path: Path, n: int = 50) -> list[Any]:
    try:
        if jsonfile.is_lines(path):
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for _, line in zip(range(n), f) if line.strip()]
        data = json.loads(path.read_text(encoding="utf-8"))
        return data[:n] if isinstance(data, list) else []
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []  # the reader says what is wrong


def detect(path: str | Path) -> str:
    """The format of an input, from its name and content (one line when none fits)."""
    path = Path(path)
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf-disk"
        if any(path.rglob("*.parquet")):
            return "parquet"
        if any(path.rglob("*.tar")):
            return "webdataset"
        raise UserError(
            f"{path} is a folder without Parquet files, tar shards or a save_to_disk dataset: give one of those"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".tar":
        return "webdataset"
    if any(is_sharegpt(r) for r in _first_records(path)):
        return "sharegpt"
    return "jsonl" if jsonfile.is_lines(path) else "llava"


def iter_items(path: str | Path, fmt: str) -> Iterator[Item]:
    """Every sample of the input, in input order."""
    path = Path(path)
    if fmt in JSON_FORMATS:
        return jsonfile.iter_items(path, sharegpt=fmt == "sharegpt")
    if fmt == "parquet":
        return tables.iter_parquet(path)
    if fmt == "hf-disk":
        return tables.iter_arrow(path)
    if fmt == "webdataset":
        return webdataset.iter_items(path)
    raise ValueError(f"unknown format {fmt!r}")


def write_selection(
    path: str | Path, fmt: str, out: str | Path, chosen: Sequence[int], extra: Sequence[dict[str, Any]] | None = None
) -> None:
    """The chosen samples (positions) of the input, in its format, at ``out`` (a file for the JSON
    formats, in the order given; a folder for the others, in input order). ``extra``: fields added to
    each written JSON record (the JSON formats only)."""
    path, out = Path(path), Path(out)
    if fmt in JSON_FORMATS:
        jsonfile.write(path, out, chosen, extra)
    elif fmt == "parquet":
        tables.write_parquet(path, out, chosen)
    elif fmt == "hf-disk":
        tables.write_arrow(path, out, chosen)
    elif fmt == "webdataset":
        webdataset.write(path, out, chosen)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def input_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        digest.update(f"{p.relative_to(path).as_posix()}:{file_digest(p)}\n".encode())
    return digest.hexdigest()
