"""Where a sample's image comes from, and opening it: a file, or bytes inside a Parquet, Arrow or tar file.

A file image is its path. An image kept inside the input is named by a *reference* that says where its
bytes are, so that later stages decode it from memory without extracting anything to disk:

* ``tar://SHARD#OFFSET:SIZE``: the member's bytes at that offset of an uncompressed tar shard;
* ``parquet://FILE#GROUP:ROW:COLUMN:ITEM``: row ROW of row group GROUP, cell COLUMN (item ITEM of a
  list of images);
* ``arrow://FILE#ROW:COLUMN:ITEM``: the same in a Hugging Face ``save_to_disk`` Arrow file.

Reading a Parquet or Arrow cell keeps a few row groups (or memory-mapped files) cached per process.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

SCHEMES = ("tar://", "parquet://", "arrow://")


def is_reference(source: str | None) -> bool:
    """Whether an image source names bytes inside the input rather than a file."""
    return bool(source) and str(source).startswith(SCHEMES)


def tar_ref(shard: str, offset: int, size: int) -> str:
    return f"tar://{shard}#{offset}:{size}"


def parquet_ref(file: str, group: int, row: int, column: str, item: int = 0) -> str:
    return f"parquet://{file}#{group}:{row}:{column}:{item}"


def arrow_ref(file: str, row: int, column: str, item: int = 0) -> str:
    return f"arrow://{file}#{row}:{column}:{item}"


def cell_bytes(value: Any) -> bytes | None:
    """The image bytes of a table cell: raw bytes, or a ``datasets.Image`` struct's ``bytes``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray, memoryview)):
        return bytes(value["bytes"])
    return None


@lru_cache(maxsize=4)
def _row_group(file: str, group: int, column: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(file).read_row_group(group, columns=[column]).column(0)


@lru_cache(maxsize=8)
def arrow_table(file: str):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(file, "r")).read_all()  # memory-mapped: no copy


def _item(value: Any, item: int) -> Any:
    return value[item] if isinstance(value, list) else value


def reference_bytes(source: str) -> bytes:
    """The bytes a reference names (OSError when they cannot be read)."""
    scheme, rest = source.split("://", 1)
    path, _, where = rest.rpartition("#")
    try:
        if scheme == "tar":
            offset, size = (int(x) for x in where.split(":"))
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
            if len(data) != size:
                raise OSError(f"{path} ends before the image at {offset}")
            return data
        if scheme == "parquet":
            group, row, column, item = where.split(":")
            value = _item(_row_group(path, int(group), column)[int(row)].as_py(), int(item))
        else:
            row, column, item = where.split(":")
            value = _item(arrow_table(path).column(column)[int(row)].as_py(), int(item))
    except (ValueError, KeyError, IndexError) as exc:
        raise OSError(f"cannot read image {source}: {exc}") from None
    found = cell_bytes(value)
    if found is None:
        raise OSError(f"{source} holds no image bytes")
    return found


@contextmanager
def open_image(source: str):
    """A PIL image from a file path or a reference (decoded from memory), closed on exit."""
    from PIL import Image

    im = Image.open(io.BytesIO(reference_bytes(source))) if is_reference(source) else Image.open(source)
    try:
        yield im
    finally:
        im.close()


def check_bytes(data: bytes | None, verify: bool) -> str:
    """ "ok", "missing" (no bytes) or "corrupt" for an image held in memory."""
    if not data:
        return "missing"
    if not verify:
        return "ok"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return "ok"
    except Exception:  # noqa: BLE001 - any decoder failure means the image is unusable
        return "corrupt"
