"""Command-line options generated from settings dataclasses (see :mod:`frugalvl.settings`).

Every option defaults to ``None`` ("not given"), so a preset's values can sit between the
dataclass defaults and the user's choices: dataclass default < preset < command line. A
:class:`~frugalvl.settings.FieldError` from the library is shown with the flags that set its fields
(:func:`render_error`), so the library names fields and the user reads options.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import UserError
from ..settings import FieldError
from ._types import from_parser


def flag_of(field: dataclasses.Field) -> str:
    """The option a field is set with: its ``flag`` metadata, or ``--no-name``/``--name``."""
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def flag_for(cls: type | None, name: str) -> str:
    """The option that sets field ``name`` of settings class ``cls`` (``--name`` when ``cls`` has none)."""
    if cls is not None and dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == name and (f.metadata.get("cli") or f.metadata.get("flag")):
                return flag_of(f)
    return "--" + name.replace("_", "-")


def render_error(exc: BaseException) -> str:
    """The one line the CLI prints for a library error: a field error names its options."""
    if isinstance(exc, FieldError):
        return exc.render(lambda name: flag_for(exc.owner, name))
    return str(exc)


def _dest(field: dataclasses.Field, prefix: str = "") -> str:
    return prefix + field.name


def cli_fields(cls: type, skip: Iterable[str] = ()) -> list[dataclasses.Field]:
    skip = set(skip)
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False) and f.name not in skip]


def default_of(field: dataclasses.Field) -> Any:
    """The field's default (its factory's value for a ``default_factory`` field)."""
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return field.default


def shown_default(field: dataclasses.Field) -> str | None:
    """How the help writes the field's default; ``None`` for switches (they say what they change)."""
    meta, default = field.metadata, default_of(field)
    if isinstance(default, bool) or meta.get("const") is not None:
        return None
    if meta.get("shown"):
        return meta["shown"]
    return (
        "none" if default is None or default == "" else f"{default:g}" if isinstance(default, float) else str(default)
    )


def add_settings_options(
    group: Any, cls: type, skip: Iterable[str] = (), *, prefix: str = "", required: Iterable[str] = ()
) -> None:
    """One option per documented field of ``cls`` (except ``skip``), help showing the default.

    ``prefix`` goes before each destination name (two settings classes with a field of the same name
    in one command); ``required`` fields must be given."""
    required = set(required)
    for f in cli_fields(cls, skip):
        meta, flag, shown = f.metadata, flag_of(f), shown_default(f)
        if meta.get("const") is not None or isinstance(f.default, bool):
            const = meta["const"] if meta.get("const") is not None else not f.default
            group.add_argument(
                flag, dest=_dest(f, prefix), action="store_const", const=const, default=None, help=meta["help"]
            )
            continue
        help_text = meta["help"] if f.name in required else f"{meta['help']} (default {shown})"
        kwargs: dict[str, Any] = {"dest": _dest(f, prefix), "default": None, "help": help_text}
        if f.name in required:
            kwargs["required"] = True
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        default = default_of(f)
        parse = meta.get("parse") or (type(default) if default is not None and default != "" else str)
        kwargs["type"] = from_parser(parse) if meta.get("parse") else parse  # its ValueError text reaches the user
        kwargs["metavar"] = meta.get("metavar") or (None if meta.get("choices") else f.name.split("_")[-1].upper())
        group.add_argument(flag, **kwargs)


def given(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            out[f.name] = value
    return out


def build_settings(
    cls: type, values: dict[str, Any], *, leading_field: bool = False, make: Callable[..., Any] | None = None
) -> Any:
    """``cls(**values)`` (or ``make(**values)``, e.g. a preset's settings with these overrides); a value
    the settings refuse becomes one line naming its option.

    ``leading_field``: the class's errors start with the field's name (``tile 8 is too small``), which
    is then replaced by its option (``--tile 8 is too small``) instead of being prefixed with it."""
    try:
        return (make or cls)(**values)
    except FieldError as exc:
        raise UserError(render_error(exc)) from None
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
