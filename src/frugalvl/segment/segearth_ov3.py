"""SegEarth-OV3: open-vocabulary segmentation of remote-sensing images with SAM 3.

Paper: "SegEarth-OV3: Exploring SAM 3 for Open-Vocabulary Semantic Segmentation in Remote Sensing
Images", arXiv 2512.08730; official code earth-insights/SegEarth-OV-3. Specification:
``spec/segearth_ov3.md`` (§1 SAM 3, §2 the official inference, §5 the speed-ups). SAM 3 comes from
transformers (:mod:`frugalvl.models.sam3`).

Per view (the whole image, or one sliding-window crop, §2.3) and per prompt q (every synonym is its
own prompt), exactly as the official ``_inference_single_view`` (§2.2):

1. instances: F_q = max over kept queries i of sigmoid(resize(mask_i)) · s_i, where
   s_i = sigmoid(class logit_i) · p_q and an instance is kept when s_i > confidence_threshold;
2. dual head: F_q = max(F_q, sigmoid(resize(semantic logit)));
3. presence: F_q = F_q · p_q, with p_q = sigmoid(presence logit) (a soft multiply, no threshold).

Logits are resized bilinearly to the view size *before* the sigmoid (the official order, not the
transformers post-processor's). Views are averaged where they overlap, each class takes the max over
its synonyms, and ``labels_from_scores`` applies the argmax, ``prob_thd`` and ``bg_idx`` (§2.4).

What differs from the official code is only how the work is scheduled (§5), each proven equal by a test:

* the image encoder runs once per view, and the prompts of the vocabulary go through the
  prompt-conditioned stages (fusion encoder, decoder, segmentation head) together, ``prompt_chunk``
  at a time, with the vision features expanded to the chunk (§5.1);
* text embeddings are computed once per vocabulary and reused for every view and image (§5.2);
* the loop over kept instances is one batched resize and a scatter-max (§5.3);
* optional presence pruning (§5.4): a prompt with p_q < prob_thd can never decide a label, since
  F_q ≤ p_q; its segmentation head is skipped and its scores are 0. Labels are unchanged; the saved
  ``_probs.npy`` then holds 0 for such prompts. Used only when views do not overlap.

Precision: the official code keeps fp32 weights and runs under bf16 autocast on CUDA; ``precision="auto"``
does the same on CUDA and runs fp32 on the CPU. Fusion always runs in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.sam3 import DEFAULT_SAM3, Sam3Bundle, load_sam3
from ..precision import autocast
from ..settings import option, settings_identity
from ..vocab import Vocabulary
from ..windows import Window, WindowAccumulator, plan_windows
from .base import merge_synonyms

PRECISIONS = ("auto", "fp32", "bf16")
# Kept instance masks are resized in groups of at most this many pixels (memory bound, not a result change).
_RESIZE_PIXEL_BUDGET = 1 << 25


@dataclass(frozen=True)
class SegEarthOV3Settings:
    """SegEarth-OV3 settings; the defaults are the official ones (``SegEarthOV3Segmentation.__init__``)."""

    confidence_threshold: float = option(0.5, "keep SAM 3 instances whose score s_i exceeds this (the preset's "
                                              "when one is given)")
    prob_thd: float = option(0.0, "pixels whose best class score is below this get bg_idx", cli=False)
    bg_idx: int = option(0, "class index given to low-confidence pixels", cli=False)
    slide_crop: int = option(0, "view size; 0: the whole image is one view (squashed to 1008² by SAM 3)", cli=False)
    slide_stride: int = option(0, "view stride; 0: same as slide_crop", cli=False)
    use_instances: bool = option(True, "ablation: drop the instance masks (official use_transformer_decoder)",
                                 flag="--no-instances")
    use_semantic: bool = option(True, "ablation: drop the semantic head (official use_sem_seg)", flag="--no-semantic")
    use_presence: bool = option(True, "ablation: do not multiply by the presence score (official use_presence_score)",
                                flag="--no-presence")
    prompt_chunk: int = option(16, "prompts per batched SAM 3 call (bounds memory; results do not depend on it)")
    presence_pruning: bool = option(False, "skip the segmentation head for prompts whose presence is below prob_thd "
                                           "(same labels; their saved probabilities become 0)")
    precision: str = option("auto", "auto: bf16 autocast on CUDA as the official code, fp32 on the CPU",
                            choices=PRECISIONS)

    def __post_init__(self) -> None:
        if self.prompt_chunk < 1:
            raise ValueError(f"prompt_chunk must be at least 1, got {self.prompt_chunk}")
        if self.slide_crop < 0 or self.slide_stride < 0:
            raise ValueError("slide_crop and slide_stride must be positive (0 = whole image)")
        if self.slide_stride > max(self.slide_crop, 0) > 0:
            raise ValueError(f"slide_stride {self.slide_stride} is larger than the view size {self.slide_crop}: "
                             "windows would leave gaps")
        if not 0 <= self.prob_thd <= 1:  # nan fails too
            raise ValueError(f"prob_thd must be a probability from 0 to 1, got {self.prob_thd}")
        if not 0 <= self.confidence_threshold <= 1:
            raise ValueError(f"confidence_threshold must be from 0 to 1, got {self.confidence_threshold}")
        if self.bg_idx < 0:
            raise ValueError(f"bg_idx must be a class index (0 or more), got {self.bg_idx}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")

    @classmethod
    def from_preset(cls, name: str, vocabulary: Vocabulary | None = None, **overrides) -> "SegEarthOV3Settings":
        """The official settings of a dataset preset (its ``[segearth_ov3]`` table), then ``overrides``."""
        from ..presets import method_settings

        table = method_settings(name, "segearth_ov3", vocabulary)  # the user's own classes: see method_settings
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in table.items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Fusion of one view's logits (§2.2), vectorised over prompts and instances
# ---------------------------------------------------------------------------------------------

def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, h, w]`` logits to ``size`` (align_corners=False, as the official code)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.float()
    return F.interpolate(logits[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def instance_maps(mask_logits: torch.Tensor, class_logits: torch.Tensor, presence: torch.Tensor,
                  size: tuple[int, int], confidence_threshold: float) -> torch.Tensor:
    """Instance aggregation for K prompts: ``[K, H, W]`` = max over kept i of sigmoid(resize(mask_i)) · s_i.

    ``mask_logits`` [K, N, h, w], ``class_logits`` [K, N], ``presence`` [K] probabilities. A prompt
    with no kept instance gives 0, as the official accumulator that starts at zero.
    """
    k = class_logits.shape[0]
    scores = class_logits.float().sigmoid() * presence.float()[:, None]           # s_i
    prompt_idx, query_idx = (scores > confidence_threshold).nonzero(as_tuple=True)
    out = torch.zeros(k, *size, device=class_logits.device)
    step = max(1, _RESIZE_PIXEL_BUDGET // (size[0] * size[1]))
    for start in range(0, len(prompt_idx), step):
        p, q = prompt_idx[start:start + step], query_idx[start:start + step]
        weighted = _resize(mask_logits[p, q], size).sigmoid() * scores[p, q][:, None, None]
        # max with the zeros already there, as the official loop that starts from F_q = 0
        out.view(k, -1).scatter_reduce_(0, p[:, None].expand(-1, size[0] * size[1]), weighted.flatten(1), "amax")
    return out


def fuse_view(mask_logits: torch.Tensor | None, class_logits: torch.Tensor, presence_logits: torch.Tensor,
              semantic_logits: torch.Tensor | None, size: tuple[int, int], confidence_threshold: float,
              use_instances: bool = True, use_semantic: bool = True, use_presence: bool = True) -> torch.Tensor:
    """The official per-prompt fusion for K prompts of one view: ``[K, H, W]`` scores in [0, 1].

    ``presence_logits`` [K] (or [K, 1]), ``semantic_logits`` [K, 1, h, w] (or [K, h, w]).
    """
    k = class_logits.shape[0]
    presence = presence_logits.float().reshape(k).sigmoid()
    fused = torch.zeros(k, *size, device=class_logits.device)
    if use_instances:
        fused = instance_maps(mask_logits, class_logits, presence, size, confidence_threshold)
    if use_semantic:
        fused = torch.maximum(fused, _resize(semantic_logits.reshape(k, *semantic_logits.shape[-2:]), size).sigmoid())
    if use_presence:
        fused = fused * presence[:, None, None]
    return fused


# ---------------------------------------------------------------------------------------------
# SAM 3's prompt-conditioned stages, split so that presence is known before the segmentation head
# (the same calls, in the same order, as transformers' Sam3Model.forward for text prompts)
# ---------------------------------------------------------------------------------------------

@dataclass
class VisionFeatures:
    """The FPN maps the detector uses (``scalp=1``: the coarsest map dropped), batch 1."""

    maps: list[torch.Tensor]
    positions: list[torch.Tensor]

    def expand(self, k: int) -> "VisionFeatures":
        """The same features viewed as a batch of ``k`` (vision and text batches must match)."""
        return VisionFeatures([m.expand(k, -1, -1, -1) for m in self.maps],
                              [p.expand(k, -1, -1, -1) for p in self.positions])


@dataclass
class Detection:
    """Fusion encoder + decoder outputs for K prompts."""

    class_logits: torch.Tensor      # [K, N]
    presence_logits: torch.Tensor   # [K]
    queries: torch.Tensor           # [K, N, D] last decoder layer
    encoder_states: torch.Tensor    # [K, S, D]

    def select(self, index: torch.Tensor) -> "Detection":
        return Detection(self.class_logits[index], self.presence_logits[index], self.queries[index],
                         self.encoder_states[index])


def encode_image(model: torch.nn.Module, pixel_values: torch.Tensor) -> VisionFeatures:
    out = model.get_vision_features(pixel_values=pixel_values)
    return VisionFeatures(list(out.fpn_hidden_states[:-1]), list(out.fpn_position_encoding[:-1]))


def detect(model: torch.nn.Module, vision: VisionFeatures, text: torch.Tensor, text_mask: torch.Tensor) -> Detection:
    """Fusion encoder, DETR decoder, query scoring and presence for K prompts (vision batch K)."""
    encoder = model.detr_encoder(vision_features=[vision.maps[-1]], text_features=text,
                                 vision_pos_embeds=[vision.positions[-1]], text_mask=text_mask)
    decoder = model.detr_decoder(vision_features=encoder.last_hidden_state, text_features=encoder.text_features,
                                 vision_pos_encoding=encoder.pos_embeds_flattened, text_mask=text_mask,
                                 spatial_shapes=encoder.spatial_shapes)
    last = decoder.intermediate_hidden_states[-1:]  # scoring is per layer; only the last one is used
    class_logits = model.dot_product_scoring(decoder_hidden_states=last, text_features=encoder.text_features,
                                             text_mask=text_mask)[-1, ..., 0]
    return Detection(class_logits, decoder.presence_logits[-1][:, 0], last[0], encoder.last_hidden_state)


def segmentation_head(model: torch.nn.Module, vision: VisionFeatures, detection: Detection, text: torch.Tensor,
                      text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel decoder, instance masks ``[K, N, h, w]`` and semantic map ``[K, 1, h, w]`` (logits)."""
    out = model.mask_decoder(decoder_queries=detection.queries, backbone_features=list(vision.maps),
                             encoder_hidden_states=detection.encoder_states, prompt_features=text,
                             prompt_mask=text_mask)
    return out.pred_masks, out.semantic_seg


