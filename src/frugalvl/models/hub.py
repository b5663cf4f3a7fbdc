"""Reaching the model hubs: whether a host can be reached at all, and one-line download failures.

Used by the loaders (:mod:`.clip`) and the weight check (:mod:`.weights`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def host_reachable(host: str) -> bool:
    """Whether ``host`` might be reached: False only when its name cannot be resolved and no proxy is set.

    A quick answer (no connection is opened) so an offline machine is told at once, not after the
    download libraries' minute of retries.
    """
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Drop records libraries send straight to the root logger (open_clip's ``logging.error``).

    Their failures reach the user as one :class:`UserError` line instead. While the block runs, the
    root logger has a handler (logging's last-resort stderr handler, which would print other loggers'
    warnings anyway), so such a call cannot install a handler of its own for the rest of the run.
    """
    root = logging.getLogger()
    guard = logging.lastResort or logging.NullHandler()
    drop_own = logging.Filter("\0")  # matches no logger name: refuses records created on the root logger itself
    added = not root.handlers
    if added:
        root.addHandler(guard)
    root.addFilter(drop_own)
    try:
        yield
    finally:
        root.removeFilter(drop_own)
        if added:
            root.removeHandler(guard)


@contextlib.contextmanager
def folder_load_errors(what: str, folder: os.PathLike | str, fix: str) -> Iterator[None]:
    """Any failure to load a local model folder becomes one line naming it and ``fix``.

    A folder can hold anything: weights pickled in ``pytorch_model.bin`` (refused when read weights-only),
    a truncated ``model.safetensors``, files of another model. Whatever the library raises for them
    (``OSError``, ``ValueError``, ``UnpicklingError``, a ``SafetensorError``, ...) is the user's to fix.
    """
    from ..errors import UserError

    try:
        yield
    except (UserError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - see above: a bad folder, whatever the library says
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"cannot load {what} from {folder} ({type(exc).__name__}: {reason}): {fix}") from None
