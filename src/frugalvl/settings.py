"""Settings dataclasses carry their own documentation, so a default is written once.

A method's settings are a frozen dataclass whose fields hold the paper's defaults. :func:`option`
adds what a user interface needs to show the field (a help line, a flag name when it differs from
the field's, accepted choices). ``frugalvl.commands`` builds its options from this metadata; the
library never reads it. :func:`settings_identity` turns any settings object into plain JSON data, the
form in which results record what produced them.

A value a settings class refuses raises :class:`FieldError`, which names the *field* (``lr``); each
front end shows it under its own name for that field (the command line: ``--lr``), so library
messages never quote command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import UserError


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    cli: bool = True,
    metavar: str | None = None,
    shown: str | None = None,
    const: Any = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with a default and the text that documents it.

    ``flag`` overrides the option name derived from the field name (``cls_lambda`` -> ``--cls-lambda``);
    booleans become switches that flip the default (``--no-presence`` for a field defaulting to True),
    and a field with ``const`` becomes a switch that sets that value (``mode``: ``--global`` sets
    ``"global"``). ``parse`` converts and checks the user's text; ``cli=False`` keeps the field out of
    the command line. ``metavar`` names the value in the help; ``shown`` is how the help writes the
    default when the value itself would not say it (``None`` meaning "fp16 on CUDA, else fp32", or a
    ``default_factory``'s machine-dependent value).
    """
    meta = {
        "help": help,
        "flag": flag,
        "parse": parse,
        "choices": tuple(choices) if choices else None,
        "cli": cli,
        "metavar": metavar,
        "shown": shown,
        "const": const,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class FieldError(UserError, ValueError):
    """A settings value refused, or a remedy that is a setting: the message names settings *fields*.

    ``fields`` are the names the message is about; ``message`` either holds a ``{name}`` placeholder for
    each of them (``"lower {count}"``) or none, and then reads after the first field's name
    (``"must be at least 1, got 0"`` -> ``"n_clusters must be at least 1, got 0"``). ``owner`` is the
    settings class the fields belong to, when there is one. ``str()`` names the fields as they are
    written in Python; :meth:`render` lets a front end use its own names (the CLI's flags).
    """

    def __init__(self, fields: str | Sequence[str], message: str, owner: type | None = None) -> None:
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        self.message = message
        self.owner = owner
        super().__init__(self.render(lambda name: name))

    @property
    def field(self) -> str:
        """The field the message is mainly about."""
        return self.fields[0]

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with every field written as ``name_of(field)``."""
        text, placed = self.message, False
        for f in self.fields:
            if "{" + f + "}" in text:
                text, placed = text.replace("{" + f + "}", name_of(f)), True
        return text if placed else f"{name_of(self.fields[0])} {text}"


# ---------------------------------------------------------------- checks for __post_init__


def check_at_least(owner: Any, names: Iterable[str], low: float, *, optional: bool = False) -> None:
    """Each named field is a finite number ``>= low`` (``None`` allowed when ``optional``)."""
    for name in names:
        value = getattr(owner, name)
        if value is None and optional:
            continue
        if value is None or not _finite(value) or value < low:
            noun = "a finite number" if isinstance(low, float) else "at least"
            text = f"must be {noun} >= {low:g}" if isinstance(low, float) else f"must be {noun} {low}"
            raise FieldError(name, f"{text}, got {value}", type(owner))


def check_above(owner: Any, names: Iterable[str], low: float = 0.0, *, optional: bool = False) -> None:
    """Each named field is a finite number ``> low`` (``None`` allowed when ``optional``)."""
    for name in names:
        value = getattr(owner, name)
        if value is None and optional:
            continue
        if value is None or not _finite(value) or not value > low:
            raise FieldError(name, f"must be a finite number > {low:g}, got {value}", type(owner))


def check_choice(owner: Any, name: str, choices: Sequence[Any], *, optional: bool = False) -> None:
    """The field is one of ``choices`` (``None`` allowed when ``optional``)."""
    value = getattr(owner, name)
    if (value is None and optional) or value in choices:
        return
    raise FieldError(name, f"{value!r} is unknown: choose one of {', '.join(map(str, choices))}", type(owner))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def settings_identity(settings: Any) -> dict[str, Any]:
    """The settings as JSON-ready data (for caches and the records next to outputs)."""
    return {"type": type(settings).__name__, **dataclasses.asdict(settings)}
