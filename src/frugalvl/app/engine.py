"""Models loaded once per server and segmenters built per run, with caches shared across runs.

The methods, their models and their settings come from the library's registry
(:mod:`frugalvl.segment.methods`), as for ``frugalvl segment``. Two caches, handed to the segmenters
as constructor arguments, make the analyst's loop ("change one synonym, run again") cheap without
changing any result:

* ``text_cache``: text features per *query* (not per vocabulary): a run with one class changed
  encodes one query;
* ``token_cache`` (SegEarth-OV): the CLIP image tokens per window batch (keyed by the pixels and the
  attention mode), which do not depend on the vocabulary; bounded in bytes, least recently used
  dropped first.

:class:`RunOptions` is what a page chooses for one run; the API's request model is generated from it
(:func:`run_request_fields`), its settings fields typed as the methods' settings dataclasses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import typing
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import Field

from ..errors import UserError
from ..segment.methods import DEFAULT_METHOD, METHODS, ModelOption, method, model_options
from ..vocab import Vocabulary
from .config import AppConfig
from .safety import model_spec_path, page_model_spec

log = logging.getLogger(__name__)

# the settings fields a page may set for a run (each typed as in the settings dataclasses)
PAGE_SETTINGS = ("prob_thd", "cls_lambda", "attention")


@dataclass(frozen=True)
class RunOptions:
    """What the page chose for one run (strings as typed; None or absent: the preset's or the default).

    ``models``: model specs by option name (``clip``, ``upsampler``, ``sam3``); ``settings``: values of
    :data:`PAGE_SETTINGS`, applied to the methods whose settings have the field.
    """

    method: str = DEFAULT_METHOD
    vocabulary: str = ""
    preset: str | None = None
    models: Mapping[str, str | None] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> RunOptions:
        """From the flat fields of :func:`run_request_fields` (others ignored; empty strings: not given)."""
        given = {
            k: (None if isinstance(v, str) and not v.strip() and k != "vocabulary" else v) for k, v in values.items()
        }
        return cls(
            method=given.get("method") or DEFAULT_METHOD,
            vocabulary=given.get("vocabulary") or "",
            preset=given.get("preset"),
            models={k: given[k] for k in model_options() if given.get(k) is not None},
            settings={k: given[k] for k in PAGE_SETTINGS if given.get(k) is not None},
        )


def setting_type(name: str) -> Any:
    """The type of settings field ``name`` in the first method's settings that has it."""
    for entry in METHODS.values():
        hints = typing.get_type_hints(entry.settings_class())
        if name in hints:
            return hints[name]
    raise KeyError(name)


def run_request_fields() -> dict[str, tuple[Any, Any]]:
    """``name -> (type, default)`` of a run request's options, as pydantic's ``create_model`` takes them:
    method, vocabulary and preset, every registered model option, and :data:`PAGE_SETTINGS`."""
    fields: dict[str, tuple[Any, Any]] = {
        "method": (Annotated[str, Field(max_length=100)], DEFAULT_METHOD),
        "vocabulary": (Annotated[str, Field(max_length=MAX_VOCABULARY)], ""),
        "preset": (Annotated[str, Field(max_length=100)] | None, None),
    }
    fields.update({name: (Annotated[str, Field(max_length=MAX_TEXT)] | None, None) for name in model_options()})
    fields.update({name: (finite(setting_type(name)) | None, None) for name in PAGE_SETTINGS})
    return fields


MAX_TEXT = 1024  # a model name or path
MAX_VOCABULARY = 20_000  # characters of a typed vocabulary


def finite(kind: Any) -> Any:
    """A float field refuses NaN and infinities at the API's edge (422), other types stay as they are."""
    return Annotated[float, Field(allow_inf_nan=False)] if kind is float else kind


class LRUBytes:
    """A least-recently-used cache of tensors bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Any, tuple[torch.Tensor, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value: tuple[torch.Tensor, ...]) -> None:
        size = sum(t.numel() * t.element_size() for t in value)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= sum(t.numel() * t.element_size() for t in old)


class QueryCache(OrderedDict):
    """The segmenters' ``text_cache``, bounded to ``max_items`` queries, least recently used dropped
    first. Asking whether a query is in it counts as a use, so the queries of the run being encoded
    (at most :data:`MAX_QUERIES`, far fewer than ``max_items``) are never the ones dropped.

    ``backing``: the on-disk store the command line and scenes use too
    (:func:`~frugalvl.segment.text_store.default_text_store`): a query missing from memory is read
    from it, and every new entry is written to it, so the server starts warm and its runs warm the CLI.
    """

    def __init__(self, max_items: int = 8 * 512, backing: MutableMapping | None = None) -> None:
        super().__init__()
        self.max_items = max_items
        self.backing = backing

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        if found:
            self.move_to_end(key)
            return True
        return self._from_backing(key)

    def __missing__(self, key: Any) -> Any:
        if self._from_backing(key):
            return super().__getitem__(key)
        raise KeyError(key)

    def _from_backing(self, key: Any) -> bool:
        if self.backing is None:
            return False
        try:
            value = self.backing[key]
        except KeyError:
            return False
        self._remember(key, value)
        return True

    def __setitem__(self, key: Any, value: Any) -> None:
        self._remember(key, value)
        if self.backing is not None:
            self.backing[key] = value

    def _remember(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.max_items:
            self.popitem(last=False)


MAX_CLASSES = 255  # label 255 marks no data in the app's label rasters
MAX_QUERIES = 512  # text queries (classes and their synonyms) in one run


class ModelHub:
    """Loads each model once (thread-safe) and builds segmenters for runs."""

    def __init__(self, config: AppConfig, token_cache_mb: int = 512) -> None:
        self.config = config
        self._models: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()
        from ..segment.text_store import default_text_store

        self.query_cache: QueryCache = QueryCache(backing=default_text_store())  # the segmenters' text_cache
        self.token_cache = LRUBytes(token_cache_mb << 20)

    def _checked_spec(self, option: str, given: str | None, default: str | None) -> str | None:
        """The page's model spec: a hub name, or a file under the model-root folder (the operator's
        defaults, given at start-up, are trusted)."""
        if given is None or not given.strip() or given.strip() == (default or ""):
            return default
        return page_model_spec(option, given, self.config.model_roots)

    def _load(self, option: ModelOption, spec: str | None, device: str) -> Any:
        key = (option.name, spec)
        with self._lock:
            if key not in self._models:
                log.info("loading %s %s on %s", option.name, spec, device)
                self._models[key] = option.load(spec, device)
            return self._models[key]

    def settings(self, options: RunOptions) -> tuple[Vocabulary, Any]:
        """The run's vocabulary and settings; a value the settings refuse (a NaN, a threshold out of
        range) is a UserError now, when the page asks, not a failed run later."""
        entry = method(options.method)
        typed = self.typed_vocabulary(options)
        vocabulary = typed or self.vocabulary(options)
        if len(vocabulary.names) > MAX_CLASSES or len(vocabulary.queries) > MAX_QUERIES:
            raise UserError(
                f"the vocabulary has {len(vocabulary.names)} classes and {len(vocabulary.queries)} names, more "
                f"than one run here takes ({MAX_CLASSES} classes, {MAX_QUERIES} names): split it into several runs"
            )
        known = {f.name for f in dataclasses.fields(entry.settings_class())}
        overrides = {k: v for k, v in options.settings.items() if k in known}
        for name, value in overrides.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{name} {value}: give a finite number")
        try:
            settings = entry.settings(options.preset, typed, **overrides)
        except (ValueError, TypeError) as exc:
            raise UserError(str(exc)) from None
        return vocabulary, settings

    def model_specs(self, options: RunOptions) -> dict[str, str | None]:
        """The models a run of ``options`` loads: hub names as given, local files resolved under the
        model-root folder. A refused name, or a file missing from that folder, is a UserError now, when
        the page asks, so a bad model field never replaces the run in progress."""
        entry = method(options.method)
        specs = {
            m.name: self._checked_spec(m.name, options.models.get(m.name), self.config.model_spec(m.name))
            for m in entry.models
        }
        for name, spec in specs.items():
            given = (options.models.get(name) or "").strip()
            from_page = bool(spec) and bool(given) and given != (self.config.model_spec(name) or "")
            local = model_spec_path(spec) if spec and from_page else None  # the operator's own are trusted
            if local is not None and not os.path.lexists(local[1]):
                raise UserError(f"{name} {given[:120]!r}: no such file in the server's model-root folder")
        return specs

    def segmenter(self, options: RunOptions):
        """A segmenter for the page's options; models load on first use and stay loaded."""
        entry = method(options.method)
        vocabulary, settings = self.settings(options)
        specs = self.model_specs(options)
        models = entry.load_models(specs, self.config.device, load=self._load)
        return entry.build(models, vocabulary, settings, text_cache=self.query_cache, token_cache=self.token_cache)

    @staticmethod
    def typed_vocabulary(options: RunOptions) -> Vocabulary | None:
        """The typed vocabulary in the CLI's ``--classes`` syntax; None when the box is empty."""
        return Vocabulary.parse(options.vocabulary) if options.vocabulary.strip() else None

    @classmethod
    def vocabulary(cls, options: RunOptions) -> Vocabulary:
        """The typed vocabulary, or the preset's when the box is empty (an unknown method fails first)."""
        entry = method(options.method)
        typed = cls.typed_vocabulary(options)
        if typed is not None:
            return typed
        if options.preset:
            return entry.vocabulary(options.preset)
        raise UserError(
            "the class vocabulary is empty: type classes like 'background;building,roof;road' or pick a preset"
        )
