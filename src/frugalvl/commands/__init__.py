"""Subcommands of the ``frugalvl`` command, one module each.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed arguments and returning an exit status.
"""
