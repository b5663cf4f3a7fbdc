"""Small file helpers shared by every stage: atomic writes, JSON, and checks on output folders."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

# atomic_path's temporaries: ".<name>.<pid>-<8 random chars>.tmp<suffix of name>" (older runs: no "<pid>-").
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(?P<suffix>.*)$")
_UMASK_LOCK = threading.Lock()
_IN_FLIGHT: set[str] = set()  # this process's temporaries still being written


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _plain_open_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing file's own, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or an exception leaves no half-written file behind, and readers never see one. The final
    file gets the permissions a plain ``open()`` would give it (0666 minus the umask, or those of the
    file it replaces), not the 0600 of a temporary file. A killed run can leave its temporary behind;
    :func:`remove_stale_temporaries` clears those on the next run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    _IN_FLIGHT.add(tmp_path.name)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, _plain_open_mode(path))
        os.replace(tmp_path, path)
    finally:
        _IN_FLIGHT.discard(tmp_path.name)
        if tmp_path.exists():
            tmp_path.unlink()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists under another user
        return True
    return True


def is_stale_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary left by :func:`atomic_path` in a process that no longer runs."""
    name = Path(path).name
    match = _TEMP_NAME.match(name)
    if not match or not match["suffix"].startswith(Path(match["name"]).suffix):  # sidecars: .gpkg-journal
        return False
    if match["pid"] is None:
        return True
    pid = int(match["pid"])
    if pid == os.getpid():  # ours, or a killed run's that had the same pid (containers reuse them)
        return name not in _IN_FLIGHT
    return not _pid_running(pid)


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporaries a killed run of :func:`atomic_path` left in ``folder``; return them.

    Only names of the form ``.<name>.<pid>-XXXXXXXX.tmp<suffix>`` (or the older ``.<name>.XXXXXXXX.tmp<suffix>``)
    are touched, and only when their process is gone, so a run writing into the same folder keeps its own.
    A missing folder is fine (nothing to do).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    removed = []
    for path in candidates:
        if path.is_file() and not path.is_symlink() and is_stale_temporary(path):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), folder)
    return removed


def check_writable_dir(path: str | os.PathLike, option: str = "-o", create: bool = True) -> Path:
    """Make sure ``path`` is a folder this process can write into, creating it if missing.

    Call it before loading any model, so a bad output folder costs the user seconds, not a model load.
    Raises :class:`UserError` with one line naming ``option`` when ``path`` is a file, cannot be
    created, or refuses a test file. With ``create=False`` a missing folder is left missing and its
    nearest existing parent is checked instead (for commands that still validate other arguments).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder: give a folder name for the outputs")
    if not create and not path.exists():
        parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path} cannot be created in {parent}: give a folder you can write to")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{option} {path}: a file is in the way of this folder; give another folder") from None
    except OSError as exc:
        raise UserError(
            f"{option} {path} cannot be created ({exc.strerror or type(exc).__name__}): give a folder you can write to"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".frugalvl-write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"{option} {path} is not writable ({exc.strerror or type(exc).__name__}): give a folder you can write to"
        ) from None
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
