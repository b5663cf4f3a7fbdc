"""Subcommands of the ``frugalvl`` command, one module each.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed arguments and returning an exit status.
"""

from ._settings import render_error as render_error  # the CLI's one line for a library error

__all__ = ["render_error"]
