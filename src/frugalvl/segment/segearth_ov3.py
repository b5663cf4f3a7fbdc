"""SegEarth-OV3: open-vocabulary segmentation of remote-sensing images with SAM 3.

Paper: "SegEarth-OV3: Exploring SAM 3 for Open-Vocabulary Semantic Segmentation in Remote Sensing
Images", arXiv 2512.08730; official code earth-insights/SegEarth-OV-3. Method notes:
docs/methods/segearth_ov3.md (SAM 3, the official inference, the scheduling that differs). SAM 3 comes from
transformers; :mod:`frugalvl.models.sam3` calls its stages one by one.

Per view (the whole image, or one sliding-window crop, #sliding-windows) and per prompt q (every synonym is its
own prompt), exactly as the official ``_inference_single_view`` (#fusion-of-one-view):

1. instances: F_q = max over kept queries i of sigmoid(resize(mask_i)) · s_i, where
   s_i = sigmoid(class logit_i) · p_q and an instance is kept when s_i > confidence_threshold;
2. dual head: F_q = max(F_q, sigmoid(resize(semantic logit)));
3. presence: F_q = F_q · p_q, with p_q = sigmoid(presence logit) (a soft multiply, no threshold).

Logits are resized bilinearly to the view size *before* the sigmoid (the official order, not the transformers
post-processor's). Views are averaged where they overlap, each class takes the max over its synonyms, and
``labels_from_scores`` applies the argmax, ``prob_thd`` and ``bg_idx`` (#synonyms-argmax-and-background).

What differs from the official code is only how the work is scheduled (#scheduling-that-differs), each proven equal
by a test:

* the image encoder runs once per view, ``view_batch`` views per pass, and the (view, prompt) pairs of
  such a batch go through the prompt-conditioned stages (fusion encoder, decoder, segmentation head)
  together, ``prompt_chunk × views`` at a time, with each pair's vision features taken from its
  view (#batched-prompts);
* text embeddings are computed once per vocabulary and reused for every view and image
  (#text-embeddings-once-per-vocabulary);
* the loop over kept instances is one batched resize and a scatter-max (#vectorised-instances);
* ``class_scores`` never holds ``[Q, H, W]`` at full size (#class-score-memory): where views do not overlap it keeps a
  running max per class; where they do, it keeps per-prompt sums only for a band of one window's
  height, since the official order averages views before the synonym max (:class:`~frugalvl.windows.BandAverage`);
* views are resized for SAM 3 from uint8 tensors on the model's device, not via PIL (same values);
* optional presence pruning (#presence-pruning): a prompt with p_q < prob_thd can never decide a label, since
  F_q ≤ p_q; its segmentation head is skipped and its scores are 0. Labels are unchanged; the saved
  ``_probs.npy`` then holds 0 for such prompts. Used only when views do not overlap.

Precision: the official code keeps fp32 weights and runs under bf16 autocast on CUDA; ``precision="auto"``
does the same on CUDA and runs fp32 on the CPU. Fusion always runs in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.sam3 import (
    DEFAULT_SAM3,
    Sam3Bundle,
    VisionFeatures,
    detect,
    encode_image,
    encode_text,
    load_sam3,
    pixel_values,
    segmentation_head,
)
from ..precision import autocast
from ..progress import announce
from ..settings import option, settings_identity
from ..vocab import Vocabulary
from ..windows import BandAverage, ChannelAverage, GroupMax, Window, WindowSink, overlapping, plan_windows
from .base import Progress, merge_synonyms

if TYPE_CHECKING:
    from .exemplars import Exemplars
    from .exemplars_sam3 import ExemplarPrompts

PRECISIONS = ("auto", "fp32", "bf16")
# Kept instance masks are resized in groups of at most this many pixels (memory bound, not a result change).
_RESIZE_PIXEL_BUDGET = 1 << 25
# Image-sized accumulators stay on the model's device up to this many bytes, else they live in host memory.
_DEVICE_OUTPUT_BUDGET = 1 << 31


@dataclass(frozen=True)
class SegEarthOV3Settings:
    """SegEarth-OV3 settings; the defaults are the official ones (``SegEarthOV3Segmentation.__init__``)."""

    confidence_threshold: float = option(
        0.5, "keep SAM 3 instances whose score s_i exceeds this (the preset's when one is given)"
    )
    prob_thd: float = option(0.0, "pixels whose best class score is below this get bg_idx", cli=False)
    bg_idx: int = option(0, "class index given to low-confidence pixels", cli=False)
    slide_crop: int = option(0, "view size; 0: the whole image is one view (squashed to 1008² by SAM 3)", cli=False)
    slide_stride: int = option(0, "view stride; 0: same as slide_crop", cli=False)
    use_instances: bool = option(
        True, "ablation: drop the instance masks (official use_transformer_decoder)", flag="--no-instances"
    )
    use_semantic: bool = option(True, "ablation: drop the semantic head (official use_sem_seg)", flag="--no-semantic")
    use_presence: bool = option(
        True, "ablation: do not multiply by the presence score (official use_presence_score)", flag="--no-presence"
    )
    prompt_chunk: int = option(16, "prompts per batched SAM 3 call (bounds memory; results do not depend on it)")
    view_batch: int | None = option(
        None,
        "sliding-window views per image-encoder pass; their prompts then go "
        "prompt_chunk × views at a time (none: 4 on a GPU, 1 on the CPU)",
        parse=int,
    )
    presence_pruning: bool = option(
        False,
        "skip the segmentation head for prompts whose presence is below prob_thd "
        "(same labels; their saved probabilities become 0)",
    )
    precision: str = option(
        "auto", "auto: bf16 autocast on CUDA as the official code, fp32 on the CPU", choices=PRECISIONS
    )

    def __post_init__(self) -> None:
        if self.prompt_chunk < 1:
            raise ValueError(f"prompt_chunk must be at least 1, got {self.prompt_chunk}")
        if self.view_batch is not None and self.view_batch < 1:
            raise ValueError(f"view_batch must be at least 1 (or none for the device's default), got {self.view_batch}")
        if self.slide_crop < 0 or self.slide_stride < 0:
            raise ValueError("slide_crop and slide_stride must be positive (0 = whole image)")
        if self.slide_stride > max(self.slide_crop, 0) > 0:
            raise ValueError(
                f"slide_stride {self.slide_stride} is larger than the view size {self.slide_crop}: "
                "windows would leave gaps"
            )
        if not 0 <= self.prob_thd <= 1:  # nan fails too
            raise ValueError(f"prob_thd must be a probability from 0 to 1, got {self.prob_thd}")
        if not 0 <= self.confidence_threshold <= 1:
            raise ValueError(f"confidence_threshold must be from 0 to 1, got {self.confidence_threshold}")
        if self.bg_idx < 0:
            raise ValueError(f"bg_idx must be a class index (0 or more), got {self.bg_idx}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")

    @classmethod
    def from_preset(cls, name: str, vocabulary: Vocabulary | None = None, **overrides) -> SegEarthOV3Settings:
        """The official settings of a dataset preset (its ``[segearth_ov3]`` table), then ``overrides``."""
        from ..presets import method_settings

        table = method_settings(name, "segearth_ov3", vocabulary)  # the user's own classes: see method_settings
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in table.items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Fusion of one view's logits (#fusion-of-one-view), vectorised over prompts and instances
# ---------------------------------------------------------------------------------------------


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, h, w]`` logits to ``size`` (align_corners=False, as the official code)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.float()
    return F.interpolate(logits[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def instance_maps(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    presence: torch.Tensor,
    size: tuple[int, int],
    confidence_threshold: float,
) -> torch.Tensor:
    """Instance aggregation for K prompts: ``[K, H, W]`` = max over kept i of sigmoid(resize(mask_i)) · s_i.

    ``mask_logits`` [K, N, h, w], ``class_logits`` [K, N], ``presence`` [K] probabilities. A prompt
    with no kept instance gives 0, as the official accumulator that starts at zero.
    """
    k = class_logits.shape[0]
    scores = class_logits.float().sigmoid() * presence.float()[:, None]  # s_i
    prompt_idx, query_idx = (scores > confidence_threshold).nonzero(as_tuple=True)
    out = torch.zeros(k, *size, device=class_logits.device)
    step = max(1, _RESIZE_PIXEL_BUDGET // (size[0] * size[1]))
    for start in range(0, len(prompt_idx), step):
        p, q = prompt_idx[start : start + step], query_idx[start : start + step]
        weighted = _resize(mask_logits[p, q], size).sigmoid() * scores[p, q][:, None, None]
        # max with the zeros already there, as the official loop that starts from F_q = 0
        out.view(k, -1).scatter_reduce_(0, p[:, None].expand(-1, size[0] * size[1]), weighted.flatten(1), "amax")
    return out


def fuse_view(
    mask_logits: torch.Tensor | None,
    class_logits: torch.Tensor,
    presence_logits: torch.Tensor,
    semantic_logits: torch.Tensor | None,
    size: tuple[int, int],
    confidence_threshold: float,
    use_instances: bool = True,
    use_semantic: bool = True,
    use_presence: bool = True,
) -> torch.Tensor:
    """The official per-prompt fusion for K prompts of one view: ``[K, H, W]`` scores in [0, 1].

    ``presence_logits`` [K] (or [K, 1]), ``semantic_logits`` [K, 1, h, w] (or [K, h, w]).
    """
    k = class_logits.shape[0]
    presence = presence_logits.float().reshape(k).sigmoid()
    fused = torch.zeros(k, *size, device=class_logits.device)
    if use_instances:
        fused = instance_maps(mask_logits, class_logits, presence, size, confidence_threshold)
    if use_semantic:
        assert semantic_logits is not None, "use_semantic needs semantic_logits"
        fused = torch.maximum(fused, _resize(semantic_logits.reshape(k, *semantic_logits.shape[-2:]), size).sigmoid())
    if use_presence:
        fused = fused * presence[:, None, None]
    return fused


class SegEarthOV3:
    """SegEarth-OV3 on a loaded SAM 3: ``class_scores(rgb)`` gives ``[C, H, W]`` fused class scores."""

    def __init__(
        self,
        sam3: Sam3Bundle,
        vocabulary: Vocabulary,
        settings: SegEarthOV3Settings = SegEarthOV3Settings(),
        *,
        text_cache: MutableMapping | None = None,
        exemplars: ExemplarPrompts | None = None,
    ) -> None:
        """``text_cache``: prompt text features per prompt, shared across segmenters (a run with one
        prompt changed encodes one); by default this segmenter's own. It never changes a result.
        ``exemplars``: geometry prompts (:meth:`with_exemplars`)."""
        if not 0 <= settings.bg_idx < len(vocabulary):
            raise UserError(f"bg_idx {settings.bg_idx} is not a class index of the {len(vocabulary)}-class vocabulary")
        self.sam3 = sam3
        self.vocabulary = vocabulary
        self.settings = settings
        self.text_cache: MutableMapping = {} if text_cache is None else text_cache
        self.exemplars = exemplars
        self.pruned_prompts = 0  # prompt×view pairs whose segmentation head was skipped (for reports and tests)

    @classmethod
    def from_pretrained(
        cls,
        vocabulary: Vocabulary | str,
        source: str = DEFAULT_SAM3,
        settings: SegEarthOV3Settings = SegEarthOV3Settings(),
        device: str | torch.device = "cpu",
    ) -> SegEarthOV3:
        """Load SAM 3 (hub id or local folder) and build the segmenter; ``vocabulary`` may be given in
        the ``"background;building,roof;road"`` syntax."""
        if isinstance(vocabulary, str):
            vocabulary = Vocabulary.parse(vocabulary)
        return cls(load_sam3(source, device=device), vocabulary, settings)

    def identity(self) -> dict:
        """What produced this segmenter's results: method, settings, vocabulary and model identity."""
        ident = self.identity_of(self.vocabulary, self.settings, {"sam3": self.sam3.identity or self.sam3.source})
        if self.exemplars is not None:
            ident["exemplars"] = self.exemplars.identity()
        return ident

    @staticmethod
    def identity_of(vocabulary: Vocabulary, settings: SegEarthOV3Settings, models: dict) -> dict:
        """:meth:`identity` from the model's identity alone, without exemplars (a finished run is
        recognised unloaded)."""
        return {
            "method": "segearth-ov3",
            "settings": settings_identity(settings),
            "queries": list(vocabulary.queries),
            "query_to_class": list(vocabulary.query_to_class),
            "sam3": models["sam3"],
        }

    def with_exemplars(
        self,
        exemplars: Exemplars,
        rgb: np.ndarray | None = None,
        reuse_tokens: bool = False,
        *,
        run: Exemplars | None = None,
        reused: dict | None = None,
    ) -> SegEarthOV3:
        """This segmenter prompting each class with its text and its exemplar boxes in the views that hold
        them (:mod:`frugalvl.segment.exemplars_sam3`); ``exemplars`` are in the pixel frame of the images
        it will segment. ``reuse_tokens`` (needs ``rgb``, the exemplars' image, or ``reused``, tokens
        encoded earlier): the box tokens also in the other views (frugalvl's extension, off by default).
        ``run``: every exemplar of a run of several inputs (their classes extend the vocabulary)."""
        from .exemplars_sam3 import ExemplarPrompts

        prompts, vocabulary = ExemplarPrompts.build(exemplars, self.vocabulary, reuse_tokens, run)
        if reuse_tokens and reused is not None:
            prompts.reused = {c: (t.to(self.device), m.to(self.device)) for c, (t, m) in reused.items()}
        elif reuse_tokens:
            if rgb is None:
                raise ValueError("reuse_tokens needs the exemplars' image")
            with torch.no_grad(), autocast(self.device, self.settings.precision):
                prompts.prepare_reuse(self.sam3, rgb, self.views(*rgb.shape[:2]))
        return type(self)(self.sam3, vocabulary, self.settings, text_cache=self.text_cache, exemplars=prompts)

    def in_window(self, window: Window) -> SegEarthOV3:
        """This segmenter for a part of its image (a scene tile, see :func:`~.base.scores_in_window`):
        the exemplars moved to the part's frame."""
        if self.exemplars is None:
            return self
        inside = self.exemplars.inside(window)
        return type(self)(self.sam3, self.vocabulary, self.settings, text_cache=self.text_cache, exemplars=inside)

    def _prompt_texts(self) -> list[str]:
        """The text of each prompt: its query, or SAM 3's box-only text for an example-only class."""
        if self.exemplars is None:
            return list(self.vocabulary.queries)
        from .exemplars_sam3 import VISUAL_TEXT

        only = set(self.exemplars.example_only)
        return [
            VISUAL_TEXT if c in only else q for q, c in zip(self.vocabulary.queries, self.vocabulary.query_to_class)
        ]

    @property
    def prob_thd(self) -> float:
        return self.settings.prob_thd

    @property
    def bg_idx(self) -> int:
        return self.settings.bg_idx

    @property
    def device(self) -> torch.device:
        return self.sam3.device

    @property
    def view_batch(self) -> int:
        """Views per image-encoder pass: the setting, or 4 on CUDA and 1 on the CPU (batching views buys
        nothing there, docs/methods/segearth_ov3_batching.md)."""
        return self.settings.view_batch or (4 if self.device.type == "cuda" else 1)

    def _chunks(self, n: int, size: int | None = None) -> Iterator[slice]:
        size = size or self.settings.prompt_chunk
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    @torch.no_grad()
    def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected per-token text features ``[Q, 32, D]`` and validity mask ``[Q, 32]``, each prompt
        encoded once (the prompts not yet in ``text_cache``, together)."""
        model = (self.sam3.identity or self.sam3.source, self.settings.precision)
        queries = self._prompt_texts()
        missing = [q for q in queries if (*model, q) not in self.text_cache]
        if missing:
            announce("encode", f"{len(missing)} text prompts")
            with autocast(self.device, self.settings.precision):
                feats, mask = encode_text(self.sam3, missing, self.settings.prompt_chunk)
            for i, q in enumerate(missing):
                self.text_cache[(*model, q)] = (feats[i], mask[i])
        cached = [self.text_cache[(*model, q)] for q in queries]
        return torch.stack([f for f, _ in cached]), torch.stack([m for _, m in cached])

    def _run(
        self,
        rgb: np.ndarray,
        windows: Sequence[Window],
        sink: WindowSink,
        prune: bool,
        progress: Progress | None = None,
        on_vision: Callable[..., None] | None = None,
    ) -> None:
        """Score every view of ``rgb`` for every prompt and hand the fused maps to ``sink`` (#batched-prompts).

        Views go through the image encoder ``view_batch`` at a time; the (view, prompt) pairs of such a
        batch, in view-major order, then go through detection, segmentation head and fusion
        ``prompt_chunk × views`` at a time. The sink sees each view's ``begin_window`` after every score of
        the views before it, and each view's prompts in order.
        """
        s = self.settings
        text, text_mask = self.text_embeddings()
        n_queries = len(text)
        for group in (windows[b] for b in self._chunks(len(windows), self.view_batch)):
            with autocast(self.device, s.precision):
                vision = encode_image(
                    self.sam3.model, pixel_values(self.sam3, *(rgb[w.y0 : w.y1, w.x0 : w.x1] for w in group))
                )
            if on_vision is not None:  # e.g. change detection keeps the whole image's features
                on_vision(group, vision)
            pairs_view = torch.arange(len(group), device=self.device).repeat_interleave(n_queries)
            pairs_query = torch.arange(n_queries, device=self.device).repeat(len(group))
            prompts, prompt_mask, by_pair = text, text_mask, False
            if self.exemplars is not None:  # per (view, prompt) tokens: text + the view's exemplar boxes
                prompts, prompt_mask, run = self._exemplar_table(vision, group, text, text_mask)
                pairs_view, pairs_query, by_pair = pairs_view[run], pairs_query[run], True
            begun = 0
            for chunk in self._chunks(len(pairs_view), s.prompt_chunk * len(group)):
                views, queries = pairs_view[chunk], pairs_query[chunk]
                rows = views * n_queries + queries if by_pair else queries
                fused = self._score_pairs(vision, views, queries, rows, prompts, prompt_mask, group, prune)
                for v in torch.unique_consecutive(views).tolist():
                    while begun <= v:  # every view up to this one has had all its scores
                        sink.begin_window(group[begun])
                        begun += 1
                    if v in fused:
                        sink.add(group[v], *fused[v])
            while begun < len(group):  # views whose every pair was left out
                sink.begin_window(group[begun])
                begun += 1
            if progress is not None:
                progress(windows.index(group[-1]) + 1, len(windows))

    def _exemplar_table(self, vision, group, text, text_mask):
        from .exemplars_sam3 import prompt_table

        assert self.exemplars is not None
        with autocast(self.device, self.settings.precision):
            return prompt_table(
                self.exemplars, self.sam3.model, vision, group, text, text_mask, self.vocabulary.query_to_class
            )

    def _score_pairs(
        self,
        vision: VisionFeatures,
        views: torch.Tensor,
        queries: torch.Tensor,
        rows: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        group: Sequence[Window],
        prune: bool,
    ) -> dict:
        """Fused scores of K (view, prompt) pairs: ``{view: (prompts [k], scores [k, h, w])}``, leaving out
        the pairs whose scores are all zero (pruned, or neither instances nor semantic map used). ``rows``: each
        pair's row of ``text``/``text_mask`` (its prompt's, or its own with exemplars)."""
        s = self.settings
        with autocast(self.device, s.precision):
            detection = detect(self.sam3.model, vision.take(views), text[rows], text_mask[rows])
            keep = torch.arange(len(views), device=self.device)
            if prune:  # F_q <= p_q < prob_thd: the prompt can decide no label (module docstring)
                keep = (detection.presence_logits.float().sigmoid() >= s.prob_thd).nonzero()[:, 0]
                self.pruned_prompts += len(views) - len(keep)
            if len(keep) == 0 or not (s.use_instances or s.use_semantic):
                return {}
            kept = detection.select(keep)
            masks, semantic = segmentation_head(
                self.sam3.model, vision.take(views[keep]), kept, text[rows[keep]], text_mask[rows[keep]]
            )
        out = {}
        kept_views = views[keep]
        rules = (s.confidence_threshold, s.use_instances, s.use_semantic, s.use_presence)  # fuse_view's order
        for v in torch.unique_consecutive(kept_views).tolist():
            rows = (kept_views == v).nonzero()[:, 0]
            size = (group[v].height, group[v].width)
            args = (masks[rows], kept.class_logits[rows], kept.presence_logits[rows], semantic[rows], size)
            out[v] = (queries[keep[rows]], fuse_view(*args, *rules))
        return out

    def views(self, height: int, width: int) -> list[Window]:
        """The whole image, or the official sliding-window grid when the image exceeds the crop (#sliding-windows)."""
        crop = self.settings.slide_crop
        if crop > 0 and (crop < height or crop < width):
            return plan_windows(height, width, crop, self.settings.slide_stride or crop)
        return [Window(0, height, 0, width)]

    def _plan(self, rgb: np.ndarray) -> tuple[list[Window], bool, bool, torch.device]:
        """Views, whether they overlap, whether presence pruning applies, and where accumulators live."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        windows = self.views(height, width)
        overlap = overlapping(windows, height, width)
        s = self.settings
        prune = s.presence_pruning and s.use_presence and s.prob_thd > 0 and not overlap
        n_values = len(self.vocabulary.queries) * height * width
        device = self.device if 4 * n_values <= _DEVICE_OUTPUT_BUDGET else torch.device("cpu")
        return windows, overlap, prune, device

    @torch.no_grad()
    def query_scores(self, rgb: np.ndarray, on_vision: Callable[..., None] | None = None) -> torch.Tensor:
        """Per-prompt scores ``[Q, H, W]`` (CPU, fp32) for an ``H×W×3`` uint8 RGB image: views averaged
        where they overlap, synonyms not merged (the saved probabilities of each prompt). ``on_vision(views,
        features)`` sees every image-encoder pass."""
        windows, _, prune, device = self._plan(rgb)
        sink = ChannelAverage(len(self.vocabulary.queries), rgb.shape[0], rgb.shape[1], device)
        self._run(rgb, windows, sink, prune, on_vision=on_vision)
        return sink.result().cpu()

    @torch.no_grad()
    def class_scores(self, rgb: np.ndarray, progress: Progress | None = None) -> torch.Tensor:
        """``[C, H, W]`` float32 class scores (CPU): each class the max over its synonym prompts
        (#synonyms-argmax-and-background).

        Equal to ``merge_synonyms(query_scores(rgb))``, without holding ``[Q, H, W]`` at full size
        (#class-score-memory): a running class max where views do not overlap, a band of per-prompt rows where they
        do.
        """
        windows, overlap, prune, device = self._plan(rgb)
        index = torch.as_tensor(list(self.vocabulary.query_to_class))
        height, width = rgb.shape[:2]
        sink: WindowSink = GroupMax(index, height, width, device)  # exact where no pixel is seen twice
        if overlap:
            sink = BandAverage(index, height, width, device, merge_synonyms)
        self._run(rgb, windows, sink, prune, progress)
        return sink.result().cpu()
