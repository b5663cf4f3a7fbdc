"""The command-line face of the segmentation methods: one generic adapter over the library's registry.

Every method of :mod:`frugalvl.segment.methods` gets the same functions, so ``segment``, ``evaluate``
and ``app`` treat the methods alike: ``add_arguments(group)``, ``settings_from_cli(args)``,
``load_models(args)``, ``segmenter_from_cli(args, models=None)``, ``recipe_from_cli(args)`` and
``model_identity(args)``. The options are generated from the registry entry: one per model (its
default and help written there) and one per documented settings field
(:mod:`frugalvl.commands._settings`), so nothing about a method is written here.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from ...segment.methods import METHODS as _REGISTRY
from ...segment.methods import Method, SegmenterRecipe, method
from .._settings import add_settings_options, build_settings, given

SHARED = ("prob_thd", "bg_idx", "slide_crop", "slide_stride")  # options common to all methods (vocabulary.py)

# method name -> title, for the --method choices
METHODS = {name: m.title for name, m in _REGISTRY.items()}


class MethodCLI:
    """The command-line functions of one registered method."""

    def __init__(self, entry: Method) -> None:
        self.entry = entry

    def add_arguments(self, group: Any) -> None:
        for m in self.entry.models:
            extra = {"metavar": m.metavar} if m.metavar else {}
            group.add_argument(f"--{m.name}", default=m.default, help=m.help_text, **extra)
        add_settings_options(group, self.entry.settings_class(), skip=SHARED)

    def vocabulary(self, args: argparse.Namespace):
        """The user's vocabulary (``--classes`` or a class file read as the method reads it), or None
        when a preset provides it."""
        from ..vocabulary import vocabulary_from_cli

        return vocabulary_from_cli(args, strip=self.entry.strip)

    def settings_from_cli(self, args: argparse.Namespace) -> Any:
        """Dataclass defaults < the preset's values < the command line."""
        cls = self.entry.settings_class()
        vocabulary = self.vocabulary(args) if args.preset else None
        return build_settings(cls, given(args, cls), make=partial(self.entry.settings, args.preset, vocabulary))

    def model_specs(self, args: argparse.Namespace) -> dict[str, str | None]:
        return {m.name: getattr(args, m.name, None) for m in self.entry.models}

    def load_models(self, args: argparse.Namespace) -> dict[str, Any]:
        """The models named on the command line."""
        return self.entry.load_models(self.model_specs(args), args.device)

    def recipe_from_cli(self, args: argparse.Namespace) -> SegmenterRecipe:
        """What builds the segmenter (picklable, for Ray workers); settings and vocabulary checked now."""
        settings = self.settings_from_cli(args)
        vocabulary = self.vocabulary(args) or self.entry.vocabulary(args.preset)
        return SegmenterRecipe(self.entry.name, vocabulary, settings, self.model_specs(args), args.device)

    def segmenter_from_cli(self, args: argparse.Namespace, models: dict[str, Any] | None = None) -> Any:
        """A segmenter for the command line's vocabulary and settings; ``models`` from :meth:`load_models`
        lets several segmenters (e.g. one per dataset) share one loaded model."""
        recipe = self.recipe_from_cli(args)
        return self.entry.build(models or self.load_models(args), recipe.vocabulary, recipe.settings)

    def model_identity(self, args: argparse.Namespace) -> dict[str, Any]:
        """The weights the command line names, without loading them (keys evaluation caches)."""
        return self.entry.model_identity(self.model_specs(args))


def method_module(name: str) -> MethodCLI:
    """The command-line functions of the method ``name``."""
    return MethodCLI(method(name))
