"""The same LLaVA records written in every input format ``frugalvl select prepare`` reads, for tests:
JSON lines, ShareGPT (``messages`` with roles), Parquet (image bytes as ``datasets.Image`` structs),
a ``save_to_disk``-shaped Arrow folder, and WebDataset tar shards."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROLES = {"human": "user", "gpt": "assistant"}


def _images(record: dict[str, Any]) -> list[str]:
    image = record.get("image")
    return [] if image is None else image if isinstance(image, list) else [image]


def write_jsonl(records: Sequence[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def to_sharegpt(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k != "conversations"}
    out["messages"] = [{"role": ROLES[t["from"]], "content": t["value"]} for t in record["conversations"]]
    return out


def write_sharegpt(records: Sequence[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps([to_sharegpt(r) for r in records]), encoding="utf-8")
    return path


def _table(records: Sequence[dict[str, Any]], root: Path):
    import pyarrow as pa

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    images = []
    for r in records:
        cells = [{"bytes": (root / i).read_bytes(), "path": i} for i in _images(r)]
        images.append(cells)
    return pa.table(
        {
            "id": pa.array([str(r["id"]) for r in records]),
            "image": pa.array(images, pa.list_(image_type)),
            "conversations": pa.array([r["conversations"] for r in records], pa.list_(turn)),
            "dataset": pa.array([r.get("dataset") for r in records], pa.string()),
        }
    )


def write_parquet(records: Sequence[dict[str, Any]], root: Path, folder: Path, files: int = 2, group: int = 16) -> Path:
    """``files`` Parquet files of consecutive records, row groups of ``group`` rows."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(records) // files)
    for k in range(files):
        part = records[k * step : (k + 1) * step]
        if part:
            pq.write_table(_table(part, root), folder / f"part-{k:05d}.parquet", row_group_size=group)
    return folder


def write_hf_disk(records: Sequence[dict[str, Any]], root: Path, folder: Path) -> Path:
    """A folder shaped as ``datasets.Dataset.save_to_disk`` writes it: Arrow stream file + state."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    table = _table(records, root)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps({"description": "test"}))
    state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "0", "_split": None}
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(records: Sequence[dict[str, Any]], root: Path, folder: Path, per_shard: int = 40) -> Path:
    """Shards ``shard-NNNNN.tar`` of ``KEY.json`` + ``KEY.jpg`` (``KEY.0.png``, … for several images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(records), per_shard):
        with tarfile.open(folder / f"shard-{s // per_shard:05d}.tar", "w") as tar:
            for j, r in enumerate(records[s : s + per_shard], start=s):
                key = f"{j:06d}"
                meta = {k: v for k, v in r.items() if k != "image"}
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                images = _images(r)
                for k, i in enumerate(images):
                    ext = Path(i).suffix.lstrip(".") or "png"
                    _add(tar, f"{key}.{ext}" if len(images) == 1 else f"{key}.{k}.{ext}", (root / i).read_bytes())
    return folder


GENERATED_TURNS = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]


def write_generated(
    folder: Path, fmt: str, n: int, images: Sequence[bytes], files: int = 4, row_group: int = 1000
) -> Path:
    """A large input for memory tests: ``n`` one-turn samples (ids ``0`` … ``n-1``), sample i holding
    ``images[i % len(images)]``, as ``files`` Parquet files (row groups of ``row_group`` rows) or tar
    shards (``fmt``: "parquet" or "webdataset")."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-n // files)
    meta = json.dumps({"conversations": GENERATED_TURNS}).encode()
    for f in range(files):
        rows = range(f * per_file, min(n, (f + 1) * per_file))
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {
                    "id": [str(i) for i in rows],
                    "image": [images[i % len(images)] for i in rows],
                    "conversations": [GENERATED_TURNS] * len(rows),
                }
            )
            pq.write_table(table, folder / f"part-{f}.parquet", row_group_size=row_group)
            continue
        with tarfile.open(folder / f"shard-{f}.tar", "w") as tar:
            for i in rows:
                _add(tar, f"{i:06d}.json", meta)
                _add(tar, f"{i:06d}.png", images[i % len(images)])
    return folder


def random_pngs(count: int, side: int = 32) -> list[bytes]:
    """``count`` PNGs of random pixels (about 3 KB each at 32 px): incompressible image bytes."""
    import numpy as np
    from PIL import Image

    out = []
    for seed in range(count):
        pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out
