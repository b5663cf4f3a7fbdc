"""``--method segearth-ov3``: options, model and segmenter for SegEarth-OV3 (SAM 3)."""

from __future__ import annotations

import argparse
from typing import Any

from .._settings import add_settings_options, build_settings, given
from ..vocabulary import vocabulary_from_cli
from .segearth_ov import SHARED

DEFAULT_SAM3 = "facebook/sam3"  # the hub id the loader uses by default (frugalvl.models.sam3)


def _settings_class() -> Any:
    from ...segment.segearth_ov3 import SegEarthOV3Settings

    return SegEarthOV3Settings


def add_arguments(group: Any) -> None:
    group.add_argument(
        "--sam3",
        default=None,
        metavar="ID|PATH",
        help=f"SAM 3 weights: a hub id (default {DEFAULT_SAM3}, gated: run `hf auth login`) or a local folder",
    )
    add_settings_options(group, _settings_class(), skip=SHARED)


def settings_from_cli(args: argparse.Namespace) -> Any:
    """Dataclass defaults < the preset's ``[segearth_ov3]`` table < the command line."""
    from ...presets import method_settings

    cls = _settings_class()
    known = set(cls.__dataclass_fields__)
    values: dict[str, Any] = {}
    if args.preset:
        table = method_settings(args.preset, "segearth_ov3", vocabulary_from_cli(args, strip="whitespace"))
        values.update({k: v for k, v in table.items() if k in known})
    values.update(given(args, cls))
    return build_settings(cls, values)


def load_models(args: argparse.Namespace) -> Any:
    """The SAM 3 named on the command line (hub id or local folder)."""
    from ...devices import resolve_device
    from ...models.sam3 import DEFAULT_SAM3 as default
    from ...models.sam3 import load_sam3

    return load_sam3(args.sam3 or default, device=resolve_device(args.device))


def segmenter_from_cli(args: argparse.Namespace, models: Any = None) -> Any:
    """A segmenter for the command line's vocabulary and settings; ``models`` from :func:`load_models`
    lets several segmenters (e.g. one per dataset) share one loaded SAM 3."""
    from ...presets import preset_vocabulary
    from ...segment.segearth_ov3 import SegEarthOV3

    vocabulary = vocabulary_from_cli(args, strip="whitespace") or preset_vocabulary(args.preset, "segearth_ov3")
    return SegEarthOV3(models or load_models(args), vocabulary, settings_from_cli(args))


def model_identity(args: argparse.Namespace) -> dict[str, Any]:
    """The weights the command line names, without loading them (keys evaluation caches)."""
    from ...identity import weights_identity

    return {"sam3": weights_identity(args.sam3 or DEFAULT_SAM3)}
