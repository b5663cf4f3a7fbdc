"""Class vocabularies and prompt templates, shared by every segmenter.

A vocabulary is a list of classes; each class has one or more synonyms ("building,roof,house").
Every synonym is its own text query; a class scores the max over its queries
(docs/methods/segearth_ov.md#text-classifier-and-synonyms, docs/methods/segearth_ov3.md#synonyms-argmax-and-background).

Two spellings are accepted:

* a string, classes separated by ``;`` or newlines, synonyms by ``,``:
  ``"background;building,roof,house;road"``;
* a class file in the official format: one class per line, synonyms comma separated.

The official SegEarth-OV code strips only the newline from each line (so ``"tree, forest"`` keeps
the space in ``" forest"``); SegEarth-OV3 strips all surrounding whitespace. ``strip`` chooses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import UserError
from .settings import FieldError

Strip = Literal["newline", "whitespace"]


@dataclass(frozen=True)
class Vocabulary:
    """Classes, each a tuple of synonym queries. The first synonym names the class."""

    classes: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise FieldError(
                "classes",
                "the class vocabulary is empty: give at least one class, e.g. {classes} 'background;building'",
            )
        for i, synonyms in enumerate(self.classes):
            if not synonyms or any(not q.strip() for q in synonyms):
                raise UserError(
                    f"class {i} of the vocabulary has an empty name: remove stray ',' or ';' from the class list"
                )
        self._refuse_duplicates()

    def _refuse_duplicates(self) -> None:
        """A name used by two classes would leave the second with no pixels (ties go to the first class).

        Names are compared as the text encoders see them: trimmed and case-insensitive.
        """
        seen: dict[str, int] = {}
        for i, synonyms in enumerate(self.classes):
            for q in synonyms:
                key = " ".join(q.split()).lower()
                if key in seen and seen[key] != i:
                    raise UserError(
                        f"{q.strip()!r} is in the vocabulary twice (classes {seen[key]} and {i}): "
                        "give each class once, with its synonyms after commas ('building,roof')"
                    )
                seen.setdefault(key, i)

    @property
    def names(self) -> list[str]:
        """Display name of each class (its first synonym, trimmed)."""
        return [syn[0].strip() for syn in self.classes]

    @property
    def queries(self) -> list[str]:
        """All synonyms in order: the text queries."""
        return [q for syn in self.classes for q in syn]

    @property
    def query_to_class(self) -> list[int]:
        """For each query, the index of its class."""
        return [c for c, syn in enumerate(self.classes) for _ in syn]

    def __len__(self) -> int:
        return len(self.classes)

    @classmethod
    def from_lines(cls, lines: Sequence[str], strip: Strip = "whitespace") -> Vocabulary:
        classes = []
        for line in lines:
            if not line.strip():
                continue  # blank lines carry no class; the official files have none
            parts = line.split(",")
            if strip == "newline":
                parts = [p.replace("\n", "") for p in parts]
            else:
                parts = [p.strip() for p in parts]
            classes.append(tuple(parts))
        return cls(tuple(classes))

    @classmethod
    def parse(cls, text: str, strip: Strip = "whitespace") -> Vocabulary:
        """Parse ``"a;b,c;d"`` (or newline-separated classes)."""
        return cls.from_lines(text.replace(";", "\n").split("\n"), strip=strip)

    @classmethod
    def from_file(cls, path: str | Path, strip: Strip = "newline") -> Vocabulary:
        """Read an official class file: one class per line, synonyms comma separated."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"class file {path} does not exist: give a text file with one class per line")
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not a class
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"class file {path} cannot be read as UTF-8 text ({exc.__class__.__name__}): save it as plain text, one class per line"
            ) from None
        return cls.from_lines(text.splitlines(keepends=True), strip=strip)


# ---------------------------------------------------------------------------------------------
# Prompt templates
# ---------------------------------------------------------------------------------------------


def imagenet_templates() -> list[Callable[[str], str]]:
    """The 80 OpenAI ImageNet prompt templates ("a bad photo of a {}.", ...), as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return list(OPENAI_IMAGENET_TEMPLATES)


TEMPLATE_SETS = {
    "imagenet80": imagenet_templates,
    "photo": lambda: [lambda c: f"a photo of a {c}."],
    "none": lambda: [lambda c: c],
}


def templates(name: str = "imagenet80") -> list[Callable[[str], str]]:
    """Prompt templates by name: ``imagenet80`` (default, official), ``photo`` or ``none``."""
    if name not in TEMPLATE_SETS:
        raise UserError(f"unknown prompt template set {name!r}: choose one of {', '.join(TEMPLATE_SETS)}")
    return TEMPLATE_SETS[name]()
