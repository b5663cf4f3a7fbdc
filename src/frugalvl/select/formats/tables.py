"""Parquet files and Hugging Face ``save_to_disk`` folders (Arrow), streamed one row group at a time.

Columns: ``conversations`` (``from``/``value`` turns, or a JSON string of them) or ``messages``
(``role``/``content``), optional ``id``, ``dataset`` and ``image`` (or ``images``): a path under the
image root, raw bytes, or a ``datasets.Image`` struct (``bytes``/``path``); a list of them for a
multi-image sample. Image bytes stay in the input: later stages read them through a reference
(:mod:`.images`). Rows are numbered across the files in sorted name order.

Written: the same files, each holding only its selected rows (input order, schema and metadata
unchanged); a ``save_to_disk`` folder keeps its ``dataset_info.json`` and gets a ``state.json``
naming the written files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError
from ...fileio import atomic_path, write_json
from .base import Item
from .conversation import normalise
from .images import arrow_ref, cell_bytes, parquet_ref

BATCH = 1024  # rows turned into Python objects at a time (Arrow files)
TURNS = ("conversations", "messages")
IMAGES = ("image", "images")


def parquet_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise UserError(f"{path} holds no .parquet file: give a Parquet file or a folder of them")
    return files


def arrow_files(path: Path) -> list[Path]:
    if (path / "dataset_dict.json").is_file():
        splits = ", ".join(json.loads((path / "dataset_dict.json").read_text()).get("splits", []))
        raise UserError(f"{path} is a dataset dictionary ({splits}): give one split's folder, e.g. {path}/train")
    state = json.loads((path / "state.json").read_text())
    return [path / f["filename"] for f in state.get("_data_files", [])]


def _columns(names: Sequence[str], where: Path) -> tuple[str, str | None]:
    turns = next((c for c in TURNS if c in names), None)
    if turns is None:
        raise UserError(
            f"{where} has no 'conversations' (or 'messages') column (columns: {', '.join(names)}): "
            "give a table with the conversations"
        )
    return turns, next((c for c in IMAGES if c in names), None)


def _item(row: dict[str, Any], turns: str, image_col: str | None, ref) -> Item:
    value = row.get(turns)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    record = {k: v for k, v in row.items() if k not in (turns, image_col)}
    record, problem = normalise({**record, "conversations": value if isinstance(value, list) else []})
    cell = row.get(image_col) if image_col else None
    cells = cell if isinstance(cell, list) else [] if cell is None else [cell]
    names, sources, payload, embedded = [], [], [], False
    for k, c in enumerate(cells):
        data = cell_bytes(c)
        path = c.get("path") if isinstance(c, dict) else c if isinstance(c, str) else None
        if data is not None or isinstance(c, dict):
            embedded = True
            names.append(path or "embedded")
            sources.append(ref(image_col, k))
            payload.append(data)
        elif path:
            names.append(path)
            sources.append(path)
    if names:
        record["image"] = names[0] if len(names) == 1 else names
    if embedded and len(sources) != len(payload):
        problem = problem or "mixes image paths and image bytes"
    return Item(record, sources, embedded=embedded, payload=payload if embedded else None, problem=problem)


def iter_parquet(path: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    for file in parquet_files(path):
        name = str(file.resolve())
        pf = pq.ParquetFile(file)
        turns, image_col = _columns(pf.schema_arrow.names, file)
        for group in range(pf.num_row_groups):
            rows = pf.read_row_group(group).to_pylist()
            for r, row in enumerate(rows):
                yield _item(row, turns, image_col, lambda col, k, f=name, g=group, r=r: parquet_ref(f, g, r, col, k))


def iter_arrow(path: Path) -> Iterator[Item]:
    from .images import arrow_table

    for file in arrow_files(path):
        name = str(file.resolve())
        table = arrow_table(name)
        turns, image_col = _columns(table.column_names, file)
        for lo in range(0, table.num_rows, BATCH):
            for r, row in enumerate(table.slice(lo, BATCH).to_pylist(), start=lo):
                yield _item(row, turns, image_col, lambda col, k, f=name, r=r: arrow_ref(f, r, col, k))


def _split(chosen: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Chosen global row numbers as sorted local row numbers per file."""
    out: list[list[int]] = [[] for _ in sizes]
    starts, total = [], 0
    for n in sizes:
        starts.append(total)
        total += n
    import bisect

    for g in sorted(chosen):
        f = bisect.bisect_right(starts, g) - 1
        out[f].append(g - starts[f])
    return out


def write_parquet(path: Path, out: Path, chosen: Sequence[int]) -> None:
    import pyarrow.parquet as pq

    files = parquet_files(path)
    per_file = _split(chosen, [pq.ParquetFile(f).metadata.num_rows for f in files])
    out.mkdir(parents=True, exist_ok=True)
    for file, rows in zip(files, per_file):
        if not rows:
            continue
        pf = pq.ParquetFile(file)
        target = out / (file.name if path.is_file() else file.relative_to(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, pq.ParquetWriter(tmp, pf.schema_arrow) as writer:
            start = 0
            for group in range(pf.num_row_groups):
                n = pf.metadata.row_group(group).num_rows
                local = [r - start for r in rows if start <= r < start + n]
                if local:
                    writer.write_table(pf.read_row_group(group).take(local))
                start += n


def write_arrow(path: Path, out: Path, chosen: Sequence[int]) -> None:
    import pyarrow as pa

    from .images import arrow_table

    files = arrow_files(path)
    tables = [arrow_table(str(f.resolve())) for f in files]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file, table, rows in zip(files, tables, _split(chosen, [t.num_rows for t in tables])):
        if not rows:
            continue
        with atomic_path(out / file.name) as tmp, pa.OSFile(str(tmp), "wb") as sink:
            part = table.take(rows)
            with pa.ipc.new_stream(sink, part.schema) as writer:
                writer.write_table(part)
        written.append({"filename": file.name})
    if (path / "dataset_info.json").is_file():
        shutil.copyfile(path / "dataset_info.json", out / "dataset_info.json")
    state = json.loads((path / "state.json").read_text())
    fingerprint = hashlib.sha256(",".join(map(str, sorted(chosen))).encode()).hexdigest()[:16]
    write_json(out / "state.json", {**state, "_data_files": written, "_fingerprint": fingerprint})
