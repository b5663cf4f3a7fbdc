"""SegEarth-OV: training-free open-vocabulary segmentation of remote-sensing images with CLIP.

Li et al., "SegEarth-OV: Towards Training-Free Open-Vocabulary Segmentation for Remote Sensing
Images", CVPR 2025 (arXiv 2410.01768). Read next to ``spec/segearth_ov.md`` §1; the default
settings reproduce the official code (likyoo/SegEarth-OV):

1. resize the image so its long side is 448 (bilinear, OpenCV as mmcv), CLIP-normalise (§1.1);
2. cut 224×224 windows at stride 112 (§1.6), all windows of an image in one batch;
3. per window: CLIP ViT with a replaced last block (:mod:`.attention`, §1.3), patch features
   upsampled ×16 by SimFeatUp (:mod:`frugalvl.models.jbu`, §1.4) or bilinearly, cosine logits against
   template-averaged text embeddings (§1.2), minus 0.3× the [CLS] logits (global bias
   alleviation, §1.5);
4. average overlapping windows, resize to the input size, softmax(50·logits) over all queries,
   max over each class's synonyms (§1.7).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.clip import OPENAI_MEAN, ClipModel
from ..vocab import Vocabulary, templates
from ..windows import WindowAccumulator, plan_windows
from .attention import MODES
from .base import merge_synonyms
from .dense_clip import dense_tokens

# The official configs normalise with these (CLIP's mean/std ×255, as written in cfg files).
OFFICIAL_MEAN = (122.771, 116.746, 104.094)
OFFICIAL_STD = (68.501, 66.632, 70.323)


@dataclass(frozen=True)
class SegEarthOVSettings:
    """SegEarth-OV settings; the defaults are the official ones (spec §1, base_config.py)."""

    attention: str = "segearth"      # last-block mode, see attention.MODES
    residual: bool = False           # keep the last block's residual and FFN (official: dropped)
    cls_lambda: float = -0.3         # global bias alleviation weight λ
    logit_scale: float = 50.0
    prob_thd: float = 0.0
    bg_idx: int = 0
    long_side: int | None = 448      # resize the long side to this; None keeps the native size
    slide_crop: int = 224
    slide_stride: int = 112
    templates: str = "imagenet80"
    window_batch: int | None = None  # windows per forward pass; None: 16 on a GPU, 1 on the CPU (faster there)
    commute_upsampler: bool = False  # exact reordering of the upsampler's last conv (§2.4)


class SegEarthOV:
    """A SegEarth-OV segmenter, built once and called per image (see :class:`~.base.Segmenter`)."""

    def __init__(self, clip: ClipModel, vocabulary: Vocabulary, upsampler: nn.Module | None = None,
                 settings: SegEarthOVSettings = SegEarthOVSettings()) -> None:
        if settings.attention not in MODES:
            raise UserError(f"unknown attention mode {settings.attention!r}: choose one of {', '.join(MODES)}")
        self.clip = clip
        self.vocabulary = vocabulary
        self.settings = settings
        self.upsampler = upsampler.to(clip.device).eval() if upsampler is not None else None
        if self.upsampler is not None:
            feat_dim = self.upsampler.fixup_proj[1].weight.shape[0]
            if feat_dim != clip.embed_dim:
                raise UserError(f"the upsampler works on {feat_dim}-d features but this CLIP gives {clip.embed_dim}-d ones: "
                                "train one for this CLIP with 'frugalvl train-upsampler' or drop --upsampler")
        self.query_features = self.text_classifier()
        self.query_to_class = vocabulary.query_to_class
        official = tuple(round(m, 4) for m in clip.mean) == tuple(round(m, 4) for m in OPENAI_MEAN)
        mean = OFFICIAL_MEAN if official else tuple(255 * m for m in clip.mean)
        std = OFFICIAL_STD if official else tuple(255 * s for s in clip.std)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def prob_thd(self) -> float:
        return self.settings.prob_thd

    @property
    def bg_idx(self) -> int:
        return self.settings.bg_idx

    # -- text side (§1.2) -----------------------------------------------------------------------

    def text_classifier(self) -> torch.Tensor:
        """``[Q, D]``: per query, the re-normalised mean of its normalised template embeddings.

        Cached on the loaded CLIP per (queries, templates), so segmenters built again for the same
        vocabulary (e.g. one per dataset in an evaluation) do not re-encode.
        """
        key = ("segearth_ov", tuple(self.vocabulary.queries), self.settings.templates)
        if key not in self.clip.text_cache:
            fills = templates(self.settings.templates)
            texts = [t(q) for q in self.vocabulary.queries for t in fills]
            emb = self.clip.encode_text(texts).view(len(self.vocabulary.queries), len(fills), -1)
            emb = emb.mean(dim=1)
            self.clip.text_cache[key] = emb / emb.norm(dim=-1, keepdim=True)
        return self.clip.text_cache[key]

    # -- image side -----------------------------------------------------------------------------

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """Resize (long side → 448, OpenCV bilinear as mmcv) and normalise: ``[1, 3, h, w]`` float32."""
        h, w = rgb.shape[:2]
        if self.settings.long_side is not None:
            scale = self.settings.long_side / max(h, w)
            size = (int(w * scale + 0.5), int(h * scale + 0.5))  # mmcv's rounding
            if size != (w, h):
                import cv2

                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        return (x - self._mean) / self._std

    def encode_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS ``[B, D]`` and patch features ``[B, D, h/16, w/16]`` with the replaced last block (§1.3)."""
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
        return up(patches.to(guidance.dtype), guidance)

    def window_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """``[B, Q, h, w]`` logits for a batch of normalised crops (the official ``forward_feature``)."""
        cls, patches = self.encode_windows(crops)
        text = self.query_features.to(patches.dtype)
        feats = self._upsample(patches, crops.to(patches.dtype))
        feats = feats / feats.norm(dim=1, keepdim=True)
        logits = torch.einsum("bdhw,qd->bqhw", feats, text.to(feats.dtype))
        if self.settings.cls_lambda != 0:
            cls = cls / cls.norm(dim=-1, keepdim=True)
            logits = logits + self.settings.cls_lambda * (cls @ text.T).to(logits.dtype)[:, :, None, None]
        if logits.shape[-2:] != crops.shape[-2:]:  # no upsampler: bilinear from the patch grid
            logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def query_logits(self, rgb: np.ndarray) -> torch.Tensor:
        """``[Q, H, W]`` window-averaged logits at the input size (the official ``forward_slide``)."""
        s = self.settings
        device, dtype = self.clip.device, self.clip.dtype
        image = self.preprocess(rgb).to(device=device, dtype=dtype)
        _, _, h, w = image.shape
        windows = plan_windows(h, w, s.slide_crop, s.slide_stride)
        acc = WindowAccumulator(len(self.vocabulary.queries), h, w, device=device, dtype=dtype)
        batch = s.window_batch or (16 if device.type == "cuda" else 1)
        for start in range(0, len(windows), max(1, batch)):
            group = windows[start:start + max(1, batch)]
            crops = torch.cat([image[:, :, win.y0:win.y1, win.x0:win.x1] for win in group])
            crops, crop_back = _pad_to_patch(crops, self.clip.patch_size)
            logits = crop_back(self.window_logits(crops))
            for win, values in zip(group, logits):
                acc.add(win, values)
        logits = acc.result()[None]
        logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        return logits[0]

    @torch.no_grad()
    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        """``[C, H, W]`` class probabilities: softmax over all queries, then max over synonyms (§1.7)."""
        logits = self.query_logits(rgb)
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
    return padded, lambda t: t[..., top:top + h, left:left + w]


