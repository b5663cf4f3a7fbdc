"""``--progress {bar,json,none}`` and ``--progress-fd N``: how a command shows its progress (docs/progress.md)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import UserError
from ._types import nonnegative_int


def add_progress_arguments(group: Any) -> None:
    group.add_argument(
        "--progress",
        choices=["bar", "json", "none"],
        help="bar: progress bars on the terminal (default); json: one JSON event per line for programs "
        "(docs/progress.md); none: no progress",
    )
    group.add_argument(
        "--progress-fd",
        type=nonnegative_int,
        metavar="N",
        help="with --progress json: write the events to the open file descriptor N instead of stderr",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar (same as --progress none)")


def reporter_from_cli(args: argparse.Namespace) -> Any:
    """The :class:`~frugalvl.progress.Reporter` the options ask for; one line for contradictory ones."""
    from ..progress import JsonReporter, NullReporter, TqdmReporter

    mode = args.progress
    if args.no_progress:
        if mode not in (None, "none"):
            raise UserError(f"--no-progress and --progress {mode} contradict each other: give one of them")
        mode = "none"
    mode = mode or "bar"
    if args.progress_fd is not None and mode != "json":
        raise UserError("--progress-fd only applies to --progress json: add --progress json or leave it out")
    if mode == "none":
        return NullReporter()
    if mode == "bar":
        return TqdmReporter()
    if args.progress_fd is None:
        return JsonReporter()
    return JsonReporter(_open_fd(args.progress_fd))


def _open_fd(fd: int) -> Any:
    """A line-buffered text stream on an inherited file descriptor that is open for writing."""
    try:
        os.fstat(fd)
        writable = True
        if os.name == "posix":  # read the access mode
            import fcntl

            writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except OSError:
        writable = False
    if not writable:
        raise UserError(
            f"--progress-fd {fd} is not a file descriptor open for writing: open it in the calling program "
            f"(e.g. {fd}>progress.jsonl in a shell) or leave --progress-fd out to write to stderr"
        )
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1, closefd=False)
