"""Checks on what a browser sends (docs/app.md, "Security"): server paths, model names, file names,
the ``Host`` and ``Origin`` of a request, and server paths kept out of messages."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UserError

MAX_PATH_CHARS = 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def resolve_allowed(path: str, roots: Sequence[Path]) -> Path:
    """``path`` resolved (symlinks and ``..`` followed) when it lies under one of ``roots``; else a UserError.

    Relative paths are taken relative to the first root, never to the server's working directory.
    """
    if not roots:
        raise UserError("this server opens no server paths: start it with a data-root folder, or upload the file")
    return resolve_under(path, roots, "data-root")


def resolve_under(path: str, roots: Sequence[Path], what: str) -> Path:
    """``path`` resolved under one of ``roots`` (relative: under the first), else a UserError that
    says the same whether or not such a file exists (nothing outside the roots is looked at)."""
    text = (path or "").strip()
    if not text or any(c in text for c in "\x00\r\n") or len(text) > MAX_PATH_CHARS:
        raise UserError(f"give a file path (at most {MAX_PATH_CHARS} characters) under the server's {what} folder")
    candidate = Path(text)
    if text.startswith("~") or not candidate.is_absolute():
        candidate = roots[0] / text.lstrip("~")  # "~" is no home folder here: it stays under the root
    lexical = Path(os.path.normpath(candidate))
    shown = text if len(text) <= 120 else text[:117] + "..."
    outside = UserError(
        f"{shown} is outside the folders this server may read: use a path under "
        f"{', '.join(str(r) for r in roots)} (the server's {what} folders)"
    )
    if not any(lexical.is_relative_to(r.resolve()) or lexical.is_relative_to(r) for r in roots):
        raise outside
    try:
        resolved = lexical.resolve()  # symlinks followed: a link inside a root may point outside
    except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop, a lone surrogate
        raise UserError(f"{shown} cannot be resolved on this server: check the path") from None
    if not any(resolved.is_relative_to(r.resolve()) for r in roots):
        raise outside
    return resolved


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


# ------------------------------------------------------------------ model names typed in the page

_CLIP_NAME = re.compile(r"^(hf-hub:[A-Za-z0-9][\w.-]*/[\w.-]+|[A-Za-z0-9][\w.-]*(:[A-Za-z0-9][\w.-]*)?)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_UPSAMPLER_NAMES = ("official", "none", "bilinear")


def is_hub_name(option: str, text: str) -> bool:
    """Whether a model text is a name the hub (or the library) resolves, not a file: an open_clip
    name, ``ARCH:TAG`` or ``hf-hub:org/name`` for ``clip``; ``org/name`` for ``sam3``; ``official``,
    ``none`` or ``bilinear`` for ``upsampler``."""
    if ".." in text:
        return False
    if option == "clip":
        return bool(_CLIP_NAME.match(text)) and not text.endswith(_WEIGHT_SUFFIXES)
    if option == "upsampler":
        return text.lower() in _UPSAMPLER_NAMES
    return bool(_HUB_ID.match(text))


def page_model_spec(option: str, text: str, model_roots: Sequence[Path]) -> str:
    """The spec to load for a model named in the page: a hub name as given, or a file or folder under
    the model-root folder (``ARCH:FILE`` and ``local-dir:DIR`` keep their prefix). Anything else is
    refused with one message, whether or not such a file exists elsewhere on the server."""
    text = text.strip()
    refused = UserError(
        f"{option} {text[:120]!r}: the page may name a hub model, or a file in the server's model-root "
        "folder; this is neither (the server's own models are outside the folders this server may read)"
    )
    if not text or len(text) > MAX_PATH_CHARS or any(c in text for c in "\x00\r\n"):
        raise refused
    local = model_spec_path(text)
    if local is None and is_hub_name(option, text):
        names = [text, text.partition(":")[2]] if option == "clip" and not text.startswith("hf-hub:") else [text]
        if any(n and os.path.lexists(n) for n in names) or (model_roots and os.path.lexists(model_roots[0] / text)):
            # the loaders would read a file of that name: take it from the model root only
            if model_roots and os.path.lexists(model_roots[0] / text):
                return str(resolve_under(text, model_roots, "model-root"))
            raise refused
        return text
    if not model_roots:
        raise refused
    prefix, path = local if local is not None else ("", text)
    try:
        return prefix + str(resolve_under(path, model_roots, "model-root"))
    except UserError:
        raise refused from None


# ------------------------------------------------------------------ Host and Origin


def origin_refusal(config, method: str, headers: Mapping[str, str]) -> str | None:
    """Why a request may not reach the API (one line), or None.

    ``Host`` must name this server (:meth:`AppConfig.host_allowed`): a page of another site that a
    DNS name rebound to this address cannot use it. A state-changing request (not GET/HEAD/OPTIONS)
    must come from this server's own page: its ``Origin`` (else its ``Referer``) must be the origin
    the ``Host`` names; another site's page, a sandboxed page (``Origin: null``) and a request that
    says neither are refused.
    """
    host = headers.get("host", "")
    if not config.host_allowed(_hostname(host)):
        return (
            f"this server does not answer to host {host[:100]!r}: open it by its own address "
            "(or add the name to the server's allowed_hosts)"
        )
    if method.upper() in SAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is None:
        referer = headers.get("referer")
        if not referer:
            return "a request that changes something must come from this server's page (no Origin or Referer)"
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
        return f"requests from {origin[:100]!r} are refused: only this server's own page may change things"
    return None


def _hostname(host: str) -> str:
    """``Host`` without its port (``[::1]:8765`` -> ``::1``)."""
    host = host.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def scrub(text: str, *folders: Path) -> str:
    """``text`` without the server's own folders in it (a session's temporary files)."""
    for folder in folders:
        for form in {str(folder), str(Path(folder).resolve())}:
            text = re.sub(re.escape(form) + r"[^\s:'\"),]*", "(a server file)", text)
    return text
