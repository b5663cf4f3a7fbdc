"""SimFeatUp training settings and their checks (docs/methods/simfeatup.md#training, ``configs/upsampler_aid.yaml``).

No torch here: the command line builds its options from these names without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..precision import PRECISIONS
from ..settings import FieldError, check_choice, option

# "skip" drops the last ViT block (the official featurizer); the others are the attention modes of
# frugalvl.models.attention (MODES), which run the replaced last block as at inference.
LAST_BLOCKS = ("skip", "segearth", "clearclip", "sclip", "maskclip", "vanilla")
UPSAMPLER_TYPES = ("jbu_one", "jbu_stack")
NORMALISATIONS = ("imagenet", "clip")


def _whole_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} is negative: give 0 or more")
    return value


@dataclass(frozen=True)
class UpsamplerTrainSettings:
    """SimFeatUp training settings; the defaults are the official ones (#training, upsampler_aid.yaml).

    Each field documents itself (:func:`frugalvl.settings.option`); ``frugalvl train-upsampler``
    builds its options from these fields, so a default is written only here.
    """

    steps: int | None = option(
        None, "optimiser steps; none: one pass over the images (the official 1 epoch)", parse=int
    )
    batch_size: int = option(4, "crops per step and process (official: 4 per GPU, on 2 GPUs)")
    lr: float = option(1e-3, "NAdam learning rate")
    crop_size: int = option(
        224, "random crop size in pixels, a multiple of the CLIP patch size (reflect-padded when an image is smaller)"
    )
    n_jitters: int = option(5, "random views per step", flag="--jitters")
    jitter_pad: int = option(20, "reflect padding before zoom and crop", cli=False)
    max_zoom: float = option(2.0, "largest zoom of a view", cli=False)
    zoom_prob: float = option(0.5, "probability that a view is zoomed", cli=False)
    flip_prob: float = option(0.5, "probability that a view is flipped", cli=False)
    projection_dim: int | None = option(
        30, "random Gaussian projection width of L_rec (0 compares all channels)", parse=_whole_number
    )
    img_weight: float = option(0.1, "weight γ of the image-reconstruction loss L_img (rec_img_weight)")
    early_clip_steps: int = option(10, "clip the gradient norm for this many first steps...", cli=False)
    early_clip_norm: float = option(1e-4, "...to this norm", cli=False)
    upsampler: str = option(
        "jbu_one", "JBU-One or FeatUp's four-stage JBU-Stack", flag="--upsampler-type", choices=UPSAMPLER_TYPES
    )
    radius: int | None = option(
        None, "JBU kernel radius; none: the layout's own (5 for JBU-One, 3 for JBU-Stack)", parse=int
    )
    last_block: str = option(
        "skip",
        "features to learn from: 'skip' drops the last ViT block as the official "
        "training; 'segearth' runs SegEarth-OV's modified last block, the features the "
        "upsampler meets at inference",
        choices=LAST_BLOCKS,
    )
    normalisation: str = option(
        "imagenet",
        "image normalisation: imagenet as the official training, or clip as SegEarth-OV inference",
        choices=NORMALISATIONS,
    )
    checkpoint_every: int = option(100, "steps between resumable checkpoints")
    keep_checkpoints: int = option(3, "resumable checkpoints kept; 0 keeps all")
    precision: str = option(
        "auto", "mixed precision: auto uses bf16 (else fp16) autocast on CUDA and fp32 on the CPU", choices=PRECISIONS
    )
    seed: int = option(0, "seed of the initial weights, crops, views and dropout")
    workers: int = option(2, "threads decoding images ahead of the training step")

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_choices(self)


# Settings that may change between a run and its resumption without changing what is learnt.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "workers", "precision"}


def default_radius(upsampler: str) -> int:
    """The JBU kernel radius of each layout: 5 (11×11) for JBU-One, 3 (7×7) for JBU-Stack
    (docs/methods/simfeatup.md#jbu-stack)."""
    return 5 if upsampler == "jbu_one" else 3


def check_settings(s: UpsamplerTrainSettings, patch_size: int | None = None) -> None:
    """Raise a one-line :class:`~frugalvl.settings.FieldError` for settings that cannot train; the values
    alone are checked when the settings are made, the crop against the CLIP once its patch size is known."""
    _check_ranges(s)
    _check_choices(s)
    if patch_size is not None:
        _check_crop(s, patch_size)


def _check_ranges(s: UpsamplerTrainSettings) -> None:
    for name in ("batch_size", "n_jitters", "crop_size", "checkpoint_every"):
        if getattr(s, name) < 1:
            raise FieldError(name, f"{getattr(s, name)}: give a positive number", UpsamplerTrainSettings)
    if s.steps is not None and s.steps < 1:
        raise FieldError("steps", f"{s.steps}: give a positive number of steps", UpsamplerTrainSettings)
    if not s.lr > 0:
        raise FieldError("lr", f"{s.lr}: the learning rate must be > 0", UpsamplerTrainSettings)
    if not s.img_weight >= 0:
        raise FieldError("img_weight", f"{s.img_weight}: the weight must be ≥ 0", UpsamplerTrainSettings)
    if not s.max_zoom >= 1:
        raise FieldError("max_zoom", f"{s.max_zoom}: the zoom must be ≥ 1", UpsamplerTrainSettings)
    if s.jitter_pad < 0:
        raise FieldError("jitter_pad", f"{s.jitter_pad}: the pad must be ≥ 0", UpsamplerTrainSettings)
    if s.keep_checkpoints < 0 or s.workers < 0:
        name = "keep_checkpoints" if s.keep_checkpoints < 0 else "workers"
        raise FieldError(name, f"{getattr(s, name)}: give 0 or more", UpsamplerTrainSettings)
    if s.projection_dim is not None and s.projection_dim < 1:
        raise FieldError(
            "projection_dim",
            f"{s.projection_dim}: give a positive number (none: no projection)",
            UpsamplerTrainSettings,
        )
    if s.radius is not None and s.radius < 1:
        raise FieldError("radius", f"{s.radius}: give a radius of at least 1", UpsamplerTrainSettings)


def _check_choices(s: UpsamplerTrainSettings) -> None:
    for name, choices in (
        ("last_block", LAST_BLOCKS),
        ("normalisation", NORMALISATIONS),
        ("upsampler", UPSAMPLER_TYPES),
        ("precision", PRECISIONS),
    ):
        check_choice(s, name, choices)


def _check_crop(s: UpsamplerTrainSettings, patch_size: int) -> None:
    if s.crop_size % patch_size:
        raise FieldError(
            "crop_size", f"{s.crop_size} is not a multiple of the CLIP patch size {patch_size}", UpsamplerTrainSettings
        )
    radius = s.radius if s.radius is not None else default_radius(s.upsampler)
    if 2 * (s.crop_size // patch_size) <= radius:
        raise FieldError(
            "crop_size",
            f"{s.crop_size} is too small for a radius-{radius} JBU: its first stage needs "
            f"more than {radius} pixels (use a crop of at least {(radius // 2 + 1) * patch_size})",
            UpsamplerTrainSettings,
        )


def settings_with(base: UpsamplerTrainSettings, **changes: Any) -> UpsamplerTrainSettings:
    """``base`` with the given fields replaced; ``None`` values leave a field as it is."""
    names = {f.name for f in fields(base)}
    unknown = set(changes) - names
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    return replace(base, **{k: v for k, v in changes.items() if v is not None})
