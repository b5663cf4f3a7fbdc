"""Identities of files and model weights, so results record exactly what produced them.

A name (``ViT-B-16``, a hub id) is its own identity. A local file is identified by its content: the
SHA-256 of the whole file up to :data:`WHOLE_FILE_LIMIT`, and of its size, first and last MiB above
it (checkpoints that differ differ there too, and a 15 GB model is not read whole on every run). A
local folder (a Hugging Face model folder) is identified by the identities of its files. Digests are
remembered per (path, size, modification time) within a process.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

WHOLE_FILE_LIMIT = 256 << 20  # files up to this size are hashed whole
EDGE_BYTES = 1 << 20


@lru_cache(maxsize=256)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        else:
            digest.update(str(size).encode())
            digest.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            digest.update(f.read(EDGE_BYTES))
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's whole content (for inputs such as a dataset's JSON)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """Content fingerprint of a file (see the module docstring), cached per path, size and time."""
    st = os.stat(path)
    return _fingerprint(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def path_identity(path: Path) -> str:
    """``file:…`` or ``folder:…`` for an existing local path."""
    if path.is_file():
        return f"file:{file_fingerprint(path)[:16]}"
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        digest.update(f"{p.relative_to(path).as_posix()}:{file_fingerprint(p)}\n".encode())
    return f"folder:{digest.hexdigest()[:16]}"


def weights_identity(spec: str | None) -> str | None:
    """What a model option names, as results record it: a content identity for a local file or folder
    (a different checkpoint at the same path is another model), ``name:…`` for a hub id or built-in name.

    ``PREFIX:PATH`` specs (``ARCH:FILE``, ``local-dir:PATH``) keep their prefix; ``key=path,...`` specs
    (the parts of a LLaVA) get one identity per part.
    """
    if not spec:
        return None
    text = str(spec)
    if "=" in text and "," in text:
        parts = [p.split("=", 1) for p in text.split(",") if "=" in p]
        return ",".join(f"{k}={weights_identity(v)}" for k, v in parts)
    path = Path(os.path.expanduser(text))
    if path.exists():
        return path_identity(path)
    prefix, sep, rest = text.partition(":")
    if sep and rest and Path(os.path.expanduser(rest)).exists():
        return f"{prefix}:{path_identity(Path(os.path.expanduser(rest)))}"
    return f"name:{text}"
