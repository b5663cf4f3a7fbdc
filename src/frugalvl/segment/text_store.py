"""Text features kept on disk between runs: a ``text_cache`` for the segmenters, one file per prompt.

The segmenters take a ``text_cache`` mapping keyed by (model identity, precision/dtype, templates,
query); the app keeps one in memory. :class:`TextStore` is the same mapping in a folder, so runs of
the command line, scenes and Ray workers on one machine encode each query once per model: the
80-template text classifier of a ViT-B/16 CLIP is 80 text-tower passes per query on every run
otherwise. Values are tensors or tuples of tensors, written atomically and read back bit for bit
(results cannot change); the key names the model by its identity (a content fingerprint for local
weights), so other weights never share an entry.

On by default: :func:`default_text_store` keeps the entries in ``$XDG_CACHE_HOME/frugalvl/text-features``
(``~/.cache/…``); ``FRUGALVL_TEXT_CACHE`` names another folder, or turns the store off when set to an
empty string or ``off``. Entries are a few kB per query and never go stale (the key holds the model's
content fingerprint), so the folder may be deleted at any time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_path, user_cache_folder

log = logging.getLogger(__name__)

ENV = "FRUGALVL_TEXT_CACHE"


class TextStore(MutableMapping):
    """A mapping from hashable keys (tuples of strings and numbers) to tensors, one ``.pt`` file per key."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def _path(self, key: Any) -> Path:
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return self.folder / digest[:2] / f"{digest}.pt"

    def __contains__(self, key: object) -> bool:
        return self._path(key).is_file()

    def __getitem__(self, key: Any) -> Any:
        path = self._path(key)
        try:
            entry = torch.load(path, map_location=_where, weights_only=True)
        except FileNotFoundError:
            raise KeyError(key) from None
        except Exception as exc:  # a damaged entry is a miss: the features are encoded again
            log.warning("ignoring the unreadable text cache entry %s (%s)", path, exc)
            raise KeyError(key) from None
        if entry.get("key") != repr(key):  # a hash collision, however unlikely
            raise KeyError(key)
        return entry["value"]

    def __setitem__(self, key: Any, value: Any) -> None:
        path = self._path(key)
        try:
            with atomic_path(path) as tmp:
                torch.save({"key": repr(key), "value": _detached(value)}, tmp)
        except OSError as exc:  # a read-only or full cache folder costs time, never a run
            log.warning("could not write the text cache entry %s (%s)", path, exc)

    def __delitem__(self, key: Any) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a TextStore cannot list its keys (files are named by hash)")

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.pt"))


def _where(storage: Any, location: str) -> Any:
    """Back on the device the features were computed on (same machine, same run set-up), else the CPU."""
    if location.startswith("cuda") and torch.cuda.is_available():
        return storage.cuda(int(location.split(":")[1]) if ":" in location else None)
    return storage


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


OFF = ("", "0", "off", "no", "none", "false")


def default_text_folder() -> Path | None:
    """Where runs keep text features: ``FRUGALVL_TEXT_CACHE`` when set (None when it says off), else the
    user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value.strip()).expanduser()
    return user_cache_folder("text-features")


def default_text_store() -> TextStore | None:
    """The store of :func:`default_text_folder`, or None when it is turned off."""
    folder = default_text_folder()
    return None if folder is None else TextStore(folder)
