"""SegEarth-OV: training-free open-vocabulary segmentation of remote-sensing images with CLIP.

Li et al., "SegEarth-OV: Towards Training-Free Open-Vocabulary Segmentation for Remote Sensing
Images", CVPR 2025 (arXiv 2410.01768). Read next to docs/methods/segearth_ov.md; the default
settings reproduce the official code (likyoo/SegEarth-OV):

1. resize the image so its long side is 448 (bilinear, OpenCV as mmcv), CLIP-normalise (#preprocessing);
2. cut 224×224 windows at stride 112 (#sliding-windows), all windows of an image in one batch;
3. per window: CLIP ViT with a replaced last block (:mod:`frugalvl.models.attention`, #the-last-block), patch features
   upsampled ×16 by SimFeatUp (:mod:`frugalvl.models.jbu`, #upsampling) or bilinearly, cosine logits against
   template-averaged text embeddings (#text-classifier-and-synonyms), minus 0.3× the [CLS] logits (global bias
   alleviation, #global-bias-alleviation);
4. average overlapping windows, resize to the input size, softmax(50·logits) over all queries,
   max over each class's synonyms (#class-probabilities-and-labels).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_pool import cpu_workers, map_in_order
from ..errors import UserError
from ..models.attention import MODES
from ..models.clip import DEFAULT_CLIP, OPENAI_MEAN, ClipModel
from ..models.dense_clip import dense_tokens
from ..models.jbu import resolve_kernel_backend
from ..progress import announce
from ..settings import option, settings_identity
from ..vocab import Vocabulary, templates
from ..windows import WindowAccumulator, needed_windows, pixels_read_by_resize, plan_windows
from .base import Progress, merge_synonyms

if TYPE_CHECKING:
    from .exemplars import Exemplars
    from .exemplars_clip import Prototypes

log = logging.getLogger(__name__)

# The official configs normalise with these (CLIP's mean/std ×255, as written in cfg files).
OFFICIAL_MEAN = (122.771, 116.746, 104.094)
OFFICIAL_STD = (68.501, 66.632, 70.323)


class TokenCache(Protocol):
    """Where :meth:`SegEarthOV.encode_windows` keeps image tokens: ``get`` (None when absent) and ``put``."""

    def get(self, key: Any) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def put(self, key: Any, value: tuple[torch.Tensor, torch.Tensor]) -> None: ...


def _long_side(text: str) -> int | None:
    """``448`` or ``native`` (keep the size), as typed by a user."""
    if str(text).strip().lower() == "native":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of pixels or 'native'") from None
    if value < 1:
        raise ValueError(f"{value} must be a positive number of pixels or 'native'")
    return value


def _check_settings(s: SegEarthOVSettings) -> None:
    """Ranges of :class:`SegEarthOVSettings`; each message starts with the field's name."""
    if s.attention not in MODES:
        raise ValueError(f"attention {s.attention!r} is unknown: choose one of {', '.join(MODES)}")
    if not math.isfinite(s.cls_lambda):
        raise ValueError(f"cls_lambda must be a finite number, got {s.cls_lambda}")
    if not (math.isfinite(s.logit_scale) and s.logit_scale > 0):
        raise ValueError(f"logit_scale must be a finite number above 0, got {s.logit_scale}")
    if not 0 <= s.prob_thd <= 1:  # nan fails too
        raise ValueError(f"prob_thd must be a probability from 0 to 1, got {s.prob_thd}")
    if s.bg_idx < 0:
        raise ValueError(f"bg_idx must be a class index (0 or more), got {s.bg_idx}")
    if s.long_side is not None and s.long_side < 1:
        raise ValueError(f"long_side must be at least 1 pixel (or None to keep the size), got {s.long_side}")
    if s.slide_crop < 1:
        raise ValueError(f"slide_crop must be at least 1 pixel, got {s.slide_crop}")
    if not 1 <= s.slide_stride <= s.slide_crop:
        raise ValueError(
            f"slide_stride must be from 1 to the window size {s.slide_crop} (no gaps), got {s.slide_stride}"
        )
    if s.window_batch is not None and s.window_batch < 1:
        raise ValueError(f"window_batch must be at least 1 (or None for the device's default), got {s.window_batch}")


