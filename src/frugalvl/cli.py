"""The ``frugalvl`` command.

User mistakes (:class:`~frugalvl.errors.UserError`) print one line and exit with status 2;
everything else is a bug and keeps its traceback. Only the chosen subcommand's module is imported
(``frugalvl --help`` imports no torch), and each subcommand imports what it uses when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import UserError

# subcommand -> (module under frugalvl.commands, one-line help shown by `frugalvl --help`)
COMMANDS = {
    "segment": ("segment", "segment images, GeoTIFFs and whole scenes into named classes"),
    "change": ("change", "change maps between two dates of the same place (SegEarth-OV3, no training)"),
    "evaluate": ("evaluate", "score a method on the remote-sensing benchmarks (mIoU / IoU as the papers)"),
    "train-upsampler": ("train_upsampler", "train a SimFeatUp upsampler for a CLIP from unlabeled images"),
    "select": ("select", "CoIDO: pick a subset of a LLaVA-format instruction set"),
    "label-3d": ("label_3d", "label a point cloud from its drone photos: segment, project, vote"),
    "app": ("app", "a local web app: type classes, see the map segmented, download the results"),
    "info": ("info", "what this installation offers: methods, presets, extras, devices (--json for programs)"),
}


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if any (the first word that is one)."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its full options (all of them when None)."""
    parser = OneLineParser(
        prog="frugalvl",
        description="Open-vocabulary segmentation of remote-sensing "
        "images (SegEarth-OV, SegEarth-OV3) and data selection for visual instruction "
        "tuning (CoIDO).",
    )
    parser.add_argument("--version", action="version", version=f"frugalvl {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else _chosen(argv)
    for name, (module_name, help_line) in COMMANDS.items():
        if argv is not None and name != chosen:
            subparsers.add_parser(name, help=help_line, add_help=False)
            continue
        try:
            module = importlib.import_module(f"frugalvl.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"frugalvl.commands.{module_name}":
                continue  # not built yet
            raise
        module.register(subparsers)
    return parser


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line naming the option (no usage text; ``-h`` shows it), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (tests and progress bars swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("frugalvl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _configure_logging(args)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        from .commands import render_error  # a settings field is named by its option

        print(f"frugalvl: error: {render_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .fileio import is_disk_full

        if not is_disk_full(exc):
            raise
        print(
            "frugalvl: error: no space left on the device: free some space and run the same command again "
            "(finished outputs are kept)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("frugalvl: interrupted; finished outputs are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
