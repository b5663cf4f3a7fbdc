"""Models loaded once per server and segmenters built per run, with caches shared across runs.

The segmenters are the library's own (:class:`~frugalvl.segment.segearth_ov.SegEarthOV`,
:class:`~frugalvl.segment.segearth_ov3.SegEarthOV3`), built from the same settings dataclasses and
presets as ``frugalvl segment``. Two caches make the analyst's loop ("change one synonym, run
again") cheap, without changing any result:

* text features per *query* (not per vocabulary): a run with one class changed encodes one query;
* SegEarth-OV only: the CLIP image tokens per window (keyed by the window's pixels and the attention
  mode), which do not depend on the vocabulary; bounded in bytes, least recently used dropped first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserError
from ..vocab import Vocabulary
from .config import AppConfig
from .safety import model_spec_path, resolve_allowed

log = logging.getLogger(__name__)

METHODS = {"segearth-ov": "SegEarth-OV (CLIP)", "segearth-ov3": "SegEarth-OV3 (SAM 3)"}


@dataclass(frozen=True)
class RunOptions:
    """What the page chose for one run (strings as typed; None: the preset's or the method's default)."""

    method: str = "segearth-ov"
    vocabulary: str = ""
    preset: str | None = None
    clip: str | None = None
    upsampler: str | None = None
    sam3: str | None = None
    prob_thd: float | None = None
    cls_lambda: float | None = None
    attention: str | None = None


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


def _cached_segearth_ov_class():
    from ..segment.segearth_ov import SegEarthOV
    from ..vocab import templates

    class CachedSegEarthOV(SegEarthOV):
        """SegEarth-OV with the per-query text cache and the per-window image-token cache (module doc)."""

        before_window = None  # a callable run before each window batch (the app's cancel check)

        def __init__(self, *args, query_cache: dict, token_cache: LRUBytes, **kwargs) -> None:
            self._query_cache = query_cache
            self._token_cache = token_cache
            super().__init__(*args, **kwargs)

        def text_classifier(self) -> torch.Tensor:
            """Same values as :meth:`SegEarthOV.text_classifier`, each query encoded once per server."""
            fills = None
            rows = []
            for q in self.vocabulary.queries:
                key = (self.clip.identity, q, self.settings.templates)
                if key not in self._query_cache:
                    fills = fills or templates(self.settings.templates)
                    emb = self.clip.encode_text([t(q) for t in fills]).mean(dim=0)
                    self._query_cache[key] = emb / emb.norm()
                rows.append(self._query_cache[key])
            return torch.stack(rows)

        def encode_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.before_window is not None:
                self.before_window()
            digest = hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
            key = (
                self.clip.identity,
                self.settings.attention,
                self.settings.residual,
                tuple(x.shape),
                str(x.dtype),
                digest,
            )
            hit = self._token_cache.get(key)
            if hit is not None:
                return hit
            value = super().encode_windows(x)
            self._token_cache.put(key, value)
            return value

    return CachedSegEarthOV


def _cached_segearth_ov3_class():
    from ..segment.segearth_ov3 import SegEarthOV3

    class CachedSegEarthOV3(SegEarthOV3):
        """SegEarth-OV3 whose prompt text features are computed once per prompt per server."""

        def __init__(self, *args, query_cache: dict, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._query_cache = query_cache

        def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
            queries = tuple(self.vocabulary.queries)
            missing = [q for q in dict.fromkeys(queries) if (self.sam3.source, q) not in self._query_cache]
            if missing:
                # encode only the new prompts with the library's own method, on a throwaway vocabulary
                probe = SegEarthOV3(
                    self.sam3, Vocabulary(tuple((q,) for q in missing)), dataclasses.replace(self.settings, bg_idx=0)
                )
                feats, mask = probe.text_embeddings()
                for i, q in enumerate(missing):
                    self._query_cache[(self.sam3.source, q)] = (feats[i], mask[i])
            feats = torch.stack([self._query_cache[(self.sam3.source, q)][0] for q in queries])
            mask = torch.stack([self._query_cache[(self.sam3.source, q)][1] for q in queries])
            return feats, mask

    return CachedSegEarthOV3


class ModelHub:
    """Loads each model once (thread-safe) and builds segmenters for runs."""

    def __init__(self, config: AppConfig, token_cache_mb: int = 512) -> None:
        self.config = config
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.query_cache: dict = {}
        self.token_cache = LRUBytes(token_cache_mb << 20)

    def _checked_spec(self, given: str | None, default: str | None) -> str | None:
        """The page's model spec; a local path in it must lie under --data-root (the operator's defaults are trusted)."""
        if given is None or not given.strip() or given.strip() == (default or ""):
            return default
        local = model_spec_path(given)
        if local is None:
            return given.strip()
        prefix, path = local
        return prefix + str(resolve_allowed(path, self.config.data_roots))

    def _load(self, kind: str, spec: str):
        key = (kind, spec)
        with self._lock:
            if key not in self._models:
                from ..devices import resolve_device

                device = resolve_device(self.config.device)
                log.info("loading %s %s on %s", kind, spec, device)
                if kind == "clip":
                    from ..models.clip import load_clip

                    self._models[key] = load_clip(spec, device=device)
                elif kind == "upsampler":
                    from ..models.upsampler import resolve_upsampler

                    self._models[key] = resolve_upsampler(spec)
                else:
                    from ..models.sam3 import load_sam3

                    self._models[key] = load_sam3(spec, device=device)
            return self._models[key]

    def segmenter(self, options: RunOptions):
        """A segmenter for the page's options; models load on first use and stay loaded."""
        if options.method not in METHODS:
            raise UserError(f"unknown method {options.method!r}: choose one of {', '.join(METHODS)}")
        vocabulary = self.vocabulary(options)
        overrides: dict[str, Any] = dict(prob_thd=options.prob_thd)
        if options.method == "segearth-ov":
            from ..segment.segearth_ov import SegEarthOVSettings

            overrides.update(cls_lambda=options.cls_lambda, attention=options.attention or None)
            settings = _settings(SegEarthOVSettings, options.preset, overrides)
            clip = self._load("clip", self._checked_spec(options.clip, self.config.clip) or self.config.clip)
            up_spec = self._checked_spec(options.upsampler, self.config.upsampler)
            upsampler = self._load("upsampler", up_spec) if up_spec and up_spec.lower() != "none" else None
            return _cached_segearth_ov_class()(
                clip, vocabulary, upsampler, settings, query_cache=self.query_cache, token_cache=self.token_cache
            )
        from ..segment.segearth_ov3 import SegEarthOV3Settings

        settings = _settings(SegEarthOV3Settings, options.preset, overrides)
        sam3 = self._load("sam3", self._checked_spec(options.sam3, self.config.sam3) or self.config.sam3)
        return _cached_segearth_ov3_class()(sam3, vocabulary, settings, query_cache=self.query_cache)

    @staticmethod
    def vocabulary(options: RunOptions) -> Vocabulary:
        """The typed vocabulary in the CLI's ``--classes`` syntax, or the preset's when the box is empty."""
        if options.vocabulary.strip():
            return Vocabulary.parse(options.vocabulary)
        if options.preset:
            from ..presets import preset_vocabulary

            return preset_vocabulary(options.preset, options.method)
        raise UserError(
            "the class vocabulary is empty: type classes like 'background;building,roof;road' or pick a preset"
        )


def _settings(cls, preset: str | None, overrides: dict):
    values = {k: v for k, v in overrides.items() if v is not None}
    if preset and hasattr(cls, "from_preset"):
        return cls.from_preset(preset, **values)
    return dataclasses.replace(cls(), **values)