@dataclass(frozen=True)
class SegEarthOVSettings:
    """SegEarth-OV settings; the defaults are the official ones (docs/methods/segearth_ov.md#official-defaults)."""

    attention: str = option("segearth", "last-block attention mode", choices=MODES)
    residual: bool = option(False, "keep the last block's residual and FFN (official: dropped)", flag="--keep-residual")
    cls_lambda: float = option(-0.3, "global bias alleviation weight λ (the preset's when one is given)")
    logit_scale: float = option(50.0, "softmax temperature on the cosine logits")
    prob_thd: float = option(0.0, "pixels whose best class score is below this get bg_idx", cli=False)
    bg_idx: int = option(0, "class index given to low-confidence pixels", cli=False)
    long_side: int | None = option(
        448, "resize the long side to this many pixels; 'native' (None) keeps the size", parse=_long_side
    )
    slide_crop: int = option(224, "sliding-window size in pixels", cli=False)
    slide_stride: int = option(112, "sliding-window stride in pixels", cli=False)
    templates: str = option("imagenet80", "prompt templates: imagenet80, photo or none")
    window_batch: int | None = option(
        None, "windows per forward pass; none: 16 on a GPU, 1 on the CPU (faster there)", parse=int
    )
    commute_upsampler: bool = option(
        False, "apply the upsampler's final 1×1 conv at low resolution (exact up to rounding)"
    )
    jbu_kernel: str = option(
        "auto",
        "how the upsampler's kernels are applied: auto (Triton on CUDA, else torch), triton, torch, or compiled "
        "(CPU: torch.compile'd, ~1.5x faster with JBU-One; compiling takes ~2 minutes once, then kept in ~/.cache)",
        choices=("auto", "triton", "torch", "compiled"),
    )

    def __post_init__(self) -> None:
        """Refuse values that would give silent nonsense (all-background maps, gaps between windows)."""
        _check_settings(self)

    @classmethod
    def from_preset(cls, name: str, vocabulary: Vocabulary | None = None, **overrides) -> SegEarthOVSettings:
        """The official settings of a dataset preset (its ``[segearth_ov]`` thresholds), then ``overrides``."""
        from ..presets import method_settings

        table = method_settings(name, "segearth_ov", vocabulary)  # the user's own classes: see method_settings
        values: dict[str, Any] = {k: table[k] for k in ("prob_thd", "bg_idx", "cls_lambda") if k in table}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class SegEarthOV:
    """A SegEarth-OV segmenter, built once and called per image (see :class:`~.base.Segmenter`)."""

    def __init__(
        self,
        clip: ClipModel,
        vocabulary: Vocabulary,
        upsampler: nn.Module | None = None,
        settings: SegEarthOVSettings = SegEarthOVSettings(),
        *,
        text_cache: MutableMapping | None = None,
        token_cache: TokenCache | None = None,
        prototypes: Prototypes | None = None,
    ) -> None:
        """``text_cache``: text features per *query*, shared across segmenters (a run with one class
        changed encodes one query); ``token_cache``: the CLIP image tokens per window batch (keyed by its
        pixels and the attention mode, which do not depend on the vocabulary). Neither changes a result.
        ``prototypes``: visual queries from exemplars (:meth:`with_exemplars`); their example-only classes
        must already be in ``vocabulary``."""
        if settings.attention not in MODES:
            raise UserError(f"unknown attention mode {settings.attention!r}: choose one of {', '.join(MODES)}")
        if not 0 <= settings.bg_idx < len(vocabulary):
            raise UserError(
                f"bg_idx {settings.bg_idx} is not a class index: the vocabulary has {len(vocabulary)} classes"
            )
        self.clip = clip
        self.vocabulary = vocabulary
        self.settings = settings
        self.text_cache = text_cache
        self.token_cache = token_cache
        self._cache_lock = threading.Lock()
        self.upsampler = upsampler.to(clip.device).eval() if upsampler is not None else None
        if self.upsampler is not None and hasattr(self.upsampler, "set_kernel_backend"):
            self.upsampler.set_kernel_backend(settings.jbu_kernel)
            resolve_kernel_backend(settings.jbu_kernel, clip.device)  # a choice this machine lacks: now, not per image
        if self.upsampler is not None:
            feat_dim = getattr(self.upsampler, "feature_dim", clip.embed_dim)
            if feat_dim != clip.embed_dim:
                raise UserError(
                    f"the upsampler works on {feat_dim}-d features but this CLIP gives {clip.embed_dim}-d "
                    "ones: train one for this CLIP with 'frugalvl train-upsampler', or use none"
                )
        self.prototypes = prototypes
        self.query_features = self.text_classifier()
        self.query_to_class = vocabulary.query_to_class
        if prototypes is not None:  # text of example-only classes dropped, one query per prototype added
            from .exemplars_clip import add_prototype_queries

            self.query_features, self.query_to_class = add_prototype_queries(
                self.query_features, vocabulary, prototypes, settings.bg_idx
            )
        official = tuple(round(m, 4) for m in clip.mean) == tuple(round(m, 4) for m in OPENAI_MEAN)
        mean = OFFICIAL_MEAN if official else tuple(255 * m for m in clip.mean)
        std = OFFICIAL_STD if official else tuple(255 * s for s in clip.std)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(
        cls,
        vocabulary: Vocabulary | str,
        clip: str = DEFAULT_CLIP,
        upsampler: str | None = None,
        settings: SegEarthOVSettings = SegEarthOVSettings(),
        device: str = "cpu",
    ) -> SegEarthOV:
        """Load the models by name and build a segmenter.

        ``vocabulary``: a :class:`~frugalvl.vocab.Vocabulary` or the ``"background;building,roof;road"``
        syntax; ``clip``: anything :func:`frugalvl.models.clip.load_clip` takes; ``upsampler``: ``None``
        (bilinear), ``"official"`` (the released JBU-One) or a checkpoint path.
        """
        from ..devices import resolve_device
        from ..models.clip import load_clip
        from ..models.upsampler import resolve_upsampler

        if isinstance(vocabulary, str):
            vocabulary = Vocabulary.parse(vocabulary)
        up = resolve_upsampler(upsampler)
        return cls(load_clip(clip, device=resolve_device(device)), vocabulary, up, settings)

    def identity(self) -> dict:
        """What produced this segmenter's results: method, settings, vocabulary and model identities."""
        upsampler = getattr(self.upsampler, "identity", None) if self.upsampler is not None else None
        ident = self.identity_of(self.vocabulary, self.settings, {"clip": self.clip.identity, "upsampler": upsampler})
        if self.prototypes is not None:
            ident["queries"] = self.prototypes.text_queries(self.vocabulary)
            ident["prototypes"] = self.prototypes.identity()
        return ident

    @staticmethod
    def identity_of(vocabulary: Vocabulary, settings: SegEarthOVSettings, models: dict) -> dict:
        """:meth:`identity` from the models' identities alone, without exemplar prototypes (a finished run
        is recognised unloaded)."""
        return {
            "method": "segearth-ov",
            "settings": settings_identity(settings),
            "queries": list(vocabulary.queries),
            "query_to_class": list(vocabulary.query_to_class),
            "clip": models["clip"],
            "upsampler": models["upsampler"],
        }

    # -- exemplars (docs/methods/exemplars.md#segearth-ov) ---------------------------------------------------

    def with_exemplars(self, exemplars: Exemplars, rgb: np.ndarray) -> SegEarthOV:
        """This segmenter with one more query per exemplar of ``rgb`` (a visual prototype,
        :mod:`frugalvl.segment.exemplars_clip`), applied to every image it segments."""
        from .exemplars_clip import compute_prototypes

        return self.with_prototypes(compute_prototypes(self, exemplars, rgb))

    def with_prototypes(self, prototypes: Prototypes) -> SegEarthOV:
        """This segmenter with ``prototypes`` (computed here or loaded from a file) as extra queries."""
        from .exemplars_clip import model_identity

        prototypes.check_model(model_identity(self))
        # a class this vocabulary names has its text: only the others stay example-only
        names = {n.lower() for n in self.vocabulary.names}
        only = tuple(n for n in prototypes.example_only if n.lower() not in names)
        prototypes = dataclasses.replace(prototypes, example_only=only)
        if self.prototypes is not None:
            from .exemplars_clip import Prototypes as P

            prototypes = P.concat([self.prototypes, prototypes])
        vocabulary, _ = prototypes.extend(self.vocabulary)
        return type(self)(
            self.clip,
            vocabulary,
            self.upsampler,
            self.settings,
            text_cache=self.text_cache,
            token_cache=self.token_cache,
            prototypes=prototypes,
        )

    @property
    def prob_thd(self) -> float:
        return self.settings.prob_thd

    @property
    def bg_idx(self) -> int:
        return self.settings.bg_idx

    # -- text side (#text-classifier-and-synonyms) --------------------------------------------------------------------

    def text_classifier(self) -> torch.Tensor:
        """``[Q, D]``: per query, the re-normalised mean of its normalised template embeddings.

        Cached on the loaded CLIP per (queries, templates), so segmenters built again for the same
        vocabulary (e.g. one per dataset in an evaluation) do not re-encode; with a ``text_cache``, per
        query instead, and only the queries not in it are encoded.
        """
        queries = tuple(self.vocabulary.queries)  # example-only classes' rows: dropped in __init__
        if self.text_cache is None:
            key = ("segearth_ov", queries, self.settings.templates)
            if key not in self.clip.text_cache:
                self.clip.text_cache[key] = self._encode_queries(queries)
            return self.clip.text_cache[key]
        model = (self.clip.identity, str(self.clip.dtype), self.settings.templates)
        missing = [q for q in queries if (*model, q) not in self.text_cache]
        if missing:
            for q, row in zip(missing, self._encode_queries(missing)):
                self.text_cache[(*model, q)] = row
        return torch.stack([self.text_cache[(*model, q)] for q in queries]).to(self.clip.device)

    def _encode_queries(self, queries: Sequence[str]) -> torch.Tensor:
        import time

        fills = templates(self.settings.templates)
        n = len(queries) * len(fills)
        announce("encode", f"{n} text prompts ({len(queries)} class names × {len(fills)} templates)")
        start = time.perf_counter()
        emb = self.clip.encode_text([t(q) for q in queries for t in fills]).view(len(queries), len(fills), -1)
        log.debug("encoded %d text prompts in %.1f s", n, time.perf_counter() - start)
        emb = emb.mean(dim=1)
        return emb / emb.norm(dim=-1, keepdim=True)

    # -- image side -----------------------------------------------------------------------------

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """Resize (long side → 448, OpenCV bilinear as mmcv) and normalise: ``[1, 3, h, w]`` float32."""
        h, w = rgb.shape[:2]
        if self.settings.long_side is not None:
            scale = self.settings.long_side / max(h, w)
            size = (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5)))  # mmcv's rounding, >= 1 px
            if size != (w, h):
                import cv2

                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        return (x - self._mean) / self._std

    def encode_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS ``[B, D]`` and patch features ``[B, D, h/16, w/16]`` with the replaced last block (#the-last-block)."""
        if self.token_cache is None:
            return self._encode_windows(x)
        pixels = hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
        s = self.settings
        key = (self.clip.identity, s.attention, s.residual, tuple(x.shape), str(x.dtype), pixels)
        with self._cache_lock:  # windows may be encoded on several threads (query_logits)
            hit = self.token_cache.get(key)
        if hit is None:
            hit = self._encode_windows(x)
            with self._cache_lock:
                self.token_cache.put(key, hit)
        return hit

    def _encode_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, (gh, gw) = dense_tokens(self.clip.model.visual, x, self.settings.attention, self.settings.residual)
        patches = tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)
        return tokens[:, 0], patches

    def _upsample(self, patches: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        if self.upsampler is None:
            return patches
        up = self.upsampler.forward_commuted if self.settings.commute_upsampler else self.upsampler
        if patches.is_cuda and patches.dtype == torch.float16:
            # As the official code: the fp32 upsampler under fp16 autocast, result back in fp16.
            with torch.autocast("cuda", dtype=torch.float16):
                return up(patches, guidance).half()
        if patches.dtype == torch.bfloat16 and patches.device.type == "cpu":
            # a bf16 CLIP (an approximate CPU speed option): the upsampler stays in its own dtype, where
            # the CPU's kernels are (bf16 elementwise work is slower there, measured 1.5×)
            dtype = next(self.upsampler.parameters()).dtype
            return up(patches.to(dtype), guidance.to(dtype))
        return up(patches.to(guidance.dtype), guidance)

    def pad_crops(self, crops: torch.Tensor):
        """Crops zero-padded symmetrically to a multiple of the patch size, and the un-padder of their maps."""
        return _pad_to_patch(crops, self.clip.patch_size)

    def window_features(self, crops: torch.Tensor) -> torch.Tensor:
        """``[B, D, h', w']`` L2-normalised dense features of a batch of crops: upsampled to the crop size,
        or on the patch grid without an upsampler (the logits are then resized bilinearly)."""
        return self._features(crops, self.encode_windows(crops)[1])

    def _features(self, crops: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        feats = self._upsample(patches, crops.to(patches.dtype))
        return feats / feats.norm(dim=1, keepdim=True)

    def window_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """``[B, Q, h, w]`` logits for a batch of normalised crops (the official ``forward_feature``)."""
        cls, patches = self.encode_windows(crops)
        text = self.query_features.to(patches.dtype)
        feats = self._features(crops, patches)
        logits = torch.einsum("bdhw,qd->bqhw", feats, text.to(feats.dtype))
        if self.settings.cls_lambda != 0:
            cls = cls / cls.norm(dim=-1, keepdim=True)
            logits = logits + self.settings.cls_lambda * (cls @ text.T).to(logits.dtype)[:, :, None, None]
        if logits.shape[-2:] != crops.shape[-2:]:  # no upsampler: bilinear from the patch grid
            logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def query_logits(
        self, rgb: np.ndarray, progress: Progress | None = None, valid: np.ndarray | None = None
    ) -> torch.Tensor:
        """``[Q, H, W]`` window-averaged logits at the input size (the official ``forward_slide``);
        ``progress(done, total)`` is called after each batch of windows.

        ``valid`` (``[H, W]`` bool, optional): the pixels whose results are wanted (a scene tile's core
        where the input has data). Windows that cannot change them are skipped (#skipped-windows): those
        pixels get the same windows averaged in the same order as in the full plan (bit for bit on one
        thread; a window moved to another thread split may differ in the last bits); elsewhere 0.
        """
        s = self.settings
        device, dtype = self.clip.device, self.clip.dtype
        image = self.preprocess(rgb).to(device=device, dtype=dtype)
        _, _, h, w = image.shape
        windows = plan_windows(h, w, s.slide_crop, s.slide_stride)
        if valid is not None:
            wanted = torch.as_tensor(np.asarray(valid, dtype=bool))
            windows = needed_windows(windows, pixels_read_by_resize(wanted, (h, w)))
        acc = WindowAccumulator(len(self.query_features), h, w, device=device, dtype=dtype)
        batch = max(1, s.window_batch or (16 if device.type == "cuda" else 1))
        groups = [windows[start : start + batch] for start in range(0, len(windows), batch)]

        def group_logits(group: list) -> torch.Tensor:
            crops = torch.cat([image[:, :, win.y0 : win.y1, win.x0 : win.x1] for win in group])
            crops, crop_back = _pad_to_patch(crops, self.clip.patch_size)
            return crop_back(self.window_logits(crops))

        # On the CPU, window batches run side by side on single-threaded workers (frugalvl.cpu_pool);
        # they are added up in the plan's order, so the sums are those of a one-at-a-time run.
        done = 0
        for group, logits in zip(groups, map_in_order(group_logits, groups, cpu_workers(device, len(groups)))):
            for win, values in zip(group, logits):
                acc.add(win, values)
            done += len(group)
            if progress is not None:
                progress(done, len(windows))
        logits = acc.result(fill=None if valid is None else 0.0)[None]
        logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        return logits[0]

    @torch.no_grad()
    def class_scores(
        self, rgb: np.ndarray, progress: Progress | None = None, valid: np.ndarray | None = None
    ) -> torch.Tensor:
        """``[C, H, W]`` class probabilities: softmax over all queries, then max over synonyms
        (#class-probabilities-and-labels); ``valid``: see :meth:`query_logits`."""
        logits = self.query_logits(rgb, progress, valid)
        probs = (logits * self.settings.logit_scale).softmax(dim=0)
        return merge_synonyms(probs, self.query_to_class).float().cpu()


def _pad_to_patch(crops: torch.Tensor, patch: int):
    """Zero-pad crops symmetrically to a multiple of the patch size; return them and an un-padder."""
    h, w = crops.shape[-2:]
    ph, pw = (-h) % patch, (-w) % patch
    if not ph and not pw:
        return crops, lambda t: t
    top, left = ph // 2, pw // 2
    padded = F.pad(crops, (left, pw - left, top, ph - top))
    return padded, lambda t: t[..., top : top + h, left : left + w]
