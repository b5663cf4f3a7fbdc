"""The segmentation methods, registered once: every front end (CLI, app, evaluate, Ray) reads this table.

An entry (:class:`Method`) holds what the front ends need to know about a method, as data:

* its name (``--method``, records, the app) and a title for people;
* its models (:class:`ModelOption`): the constructor argument each fills, the default (written here
  or by the loader, once), the help line, and the loader;
* its settings dataclass and segmenter class, named ``"module:Class"`` under :mod:`frugalvl.segment`
  and imported on first use (so reading the table costs nothing);
* its table in the dataset presets (:mod:`frugalvl.presets`; the settings class's ``from_preset``
  reads the thresholds there) and how its class files are read (``strip``);
* the caches its segmenter accepts as constructor arguments (``text_cache=``, ``token_cache=``).

The generic steps are methods of the entry: :meth:`Method.settings` (dataclass defaults < preset <
overrides), :meth:`Method.load_models`, :meth:`Method.build` and :meth:`Method.model_identity`.
:class:`SegmenterRecipe` is all of it in one picklable value (what a Ray worker builds its segmenter
from). Adding a method: its segmenter module, one entry in :data:`METHODS`, and its preset tables
(docs/architecture.md, "Adding a segmentation method").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..models.defaults import DEFAULT_CLIP, DEFAULT_SAM3
from ..settings import FieldError
from ..vocab import Strip, Vocabulary

Loader = Callable[[str | None, str], Any]  # (spec or None, device) -> the loaded model


def _load_clip(spec: str | None, device: str) -> Any:
    from ..devices import resolve_device
    from ..models.clip import load_clip

    return load_clip(spec or DEFAULT_CLIP, device=resolve_device(device))


def _load_upsampler(spec: str | None, device: str) -> Any:
    from ..models.upsampler import resolve_upsampler

    return resolve_upsampler(spec)  # on the CPU; the segmenter moves it to the CLIP's device


def _clip_identity(spec: str | None) -> str | None:
    from ..models.clip import clip_identity

    found = clip_identity(spec or DEFAULT_CLIP)
    if found is None:
        raise LookupError(spec)
    return found


def _upsampler_identity(spec: str | None) -> str | None:
    from ..models.upsampler import upsampler_identity

    return upsampler_identity(spec)


def _sam3_identity(spec: str | None) -> str | None:
    from ..models.sam3 import sam3_identity

    return sam3_identity(spec or DEFAULT_SAM3)


def _load_sam3(spec: str | None, device: str) -> Any:
    from ..devices import resolve_device
    from ..models.sam3 import load_sam3

    return load_sam3(spec or DEFAULT_SAM3, device=resolve_device(device))


@dataclass(frozen=True)
class ModelOption:
    """One model a method loads: ``name`` is the segmenter's constructor argument and the option's name."""

    name: str
    default: str | None
    help: str  # one line for the command line; ``{default}`` is filled in
    load: Loader
    what: str  # what it is, in a few words ("CLIP", "SimFeatUp checkpoint")
    metavar: str | None = None
    first: bool = False  # loaded before the others (it fails faster)
    # the identity the loaded model records, without loading it (LookupError: only loading tells)
    identity: Callable[[str | None], str | None] | None = None

    @property
    def help_text(self) -> str:
        return self.help.format(default=self.default)


@dataclass(frozen=True)
class Method:
    """A segmentation method as the front ends see it (module doc)."""

    name: str
    title: str
    models: tuple[ModelOption, ...]
    settings_path: str  # "module:Class" under frugalvl.segment
    segmenter_path: str  # "module:Class": Class(**models, vocabulary=, settings=, **caches)
    preset_table: str  # the preset tables' name for the method (classes, thresholds)
    strip: Strip = "whitespace"  # how its class files are read (see frugalvl.vocab)
    caches: tuple[str, ...] = ()  # the cache arguments its segmenter accepts
    exemplars: str = ""  # how its segmenter uses exemplars (docs/methods/exemplars.md): prototypes, boxes or ""

    def settings_class(self) -> type:
        return _resolve(self.settings_path)

    def segmenter_class(self) -> type:
        return _resolve(self.segmenter_path)

    def settings(self, preset: str | None = None, vocabulary: Vocabulary | None = None, **overrides: Any) -> Any:
        """Dataclass defaults < the preset's values (the settings class's ``from_preset``; ``vocabulary``:
        the user's own classes, see :func:`frugalvl.presets.method_settings`) < ``overrides`` (``None``
        values: not given)."""
        cls: Any = self.settings_class()
        values = {k: v for k, v in overrides.items() if v is not None}
        return cls.from_preset(preset, vocabulary, **values) if preset else cls(**values)

    def vocabulary(self, preset: str) -> Vocabulary:
        """The preset's class vocabulary for this method, its lines read as the method's class files."""
        from ..presets import method_settings

        return Vocabulary.from_lines(method_settings(preset, self.preset_table)["classes"], strip=self.strip)

    def read_classes(self, path: str) -> Vocabulary:
        """A class file in the official format, read as this method's official code reads it."""
        return Vocabulary.from_file(path, strip=self.strip)

    def load_models(
        self,
        specs: Mapping[str, str | None] | None = None,
        device: str = "cpu",
        load: Callable[[ModelOption, str | None, str], Any] | None = None,
    ) -> dict[str, Any]:
        """Every model of the method by constructor argument; ``specs`` names them (missing or None:
        the default). ``load(option, spec, device)`` replaces the plain loaders (the app caches models)."""
        specs = specs or {}
        load = load or (lambda option, spec, dev: option.load(spec, dev))
        order = sorted(self.models, key=lambda m: not m.first)
        loaded = {m.name: load(m, specs.get(m.name) or m.default, device) for m in order}
        return {m.name: loaded[m.name] for m in self.models}

    def build(self, models: Mapping[str, Any], vocabulary: Vocabulary, settings: Any, **caches: Any) -> Any:
        """The segmenter on loaded ``models``; ``caches`` it does not accept are left out."""
        if "text_cache" in self.caches and caches.get("text_cache") is None:
            from .text_store import default_text_store  # FRUGALVL_TEXT_CACHE: text features kept between runs

            caches["text_cache"] = default_text_store()
        accepted = {k: v for k, v in caches.items() if k in self.caches and v is not None}
        return self.segmenter_class()(**models, vocabulary=vocabulary, settings=settings, **accepted)

    def record(self, specs: Mapping[str, str | None], vocabulary: Vocabulary, settings: Any) -> Any:
        """The :class:`~frugalvl.segment.records.SegmenterRecord` the segmenter would have, without loading
        its models (a finished run is recognised before any model loads); None where only loading tells."""
        from .records import SegmenterRecord

        identities: dict[str, Any] = {}
        for m in self.models:
            if m.identity is None:
                return None
            try:
                identities[m.name] = m.identity(specs.get(m.name) or m.default)
            except LookupError:
                return None
        segmenter: Any = self.segmenter_class()
        if not hasattr(segmenter, "identity_of"):
            return None
        identity = segmenter.identity_of(vocabulary, settings, identities)
        return SegmenterRecord.of_identity(identity, vocabulary.names)

    def model_identity(self, specs: Mapping[str, str | None]) -> dict[str, Any]:
        """The weights ``specs`` name, without loading them (records and evaluation caches)."""
        from ..identity import weights_identity

        return {m.name: weights_identity(specs.get(m.name) or m.default) for m in self.models}


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            name="segearth-ov",
            title="SegEarth-OV (CLIP)",
            models=(
                ModelOption(
                    "clip",
                    DEFAULT_CLIP,
                    "CLIP: open_clip name[:tag] (default {default}, OpenAI weights), hf-hub:ORG/REPO, "
                    "local-dir:PATH, an OpenAI-format .pt file, or ARCH:FILE",
                    _load_clip,
                    what="CLIP",
                    identity=_clip_identity,
                ),
                ModelOption(
                    "upsampler",
                    None,
                    "SimFeatUp checkpoint: a file, or 'official' for the released JBU-One (downloaded once); "
                    "default: bilinear",
                    _load_upsampler,
                    what="SimFeatUp checkpoint",
                    first=True,
                    identity=_upsampler_identity,
                ),
            ),
            settings_path="segearth_ov:SegEarthOVSettings",
            segmenter_path="segearth_ov:SegEarthOV",
            preset_table="segearth_ov",
            strip="newline",
            caches=("text_cache", "token_cache"),
            exemplars="prototypes",
        ),
        Method(
            name="segearth-ov3",
            title="SegEarth-OV3 (SAM 3)",
            models=(
                ModelOption(
                    "sam3",
                    DEFAULT_SAM3,
                    "SAM 3 weights: a hub id (default {default}, gated: run `hf auth login`) or a local folder",
                    _load_sam3,
                    what="SAM 3",
                    metavar="ID|PATH",
                    identity=_sam3_identity,
                ),
            ),
            settings_path="segearth_ov3:SegEarthOV3Settings",
            segmenter_path="segearth_ov3:SegEarthOV3",
            preset_table="segearth_ov3",
            strip="whitespace",
            caches=("text_cache",),
            exemplars="boxes",
        ),
    )
}
DEFAULT_METHOD = "segearth-ov"


def method(name: str) -> Method:
    """The registered method ``name``."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def model_options() -> dict[str, ModelOption]:
    """Every method's model options by name (the app's server-wide defaults)."""
    return {o.name: o for m in METHODS.values() for o in m.models}


@dataclass(frozen=True)
class SegmenterRecipe:
    """Everything needed to build a segmenter, picklable: calling it loads the models and builds it
    (a Ray worker does this once per actor)."""

    method: str
    vocabulary: Vocabulary
    settings: Any
    models: Mapping[str, str | None] = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self) -> None:
        """What can be checked without a model is checked here: the background index is a class."""
        bg_idx = getattr(self.settings, "bg_idx", None)
        if bg_idx is not None and not 0 <= bg_idx < len(self.vocabulary):
            raise FieldError(
                "bg_idx",
                f"{{bg_idx}} {bg_idx} is not a class index: the vocabulary has {len(self.vocabulary)} classes "
                f"(0 to {len(self.vocabulary) - 1})",
                type(self.settings),
            )

    def __call__(self) -> Any:
        entry = method(self.method)
        return entry.build(entry.load_models(self.models, self.device), self.vocabulary, self.settings)
