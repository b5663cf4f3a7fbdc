"""SegEarth-OV3 change detection without training (docs/methods/segearth_ov3_change.md).

Version 2 of SegEarth-OV3 (arXiv 2512.08730v2; official code earth-insights/SegEarth-OV-3) detects
changes between two co-registered images from the segmentation's own per-prompt fused scores. A pixel
is changed when two verdicts agree:

1. the object verdict (:mod:`.verify`): it lies in a foreground blob of one date that the other date's
   dilated foreground covers too little;
2. the pixel verdict (:mod:`.energy`): its energy (score) × (score change) × (feature change) exceeds
   an Otsu threshold of its class's energy map, and at least 0.01.

The result is binary: 1 = change, 0 = no change; it carries no class and no direction.

Per date, the scores are exactly those of :class:`~frugalvl.segment.segearth_ov3.SegEarthOV3` (per
prompt, before the synonym max); presence pruning is refused, since it zeroes scores the energies use
(docs/methods/segearth_ov3_change.md#no-presence-pruning). When the two images differ in size, the
after date's scores are resized bilinearly to the before image's size, as the official code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.sam3 import encode_image, pixel_values
from ..precision import autocast
from ..segment.base import labels_from_scores, merge_synonyms
from ..segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from ..settings import settings_identity
from ..vocab import Vocabulary
from ..windows import Window
from .energy import class_energies, feature_change, pixel_verdict
from .settings import DEFAULT_PRESET, ChangeSettings
from .verify import object_verdict

METHOD = "segearth-ov3-change"


@dataclass
class ChangeResult:
    """What one pair gave (all ``H×W`` at the before image's size)."""

    change: np.ndarray  # uint8: 1 change, 0 no change
    objects: np.ndarray  # bool: the object verdict
    pixels: np.ndarray  # bool: the pixel verdict
    labels_before: np.ndarray  # int64 class labels of each date (prob_thd and bg_idx applied)
    labels_after: np.ndarray
    thresholds: dict[int, float]  # foreground class -> effective energy threshold


def default_segmentation_settings(**overrides: Any) -> SegEarthOV3Settings:
    """The per-date settings of the official LEVIR-CD configuration (then ``overrides``)."""
    return SegEarthOV3Settings.from_preset(DEFAULT_PRESET, **overrides)


class ChangeDetector:
    """SegEarth-OV3 change detection on a :class:`SegEarthOV3` segmenter: ``detect(before, after)``."""

    def __init__(self, segmenter: SegEarthOV3, settings: ChangeSettings = ChangeSettings()) -> None:
        if segmenter.settings.presence_pruning:
            raise UserError(
                "presence_pruning changes the scores that change detection compares (it is lossless only "
                "for labels): build the segmenter with presence_pruning=False"
            )
        if len(segmenter.vocabulary) < 2:
            raise UserError(
                "change detection needs a background class and at least one other class, e.g. 'background;building'"
            )
        self.segmenter = segmenter
        self.settings = settings

    @classmethod
    def from_pretrained(
        cls,
        vocabulary: Vocabulary | str = "background;building",
        source: str | None = None,
        segmentation: SegEarthOV3Settings | None = None,
        settings: ChangeSettings = ChangeSettings(),
        device: str | torch.device = "cpu",
    ) -> ChangeDetector:
        """Load SAM 3 (hub id or local folder; ``facebook/sam3`` by default) and build the detector.

        ``segmentation``: the per-date settings, by default the official LEVIR-CD ones
        (:func:`default_segmentation_settings`); ``settings``: the change step's.
        """
        from ..models.sam3 import DEFAULT_SAM3

        segmenter = SegEarthOV3.from_pretrained(
            vocabulary, source or DEFAULT_SAM3, segmentation or default_segmentation_settings(), device
        )
        return cls(segmenter, settings)

    @property
    def vocabulary(self) -> Vocabulary:
        return self.segmenter.vocabulary

    def identity(self) -> dict:
        """What produced a change map: the segmenter's identity plus the change settings."""
        return {**self.segmenter.identity(), "method": METHOD, "change": settings_identity(self.settings)}

    @torch.no_grad()
    def date(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One date's per-prompt scores ``[Q, H, W]`` (fp32) and stride-14 feature map ``[D, h, w]``.

        When the whole image is one view (every official change configuration), the feature map is taken
        from the image-encoder pass that scored it: the official code's second pass gives the same values
        (a test checks it), so this saves one pass per date. With sliding windows a second pass runs.
        """
        whole = Window(0, rgb.shape[0], 0, rgb.shape[1])
        kept: list[torch.Tensor] = []

        def keep(views: list[Window], vision: Any) -> None:
            if whole in views:
                kept.append(vision.maps[-1][views.index(whole)])

        scores = self.segmenter.query_scores(rgb, on_vision=keep)
        return scores, (kept[0] if kept else self.features(rgb))

    @torch.no_grad()
    def features(self, rgb: np.ndarray) -> torch.Tensor:
        """The whole image's stride-14 FPN map ``[D, h, w]`` (the last map SAM 3's detector uses: 72² at
        1008 px), from a second image-encoder pass as in the official code, in the precision SAM 3 ran at."""
        seg = self.segmenter
        with autocast(seg.device, seg.settings.precision):
            vision = encode_image(seg.sam3.model, pixel_values(seg.sam3, rgb))
        return vision.maps[-1][0]

    @torch.no_grad()
    def detect(self, before: np.ndarray, after: np.ndarray) -> ChangeResult:
        """The change map between two ``H×W×3`` uint8 RGB images (the after image is resized to the before
        image's size where they differ)."""
        scores_before, features_before = self.date(before)
        scores_after, features_after = self.date(after)
        return self.compare(scores_before, features_before, scores_after, features_after)

    @torch.no_grad()
    def compare(
        self,
        scores_before: torch.Tensor,
        features_before: torch.Tensor,
        scores_after: torch.Tensor,
        features_after: torch.Tensor,
    ) -> ChangeResult:
        """The change map from both dates' outputs of :meth:`date`, at the before date's size."""
        seg = self.segmenter.settings
        query_to_class = self.vocabulary.query_to_class
        size = (int(scores_before.shape[-2]), int(scores_before.shape[-1]))
        device = features_before.device
        scores_before = scores_before.to(device)
        scores_after = scores_after.to(device)
        if tuple(scores_after.shape[-2:]) != size:
            scores_after = F.interpolate(scores_after[None], size=size, mode="bilinear", align_corners=False)[0]

        labels = [
            labels_from_scores(merge_synonyms(s, query_to_class), seg.prob_thd, seg.bg_idx).cpu().numpy()
            for s in (scores_before, scores_after)
        ]
        objects = object_verdict(
            labels[0] > 0, labels[1] > 0, self.settings.instance_iou_threshold, self.settings.min_instance_area
        )
        dissimilarity = feature_change(features_before, features_after, size)
        energies = class_energies(scores_before, scores_after, dissimilarity, query_to_class, seg.bg_idx)
        pixels = pixel_verdict(energies)
        change = (objects & pixels.on).astype(np.uint8)
        return ChangeResult(change, objects, pixels.on, labels[0], labels[1], pixels.thresholds)
