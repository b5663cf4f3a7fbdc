"""Settings dataclasses carry their own documentation, so a default is written once.

A method's settings are a frozen dataclass whose fields hold the paper's defaults. :func:`option`
adds what a user interface needs to show the field (a help line, a flag name when it differs from
the field's, accepted choices). ``frugalvl.commands`` builds its options from this metadata; the
library never reads it. :func:`settings_identity` turns any settings object into plain JSON data, the
form in which results record what produced them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with a default and the text that documents it.

    ``flag`` overrides the option name derived from the field name (``cls_lambda`` -> ``--cls-lambda``);
    booleans become switches that flip the default (``--no-presence`` for a field defaulting to True).
    ``parse`` converts and checks the user's text; ``cli=False`` keeps the field out of the command line.
    """
    meta = {"help": help, "flag": flag, "parse": parse, "choices": tuple(choices) if choices else None, "cli": cli}
    return dataclasses.field(default=default, metadata=meta)


def settings_identity(settings: Any) -> dict[str, Any]:
    """The settings as JSON-ready data (for caches and the records next to outputs)."""
    return {"type": type(settings).__name__, **dataclasses.asdict(settings)}
