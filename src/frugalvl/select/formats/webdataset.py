"""WebDataset tar shards: ``KEY.json`` (the record) beside ``KEY.jpg`` (or ``KEY.0.png``, … for several
images), read as a stream, one sample at a time.

A sample is the run of members sharing a key (the name up to the first dot of its base name); shards
are taken in sorted name order, and a sample's numbered images (``KEY.0.png``, ``KEY.1.png``, …) in the
order of their numbers. Images stay in the shard: a reference holds the member's offset and
size (:mod:`.images`), so shards must be uncompressed ``.tar``. A key with images and no JSON is an
invalid sample; its id is the key.

Written: shards of the same names holding every member of the selected keys, unchanged, in input order.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError
from .base import Item
from .conversation import normalise
from .images import tar_ref

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def shards(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.tar") if p.is_file())
    if not files:
        raise UserError(f"{path} holds no .tar shard: give a WebDataset shard or a folder of them")
    return files


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member: the key runs to the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _members(shard: Path) -> Iterator[tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]:
    """(key, [(member, bytes)]) for each run of members sharing a key, streamed."""
    try:
        tar = tarfile.open(shard, "r|")  # uncompressed only: references point into the file
    except tarfile.TarError as exc:
        raise UserError(f"{shard} is not an uncompressed tar shard ({exc}): give .tar shards") from None
    key: str = ""
    group: list[tuple[tarfile.TarInfo, bytes]] = []
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            k, _ = split_name(member.name)
            if k != key and group:
                yield key, group
                group = []
            key = k
            f = tar.extractfile(member)
            group.append((member, f.read() if f is not None else b""))
    if group:
        yield key, group


def _image_order(name: str) -> tuple[int, str]:
    """``KEY.2.png`` before ``KEY.10.png``: a numbered member by its number, the others by name."""
    number = split_name(name)[1].rpartition(".")[0]
    return (int(number), name) if number.isdigit() else (-1, name)


def _item(shard: Path, key: str, group: list[tuple[tarfile.TarInfo, bytes]]) -> Item:
    record: dict[str, Any] | None = None
    sources: list[str] = []
    payload: list[bytes | None] = []
    names: list[str] = []
    for member, data in sorted(group, key=lambda m: _image_order(m[0].name)):
        ext = split_name(member.name)[1]
        if ext == "json":
            try:
                record = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = {}
        elif ext.rpartition(".")[2] in IMAGE_EXTENSIONS:
            sources.append(tar_ref(str(shard.resolve()), member.offset_data, member.size))
            payload.append(data)
            names.append(member.name)
    problem = None
    if record is None or not isinstance(record, dict):
        record, problem = {}, "an image without a JSON record" if record is None else "its JSON is not a record"
    record = {"id": key, **record}
    record, bad_turns = normalise(record)
    if names:
        record["image"] = names[0] if len(names) == 1 else names
    else:
        record.pop("image", None)
    return Item(record, sources, embedded=True, payload=payload, problem=problem or bad_turns)


def iter_items(path: Path) -> Iterator[Item]:
    for shard in shards(path):
        for key, group in _members(shard):
            yield _item(shard, key, group)


def write(path: Path, out: Path, chosen: Sequence[int]) -> None:
    keep, position = set(int(i) for i in chosen), 0
    out.mkdir(parents=True, exist_ok=True)
    for shard in shards(path):
        target = out / (shard.name if path.is_file() else shard.relative_to(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        wrote = False
        try:
            with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as sink:
                for _, group in _members(shard):
                    if position in keep:
                        for member, data in group:
                            sink.addfile(member, io.BytesIO(data))
                        wrote = True
                    position += 1
            if wrote:
                os.replace(partial, target)  # a shard without a selected sample is not written
        finally:
            partial.unlink(missing_ok=True)
