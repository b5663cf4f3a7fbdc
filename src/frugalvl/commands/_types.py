"""Argument types for numeric options: each checks its range at parse time.

Every function here takes the user's text and returns the value, or raises
:class:`argparse.ArgumentTypeError` with a message naming the accepted range, so a mistake such as
``--slide-crop 0`` or ``--prob-thd 2`` ends with argparse's usage line plus one error line (exit 2)
before any model is loaded. Use them as ``type=`` of ``add_argument``; :func:`from_parser` wraps a
library parser that raises ``ValueError`` (e.g. a settings field's ``parse``) the same way.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _number(text: str, kind: type) -> Any:
    """``int(text)`` or a finite ``float(text)``; anything else is one clear error."""
    try:
        value = kind(str(text).strip())
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no nan or inf)."""
    return _number(text, float)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not allowed: give a number greater than 0")
    return value


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]`` (either bound may be open)."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give a whole number {_bounds(low, high)}")
        return value

    parse.__name__ = "int_range"
    return parse


def float_range(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (either bound may be open)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value:g} is not allowed: give a number {_bounds(low, high)}")
        return value

    parse.__name__ = "float_range"
    return parse


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    return f"of at least {low:g}" if low is not None else f"of at most {high:g}"


# The common ranges (argparse shows the function's name only if it raises ValueError, which they never do).
positive_int = int_range(1)  # a whole number ≥ 1
nonnegative_int = int_range(0)  # a whole number ≥ 0
nonnegative_float = float_range(0.0)  # a finite number ≥ 0
probability = float_range(0.0, 1.0)  # a number from 0 to 1, both included


def int_or_choice(*choices: str, low: int = 1) -> Callable[[str], int | str]:
    """A whole number ≥ ``low``, or one of the words ``choices`` (returned lower-cased), e.g. ``448`` or ``native``."""
    words = tuple(c.lower() for c in choices)

    def parse(text: str) -> int | str:
        word = str(text).strip().lower()
        if word in words:
            return word
        try:
            value = int(word)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or {' / '.join(words)}") from None
        if value < low:
            raise argparse.ArgumentTypeError(
                f"{value} is not allowed: give a whole number of at least {low}, or {' / '.join(words)}"
            )
        return value

    parse.__name__ = "int_or_choice"
    return parse


def from_parser(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser that raises ``ValueError`` (as library code does) so argparse shows its message.

    Plain ``int``/``float`` are returned as they are: argparse's "invalid int value: 'x'" is clearer than theirs.
    """
    builtin = parse in (int, float)
    if builtin:
        return parse

    def wrapped(text: str) -> T:
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapped.__name__ = getattr(parse, "__name__", "value")
    return wrapped
