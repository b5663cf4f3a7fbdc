"""Small file helpers shared by every stage: atomic writes, JSON, and checks on output folders."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
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


def user_cache_folder(name: str) -> Path:
    """``<user cache>/frugalvl/<name>``: the user's cache is ``$XDG_CACHE_HOME`` when set, else ``~/.cache``."""
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache") / "frugalvl" / name


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
        with disk_full_is_a_user_error(path):
            yield tmp_path
            if tmp_path.is_file():
                os.chmod(tmp_path, _plain_open_mode(path))
            os.replace(tmp_path, path)
    finally:
        _IN_FLIGHT.discard(tmp_path.name)
        if tmp_path.exists():
            tmp_path.unlink()


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: GDAL wraps the OS error) says the disk or quota is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def disk_full_error(path: str | os.PathLike) -> UserError:
    return UserError(
        f"no space left on the device writing {path}: free some space and run the same command again "
        "(finished outputs are kept)"
    )


@contextlib.contextmanager
def disk_full_is_a_user_error(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``path`` into one line (docs/reliability.md#faults-that-do-not-stick)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(path) from None
        raise


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


# ---------------------------------------------------------------------------------------------
# Who owns an output path (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make)
# ---------------------------------------------------------------------------------------------


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    recorded: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    field: str = "out",
    owner: type | None = None,
) -> Path:
    """Refuse an output ``path`` that would replace a file this run did not make; return it.

    The one ownership check every command makes before it writes (and before any model loads):

    * ``path`` is one of the ``inputs`` (the same file, through any link), or lies inside an input that
      is a folder (a work folder) where it is an existing file, or in a subfolder: refused always,
      ``overwrite`` or not (a new file directly in that folder is fine);
    * ``path`` exists and is none of the ``recorded`` files (outputs a frugalvl run wrote down in its
      record: ``<stem>_run.json``, a stage's ``meta.json``, a checkpoint): refused unless ``overwrite``.

    Messages name the output by its settings ``field`` (a :class:`~frugalvl.settings.FieldError`).
    """
    from .settings import FieldError

    path = Path(path).expanduser()
    exists = path.exists() or path.is_symlink()
    ours = exists and any(_same_path(path, Path(r).expanduser()) for r in recorded)
    for item in inputs:
        item = Path(item).expanduser()
        if _same_path(path, item):
            raise FieldError(
                field, f"{{{field}}} {path} is an input of this run: write the output to another path", owner
            )
        if item.is_dir() and _inside(path, item) and not ours and (exists or path.parent.resolve() != item.resolve()):
            raise FieldError(
                field, f"{{{field}}} {path} lies inside the input folder {item}: write the output elsewhere", owner
            )
    if overwrite or not exists or ours:
        return path
    raise FieldError(
        (field, "overwrite"),
        f"{{{field}}} {path} exists and no frugalvl run recorded writing it: give another path, or "
        "{overwrite} to replace it",
        owner,
    )


LEDGER_NAME = ".frugalvl-outputs.json"  # a folder's files that frugalvl runs claimed, for commands without a record


def claimed_outputs(folder: str | os.PathLike) -> list[Path]:
    """The files in ``folder`` that a frugalvl run claimed in its ledger (:func:`claim_outputs`); [] when none."""
    folder = Path(folder)
    try:
        names = json.loads((folder / LEDGER_NAME).read_text()).get("written", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [folder / n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")]


def claim_outputs(paths: Iterable[str | os.PathLike]) -> None:
    """Record ``paths`` as frugalvl's own in their folders' ledgers, *before* writing them, so a killed run's
    half-written outputs are resumed or replaced by the next run instead of refused as someone else's."""
    by_folder: dict[Path, list[str]] = {}
    for path in paths:
        path = Path(path).expanduser().absolute()
        by_folder.setdefault(path.parent, []).append(path.name)
    for folder, names in by_folder.items():
        old = [p.name for p in claimed_outputs(folder)]
        new = sorted(set(old) | set(names))
        if new != sorted(old):
            write_json(folder / LEDGER_NAME, {"written": new})


def check_outputs(
    paths: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike] = (),
    recorded: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    field: str = "outdir",
    owner: type | None = None,
    claim: bool = False,
) -> list[Path]:
    """:func:`check_output` on every path (a file claimed in its folder's ledger counts as recorded), then,
    with ``claim``, every path claimed (:func:`claim_outputs`). Returns the paths. Commands check early
    (before any model loads) and claim right before they write, so a refused run leaves no ledger behind."""
    inputs, recorded = list(inputs), list(recorded)
    checked = []
    for path in paths:
        path = Path(path).expanduser()
        checked.append(check_output(path, inputs, [*recorded, *claimed_outputs(path.parent)], overwrite, field, owner))
    if claim:
        claim_outputs(checked)
    return checked


def check_folder_output(
    folder: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    recorded: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    field: str = "out",
    owner: type | None = None,
    can_overwrite: bool = True,
) -> Path:
    """An output *folder* a command fills with files of its own: refused when it is, holds or lies inside an
    input, and when it holds anything (hidden temporaries and the lock aside) while none of ``recorded``
    exists in it (no frugalvl run of this command wrote there), unless ``overwrite`` (the remedy the
    message names when ``can_overwrite``)."""
    from .settings import FieldError

    folder = Path(folder).expanduser()
    for item in inputs:
        item = Path(item).expanduser()
        if _same_path(folder, item) or _inside(folder, item) or (folder.exists() and _inside(item, folder)):
            raise FieldError(
                field,
                f"{{{field}}} {folder} is, holds or lies inside the input {item}: write the output elsewhere",
                owner,
            )
    if overwrite or not folder.is_dir() or any(Path(r).exists() for r in recorded):
        return folder
    mine = {LOCK_NAME, LEDGER_NAME}
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in mine and not _TEMP_NAME.match(p.name))
    if not foreign:
        return folder
    remedy = ", or {overwrite} to write into it" if can_overwrite else ""
    raise FieldError(
        (field, "overwrite") if can_overwrite else field,
        f"{{{field}}} {folder} holds files no frugalvl run recorded writing ({foreign[0]}, ...): give a new or "
        f"empty folder{remedy}",
        owner,
    )


@contextlib.contextmanager
def writing_into(
    folder: str | os.PathLike, option: str = "-o", recursive: bool = True, create: bool = True
) -> Iterator[Path]:
    """What every command writing into a folder does first, for the ``with`` block: the folder proven writable
    (:func:`check_writable_dir`), its writer lock held (:func:`output_lock`), and the temporaries of killed
    runs removed (:func:`remove_stale_temporaries`)."""
    folder = check_writable_dir(folder, option=option, create=create)
    with output_lock(folder):
        remove_stale_temporaries(folder, recursive=recursive)
        yield folder


# ---------------------------------------------------------------------------------------------
# One writer per output folder
# ---------------------------------------------------------------------------------------------

LOCK_NAME = ".frugalvl.lock"
_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth) held by this process
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s writer lock (a ``.frugalvl.lock`` file with this pid) for the ``with`` block.

    A second run into the same folder stops at once with one line naming the pid that writes there. The
    lock is an ``fcntl`` lock, so the kernel releases it when its process dies: a killed run's lock file is
    stale and simply taken over. Re-entrant within one process; the file is removed on release.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    key = str(lock.resolve())
    with _HELD_LOCK:
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            acquired = False
        else:
            acquired = True
    if acquired:
        fd = _take_lock(lock, fcntl)
        with _HELD_LOCK:
            _HELD[key] = (fd, 1)
    try:
        yield lock
    finally:
        with _HELD_LOCK:
            fd, depth = _HELD[key]
            if depth > 1:
                _HELD[key] = (fd, depth - 1)
            else:
                del _HELD[key]
                with contextlib.suppress(OSError):
                    lock.unlink()
                os.close(fd)  # releases the lock


def _take_lock(lock: Path, fcntl: Any) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise UserError(
                f"another run is writing here (pid {pid}): {lock.parent}; wait for it or write elsewhere"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a file its last holder just removed
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
