"""Command-line options generated from settings dataclasses (see :mod:`frugalvl.settings`).

Every option defaults to ``None`` ("not given"), so a preset's values can sit between the
dataclass defaults and the user's choices: dataclass default < preset < command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UserError
from ._types import from_parser


def flag_of(field: dataclasses.Field) -> str:
    """The option a field is set with: its ``flag`` metadata, or ``--no-name``/``--name``."""
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def _dest(field: dataclasses.Field) -> str:
    return field.name


def cli_fields(cls: type, skip: Iterable[str] = ()) -> list[dataclasses.Field]:
    skip = set(skip)
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False) and f.name not in skip]


def add_settings_options(group: Any, cls: type, skip: Iterable[str] = ()) -> None:
    """One option per documented field of ``cls`` (except ``skip``), help showing the default."""
    for f in cli_fields(cls, skip):
        meta, flag = f.metadata, flag_of(f)
        if isinstance(f.default, bool):
            group.add_argument(
                flag, dest=_dest(f), action="store_const", const=not f.default, default=None, help=meta["help"]
            )
            continue
        shown = "none" if f.default is None else f.default
        kwargs: dict[str, Any] = {"dest": _dest(f), "default": None, "help": f"{meta['help']} (default {shown})"}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        parse = meta.get("parse") or (type(f.default) if f.default is not None else str)
        kwargs["type"] = from_parser(parse) if meta.get("parse") else parse  # its ValueError text reaches the user
        kwargs["metavar"] = None if meta.get("choices") else f.name.split("_")[-1].upper()
        group.add_argument(flag, **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def build_settings(cls: type, values: dict[str, Any], *, leading_field: bool = False) -> Any:
    """``cls(**values)``; a value the settings refuse becomes one line naming its option.

    ``leading_field``: the class's errors start with the field's name (``tile 8 is too small``), which
    is then replaced by its option (``--tile 8 is too small``) instead of being prefixed with it."""
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        rendered = cli_text(text, cls, leading=True) if leading_field else text
        if rendered != text:
            raise UserError(rendered) from None
        flags = {f.name: flag_of(f) for f in dataclasses.fields(cls)}
        named = next((flags[k] for k in _named_fields(text, values)), None)
        raise UserError(f"{named + ': ' if named else ''}{exc}") from None


def _named_fields(message: str, names: Iterable[str]) -> list[str]:
    """The ``names`` a message mentions as whole words (``lr`` is not in ``projector_lr``), the one
    it starts with first."""
    found = [k for k in names if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", message)]
    return sorted(found, key=lambda k: not message.startswith(k))


def cli_text(
    text: str,
    *classes: type,
    names: Mapping[str, str] | None = None,
    keywords: Mapping[str, str] | None = None,
    leading: bool = False,
) -> str:
    """A library message as the command line says it.

    Library messages name settings as Python does. A remedy names a setting with its value,
    ``overwrite=True`` or ``gpus_per_worker=0``, which becomes the option (``--overwrite``,
    ``--gpus-per-worker 0``) for the fields of ``classes`` and the parameters in ``keywords`` and
    ``names``; ``names`` (parameters whose names are no English words, ``{"outdir": "-o"}``) are also
    replaced where they stand alone. With ``leading`` (the error of a settings value, which starts with
    its field: ``tile 8 is too small``) that field becomes its option too (``--tile 8 is too small``).
    """
    flags = {f.name: flag_of(f) for cls in classes for f in dataclasses.fields(cls) if f.metadata.get("cli", False)}
    for name, flag in flags.items() if leading else ():
        if text.startswith(f"{name} "):
            text = flag + text[len(name) :]
            break
    for name, flag in {**flags, **(keywords or {}), **(names or {})}.items():

        def as_option(m: re.Match[str], flag: str = flag) -> str:
            return flag if m.group(1) == "True" else f"{flag} {m.group(2) or m.group(3)}"

        text = re.sub(rf"(?<![\w.=/-]){re.escape(name)}=(True\b|'([^'\s]*)'|([\w.:/-]+))", as_option, text)
    for name, flag in (names or {}).items():
        text = re.sub(rf"(?<![\w.=/\\~-]){re.escape(name)}(?![\w/\\.=-])", flag, text)
    return text
