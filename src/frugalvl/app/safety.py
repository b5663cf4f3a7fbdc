"""Path and file-name checks for what a browser sends (docs/app.md, "Safety")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError


def resolve_allowed(path: str, roots: Sequence[Path]) -> Path:
    """``path`` resolved (symlinks and ``..`` followed) when it lies under one of ``roots``; else a UserError.

    Relative paths are taken relative to the first root, never to the server's working directory.
    """
    if not roots:
        raise UserError("this server opens no server paths: start it with a data-root folder, or upload the file")
    text = (path or "").strip()
    if not text or "\x00" in text:
        raise UserError("give a file path under one of the server's data-root folders")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    raise UserError(
        f"{text} is outside the folders this server may read: use a path under {', '.join(str(r) for r in roots)}"
    )


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _looks_local(text: str) -> bool:
    return text.startswith(("/", ".", "~", "\\")) or text.endswith(_WEIGHT_SUFFIXES) or text.count("/") > 1


def model_spec_path(spec: str) -> tuple[str, str] | None:
    """``(prefix, path)`` when a model spec names a local file or folder, else None (a model or hub name).

    Accepts the spellings of :func:`frugalvl.models.clip.load_clip` (``ARCH:FILE``, ``local-dir:DIR``,
    a checkpoint file) and of :func:`frugalvl.models.sam3.load_sam3` (a folder, or ``org/name`` on the hub).
    """
    s = spec.strip()
    if s.startswith("hf-hub:"):
        return None
    if s.startswith("local-dir:"):
        return "local-dir:", s[len("local-dir:") :]
    arch, colon, rest = s.partition(":")
    if colon and arch and "/" not in arch and "\\" not in arch:
        return (f"{arch}:", rest) if _looks_local(rest) or "/" in rest else None  # ARCH:FILE, or ARCH:pretrained-tag
    return ("", s) if _looks_local(s) else None


def safe_filename(name: str, default: str = "image") -> str:
    """A file name with no folders and only harmless characters."""
    base = Path((name or "").replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._")[:80] or default
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix)[:8]
    return f"{stem}.{suffix}" if suffix else stem