# ---------------------------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------------------------

def _overlapping(windows: Sequence[Window], height: int, width: int) -> bool:
    """Whether any pixel is covered twice (the windows always cover the image)."""
    return sum(w.height * w.width for w in windows) > height * width


class SegEarthOV3:
    """SegEarth-OV3 on a loaded SAM 3: ``class_scores(rgb)`` gives ``[C, H, W]`` fused class scores."""

    def __init__(self, sam3: Sam3Bundle, vocabulary: Vocabulary,
                 settings: SegEarthOV3Settings = SegEarthOV3Settings()) -> None:
        if not 0 <= settings.bg_idx < len(vocabulary):
            raise UserError(f"bg_idx {settings.bg_idx} is not a class index of the {len(vocabulary)}-class vocabulary")
        self.sam3 = sam3
        self.vocabulary = vocabulary
        self.settings = settings
        self._text_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.pruned_prompts = 0   # prompt×view pairs whose segmentation head was skipped (for reports and tests)

    @classmethod
    def from_pretrained(cls, vocabulary: Vocabulary | str, source: str = DEFAULT_SAM3,
                        settings: SegEarthOV3Settings = SegEarthOV3Settings(),
                        device: str | torch.device = "cpu") -> "SegEarthOV3":
        """Load SAM 3 (hub id or local folder) and build the segmenter; ``vocabulary`` may be given in
        the ``"background;building,roof;road"`` syntax."""
        if isinstance(vocabulary, str):
            vocabulary = Vocabulary.parse(vocabulary)
        return cls(load_sam3(source, device=device), vocabulary, settings)

    def identity(self) -> dict:
        """What produced this segmenter's results: method, settings, vocabulary and model identity."""
        return {"method": "segearth-ov3", "settings": settings_identity(self.settings),
                "queries": list(self.vocabulary.queries), "query_to_class": list(self.vocabulary.query_to_class),
                "sam3": getattr(self.sam3, "identity", self.sam3.source)}

    @property
    def prob_thd(self) -> float:
        return self.settings.prob_thd

    @property
    def bg_idx(self) -> int:
        return self.settings.bg_idx

    @property
    def device(self) -> torch.device:
        return self.sam3.device

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.settings.prompt_chunk):
            yield slice(start, min(start + self.settings.prompt_chunk, n))

    @torch.no_grad()
    def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected per-token text features ``[Q, 32, D]`` and validity mask ``[Q, 32]``, once per vocabulary."""
        queries = tuple(self.vocabulary.queries)
        if queries not in self._text_cache:
            tokens = self.sam3.processor(text=list(queries), return_tensors="pt")
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            with autocast(self.device, self.settings.precision):
                feats = torch.cat([self.sam3.model.get_text_features(input_ids=ids[c], attention_mask=mask[c]).pooler_output
                                   for c in self._chunks(len(queries))])
            self._text_cache[queries] = (feats, mask.bool())
        return self._text_cache[queries]

    def _pixel_values(self, view: np.ndarray) -> torch.Tensor:
        from PIL import Image

        # The official code feeds the PIL RGB image to SAM 3's processor (1008², mean = std = 0.5).
        pixels = self.sam3.processor.image_processor(images=Image.fromarray(view), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.sam3.dtype)

    @torch.no_grad()
    def view_scores(self, view: np.ndarray, prune: bool = False) -> torch.Tensor:
        """Fused scores ``[Q, h, w]`` (one per prompt, on the model's device) for one ``h×w×3`` view."""
        s = self.settings
        size = (view.shape[0], view.shape[1])
        text, text_mask = self.text_embeddings()
        out = torch.zeros(len(text), *size, device=self.device)
        with autocast(self.device, s.precision):
            vision = encode_image(self.sam3.model, self._pixel_values(view))
            for chunk in self._chunks(len(text)):
                detection = detect(self.sam3.model, vision.expand(chunk.stop - chunk.start), text[chunk], text_mask[chunk])
                keep = torch.arange(chunk.stop - chunk.start, device=self.device)
                if prune:  # F_q <= p_q < prob_thd: the prompt can decide no label (module docstring)
                    keep = (detection.presence_logits.float().sigmoid() >= s.prob_thd).nonzero()[:, 0]
                    self.pruned_prompts += chunk.stop - chunk.start - len(keep)
                if len(keep) == 0 or not (s.use_instances or s.use_semantic):
                    continue  # nothing but zeros to fuse
                kept = detection.select(keep)
                masks, semantic = segmentation_head(self.sam3.model, vision.expand(len(keep)), kept,
                                                    text[chunk][keep], text_mask[chunk][keep])
                out[chunk.start + keep] = fuse_view(masks, kept.class_logits, kept.presence_logits, semantic, size,
                                                  s.confidence_threshold, s.use_instances, s.use_semantic, s.use_presence)
        return out

    def views(self, height: int, width: int) -> list[Window]:
        """The whole image, or the official sliding-window grid when the image exceeds the crop (§2.3)."""
        crop = self.settings.slide_crop
        if crop > 0 and (crop < height or crop < width):
            return plan_windows(height, width, crop, self.settings.slide_stride or crop)
        return [Window(0, height, 0, width)]

    def query_scores(self, rgb: np.ndarray) -> torch.Tensor:
        """Per-prompt scores ``[Q, H, W]`` (CPU, fp32) for an ``H×W×3`` uint8 RGB image."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        windows = self.views(height, width)
        s = self.settings
        prune = s.presence_pruning and s.use_presence and s.prob_thd > 0 and not _overlapping(windows, height, width)
        if len(windows) == 1:
            return self.view_scores(rgb, prune).float().cpu()
        total = WindowAccumulator(len(self.vocabulary.queries), height, width)
        for w in windows:
            total.add(w, self.view_scores(np.ascontiguousarray(rgb[w.y0:w.y1, w.x0:w.x1]), prune).cpu())
        return total.result()

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        """``[C, H, W]`` float32 class scores (CPU): each class the max over its synonym prompts."""
        return merge_synonyms(self.query_scores(rgb), self.vocabulary.query_to_class)
