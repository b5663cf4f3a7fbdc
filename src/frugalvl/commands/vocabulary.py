"""Options every segmentation command shares: the vocabulary (classes, class file, preset) and the
per-method thresholds and windows a user may override."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ._types import nonnegative_int, probability

if TYPE_CHECKING:
    from ..vocab import Strip


def add_vocabulary_arguments(parser: argparse.ArgumentParser) -> None:
    from ..presets import list_presets

    group = parser.add_argument_group("classes")
    group.add_argument(
        "--preset", help=f"dataset preset: its classes and the official thresholds ({', '.join(list_presets())})"
    )
    group.add_argument(
        "--classes", help='classes separated by ";", synonyms by ",": "background;building,roof,house;road"'
    )
    group.add_argument("--classes-file", help="official class file: one class per line, synonyms comma separated")
    add_override_arguments(group)


def add_override_arguments(group: Any) -> None:
    """Options that override a preset's (or the method's) thresholds and windows; shared with evaluate."""
    group.add_argument(
        "--prob-thd", type=probability, help="pixels whose best class score is below this get --bg-idx (preset's or 0)"
    )
    group.add_argument(
        "--bg-idx", type=nonnegative_int, help="class index given to low-confidence pixels (preset's or 0)"
    )
    group.add_argument(
        "--slide-crop", type=nonnegative_int, help="sliding-window size in pixels (default: the method's and preset's)"
    )
    group.add_argument(
        "--slide-stride",
        type=nonnegative_int,
        help="sliding-window stride in pixels (default: the method's and preset's)",
    )


def vocabulary_from_cli(args: argparse.Namespace, strip: Strip):
    """The user's vocabulary, or None when a preset provides it."""
    from ..vocab import Vocabulary

    given = [x for x in (args.classes, args.classes_file) if x]
    if len(given) > 1:
        raise UserError("give either --classes or --classes-file, not both")
    if args.classes_file:
        return Vocabulary.from_file(args.classes_file, strip=strip)
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if not args.preset:
        raise UserError(
            "no classes given: use --classes 'background;building;road', --classes-file FILE or --preset NAME"
        )
    return None
