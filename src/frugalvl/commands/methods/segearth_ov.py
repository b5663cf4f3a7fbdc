"""``--method segearth-ov``: options, models and segmenter for SegEarth-OV (CLIP + SimFeatUp)."""

from __future__ import annotations

import argparse
from typing import Any

from .._settings import add_settings_options, build_settings, given
from ..vocabulary import vocabulary_from_cli

SHARED = ("prob_thd", "bg_idx", "slide_crop", "slide_stride")  # options common to all methods (segment.py)


def _settings_class() -> Any:
    from ...segment.segearth_ov import SegEarthOVSettings

    return SegEarthOVSettings


def add_arguments(group: Any) -> None:
    group.add_argument(
        "--clip",
        default="ViT-B-16",
        help="CLIP: open_clip name[:tag] (default ViT-B-16, OpenAI weights), hf-hub:ORG/REPO, "
        "local-dir:PATH, an OpenAI-format .pt file, or ARCH:FILE",
    )
    group.add_argument(
        "--upsampler",
        default=None,
        help="SimFeatUp checkpoint: a file, or 'official' for the released JBU-One (downloaded "
        "once); default: bilinear",
    )
    add_settings_options(group, _settings_class(), skip=SHARED)


def settings_from_cli(args: argparse.Namespace) -> Any:
    """Dataclass defaults < the preset's thresholds < the command line."""
    from ...presets import method_settings

    cls = _settings_class()
    values: dict[str, Any] = {}
    if args.preset:
        table = method_settings(args.preset, "segearth_ov", vocabulary_from_cli(args, strip="newline"))
        values.update({k: table[k] for k in ("prob_thd", "bg_idx", "cls_lambda") if k in table})
    values.update(given(args, cls))
    return build_settings(cls, values)


def load_models(args: argparse.Namespace) -> tuple[Any, Any]:
    """The CLIP and the upsampler named on the command line (the upsampler first: it fails faster)."""
    from ...devices import resolve_device
    from ...models.clip import load_clip
    from ...models.upsampler import resolve_upsampler

    upsampler = resolve_upsampler(args.upsampler)
    return load_clip(args.clip, device=resolve_device(args.device)), upsampler


def segmenter_from_cli(args: argparse.Namespace, models: tuple[Any, Any] | None = None) -> Any:
    """A segmenter for the command line's vocabulary and settings; ``models`` from :func:`load_models`
    lets several segmenters (e.g. one per dataset) share one loaded model."""
    from ...presets import preset_vocabulary
    from ...segment.segearth_ov import SegEarthOV

    settings = settings_from_cli(args)
    vocabulary = vocabulary_from_cli(args, strip="newline") or preset_vocabulary(args.preset, "segearth_ov")
    clip, upsampler = models or load_models(args)
    return SegEarthOV(clip, vocabulary, upsampler, settings)


def model_identity(args: argparse.Namespace) -> dict[str, Any]:
    """The weights the command line names, without loading them (keys evaluation caches)."""
    from ...identity import weights_identity

    return {"clip": weights_identity(args.clip), "upsampler": weights_identity(args.upsampler)}