# ---------------------------------------------------------------------------------------------
# CLI glue (frugalvl segment / evaluate --method segearth-ov)
# ---------------------------------------------------------------------------------------------

def add_cli_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--clip", default="ViT-B-16",
                       help="CLIP: open_clip name[:tag] (default ViT-B-16, OpenAI weights), hf-hub:ORG/REPO, an OpenAI-format .pt file, or ARCH:FILE")
    group.add_argument("--upsampler", default=None,
                       help="SimFeatUp checkpoint: a file, or 'official' for the released JBU-One (downloaded once); default: bilinear")
    group.add_argument("--attention", default=None, choices=MODES, help="last-block attention mode (default segearth)")
    group.add_argument("--keep-residual", action="store_true", help="keep the last block's residual and FFN (official: dropped)")
    group.add_argument("--cls-lambda", type=float, help="global bias alleviation λ (default −0.3, or the preset's)")
    group.add_argument("--logit-scale", type=float, default=50.0, help="softmax temperature on the cosine logits (default 50)")
    group.add_argument("--long-side", default="448", help="resize the long side to this many pixels, or 'native' to keep the size (default 448)")
    group.add_argument("--templates", default="imagenet80", help="prompt templates: imagenet80 (default), photo or none")
    group.add_argument("--window-batch", type=int, help="windows per forward pass (default 16 on a GPU, 1 on the CPU)")
    group.add_argument("--commute-upsampler", action="store_true", help="apply the upsampler's final 1×1 conv at low resolution (exact up to rounding)")


def settings_from_cli(args: argparse.Namespace) -> SegEarthOVSettings:
    from ..presets import method_settings

    s = SegEarthOVSettings()
    if args.preset:
        p = method_settings(args.preset, "segearth_ov")
        s = replace(s, prob_thd=p["prob_thd"], bg_idx=p["bg_idx"], cls_lambda=p["cls_lambda"])
    updates = {k: v for k, v in dict(attention=args.attention, cls_lambda=args.cls_lambda, prob_thd=args.prob_thd,
                                     bg_idx=args.bg_idx, slide_crop=args.slide_crop, slide_stride=args.slide_stride).items()
               if v is not None}
    long_side = None if str(args.long_side).lower() == "native" else int(args.long_side)
    return replace(s, **updates, residual=args.keep_residual, logit_scale=args.logit_scale, long_side=long_side,
                   templates=args.templates, window_batch=args.window_batch, commute_upsampler=args.commute_upsampler)


def load_models(args: argparse.Namespace) -> tuple[ClipModel, nn.Module | None]:
    """The CLIP and the upsampler named on the command line (the upsampler first: it fails faster)."""
    from ..devices import resolve_device
    from ..models.clip import load_clip
    from ..models.upsampler import resolve_upsampler

    upsampler = resolve_upsampler(args.upsampler)
    return load_clip(args.clip, device=resolve_device(args.device)), upsampler


def segmenter_from_cli(args: argparse.Namespace, models: tuple[ClipModel, nn.Module | None] | None = None) -> SegEarthOV:
    """A segmenter for the command line's vocabulary and settings; ``models`` from :func:`load_models`
    lets several segmenters (e.g. one per dataset) share one loaded model."""
    from ..commands.segment import vocabulary_from_cli
    from ..presets import preset_vocabulary

    settings = settings_from_cli(args)
    vocabulary = vocabulary_from_cli(args, strip="newline") or preset_vocabulary(args.preset, "segearth_ov")
    if not 0 <= settings.bg_idx < len(vocabulary):
        raise UserError(f"--bg-idx {settings.bg_idx} is not a class index: the vocabulary has {len(vocabulary)} classes")
    clip, upsampler = models or load_models(args)
    return SegEarthOV(clip, vocabulary, upsampler, settings)
