"""The ``frugalvl`` command.

User mistakes (:class:`~frugalvl.errors.UserError`) print one line and exit with status 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__
from .errors import UserError

# Subcommand modules under frugalvl.commands; each registers its own parser.
COMMANDS = ("segment", "evaluate", "train_upsampler", "select")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugalvl", description="Open-vocabulary segmentation of remote-sensing images "
                                     "(SegEarth-OV, SegEarth-OV3) and data selection for visual instruction tuning (CoIDO).")
    parser.add_argument("--version", action="version", version=f"frugalvl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"frugalvl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"frugalvl.commands.{name}":
                continue  # not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"frugalvl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugalvl: interrupted; finished outputs are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
