"""Identities of model weights, so results record exactly which weights produced them.

A name (``ViT-B-16``, a hub id) is its own identity. A local file is identified by its SHA-256, so a
different checkpoint saved under the same path never reuses old results; digests are remembered per
(path, size, modification time) within a process. A local folder (a Hugging Face model folder) is
identified by the digests of its small files and the sizes and times of its weight shards.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

_SMALL = 1 << 20  # files below this size are hashed inside folders


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def weights_identity(spec: str | None) -> str | None:
    """``sha256:…`` for a local file, ``folder:…`` for a local folder, else the spec itself (a name or id).

    ``ARCH:FILE`` and ``local-dir:PATH`` specs keep their prefix in front of the file's identity.
    """
    if spec is None:
        return None
    text = str(spec)
    prefix, _, rest = text.partition(":")
    for candidate, head in ((text, ""), (rest, f"{prefix}:")):
        path = Path(os.path.expanduser(candidate)) if candidate else None
        if path is not None and path.is_file():
            return f"{head}sha256:{file_digest(path)}"
        if path is not None and path.is_dir():
            return f"{head}folder:{_folder_digest(path)}"
    return text


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        digest.update(str(path.relative_to(folder)).encode())
        if st.st_size < _SMALL:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()
