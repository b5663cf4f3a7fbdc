"""``frugalvl change``: SegEarth-OV3 change detection between two dates (docs/methods/segearth_ov3_change.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError
from ._engine import add_engine_arguments, engine_options
from ._progress import add_progress_arguments, reporter_from_cli
from ._settings import add_settings_options, build_settings, given
from .vocabulary import add_override_arguments, vocabulary_from_cli

DEFAULT_PRESET = "levir_cd"  # the official LEVIR-CD configuration (frugalvl.change.settings.DEFAULT_PRESET)
METHODS = ("segearth-ov3",)
# per-date settings shared with segment (their options come from add_override_arguments), and presence
# pruning, which change detection refuses
_SKIP = ("prob_thd", "bg_idx", "slide_crop", "slide_stride", "presence_pruning")


def register(subparsers) -> None:
    from ..change.settings import ChangeOutputSettings, ChangeSettings
    from ..presets import list_presets
    from ..segment.segearth_ov3 import SegEarthOV3Settings

    p = subparsers.add_parser(
        "change",
        help="change maps between two dates of the same place (SegEarth-OV3, no training)",
        description="Open-vocabulary change detection (SegEarth-OV3 v2): 1 = change, 0 = no change. "
        "Defaults: the official LEVIR-CD configuration.",
    )
    p.add_argument("before", help="the first date: an image, or a folder of images")
    p.add_argument("after", help="the second date: an image, or a folder holding the same file names")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--method", default="segearth-ov3", choices=METHODS, help="change method (default segearth-ov3)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    classes = p.add_argument_group("classes")
    classes.add_argument(
        "--preset",
        help=f"dataset preset: its classes and official settings (default {DEFAULT_PRESET}; "
        f"{', '.join(list_presets())})",
    )
    classes.add_argument("--classes", help='classes separated by ";", synonyms by ",": "background;building,house"')
    classes.add_argument("--classes-file", help="official class file: one class per line, synonyms comma separated")
    add_override_arguments(classes)
    model = p.add_argument_group("segearth-ov3 options")
    model.add_argument(
        "--sam3", default=None, metavar="ID|PATH", help="SAM 3 weights: a hub id (default facebook/sam3) or a folder"
    )
    add_settings_options(model, SegEarthOV3Settings, skip=_SKIP)
    add_settings_options(p.add_argument_group("change step"), ChangeSettings)
    io = p.add_argument_group("input and output")
    add_settings_options(io, ChangeOutputSettings)
    io.add_argument("--bands", help="1-based band numbers to use as RGB for TIFF inputs, e.g. 4,3,2")
    io.add_argument(
        "--stretch", default="percentile", choices=["percentile", "minmax"], help="scaling of non-8-bit bands"
    )
    io.add_argument("--overwrite", action="store_true", help="redo pairs whose outputs already exist")
    add_progress_arguments(io)
    add_engine_arguments(p)
    p.set_defaults(func=run)


def _preset_table(args: argparse.Namespace, vocabulary: Any) -> dict[str, Any]:
    from ..presets import method_settings

    return method_settings(args.preset or DEFAULT_PRESET, "segearth_ov3", vocabulary)


def settings_from_cli(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Vocabulary, per-date settings and change settings: dataclass defaults < preset (LEVIR-CD when none is
    named) < the command line."""
    from ..change.settings import ChangeSettings
    from ..presets import preset_vocabulary
    from ..segment.segearth_ov3 import SegEarthOV3Settings

    own = vocabulary_from_cli(args, strip="whitespace") if (args.classes or args.classes_file) else None
    vocabulary = own or preset_vocabulary(args.preset or DEFAULT_PRESET, "segearth_ov3")
    table = _preset_table(args, own)
    result = []
    for cls in (SegEarthOV3Settings, ChangeSettings):
        values = {k: v for k, v in table.items() if k in cls.__dataclass_fields__}
        values.update(given(args, cls))
        result.append(build_settings(cls, values, leading_field=True))
    return vocabulary, result[0], result[1]


def detector_from_cli(args: argparse.Namespace, sam3: Any = None) -> Any:
    """A change detector for the command line's classes and settings; ``sam3`` shares a loaded model."""
    from ..change import ChangeDetector
    from ..devices import resolve_device
    from ..models.sam3 import DEFAULT_SAM3, load_sam3
    from ..segment.segearth_ov3 import SegEarthOV3

    vocabulary, segmentation, change = settings_from_cli(args)
    if sam3 is None:
        sam3 = load_sam3(args.sam3 or DEFAULT_SAM3, device=resolve_device(args.device))
    return ChangeDetector(SegEarthOV3(sam3, vocabulary, segmentation), change)


class DetectorFactory:
    """Builds the command line's change detector in a Ray worker (picklable: the Namespace travels)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})

    def __call__(self) -> Any:
        return detector_from_cli(self.args)


def run(args: argparse.Namespace) -> int:
    from ..change.pairs import find_pairs
    from ..change.run import check_pairs, writing_changes
    from ..change.settings import ChangeOutputSettings
    from ..fileio import check_writable_dir
    from .segment import parse_bands

    pairs = find_pairs(args.before, args.after)
    bands = parse_bands(args.bands)
    settings_from_cli(args)  # a bad value stops the run before anything is read or written
    output = build_settings(ChangeOutputSettings, given(args, ChangeOutputSettings), leading_field=True)
    if output.semantic:
        from ..change.semantic import check_classes

        check_classes(len(settings_from_cli(args)[0]))
    reporter = reporter_from_cli(args)
    check_pairs(pairs)
    check_writable_dir(args.outdir, option="-o")  # before any model loads
    with writing_changes(pairs, args.outdir, output, args.overwrite):  # checked and locked before any model loads
        summary = _detect(args, pairs, bands, output, reporter)
    print(summary.table())
    if summary.failed:
        for _pair, why in summary.failed:
            print(f"frugalvl: failed: {why}")
        return 2
    if not pairs:
        raise UserError("no image pairs to compare")
    return 0


def _detect(args: argparse.Namespace, pairs: Any, bands: Any, output: Any, reporter: Any) -> Any:
    from ..change.run import detect_files
    from ..progress import NullReporter, reporting

    if getattr(args, "engine", "local") == "ray":
        from ..distributed.ray_change import detect_files_ray

        summary = detect_files_ray(
            DetectorFactory(args), pairs, args.outdir, args.overwrite, bands, args.stretch, output,
            progress=not isinstance(reporter, NullReporter), **engine_options(args),
        )  # fmt: skip
    else:
        with reporting(reporter):  # "loading SAM 3 ...": no silent minutes
            detector = detector_from_cli(args)
        summary = detect_files(detector, pairs, args.outdir, args.overwrite, bands, args.stretch, reporter, output)
    return summary


def evaluation_predictor(args: argparse.Namespace, spec: Any, root: Any) -> tuple[Any, dict[str, Any]]:
    """``frugalvl evaluate`` on a change dataset: a predictor running the detector with the dataset preset's
    settings (the command line's overrides on top), and the identity that keys its cache."""
    import copy

    from ..evaluate.change import DetectorPredictor, check_second_dates
    from ..identity import weights_identity
    from ..models.sam3 import DEFAULT_SAM3
    from ..settings import settings_identity

    if args.method not in METHODS:
        raise UserError(f"{spec.name} is a change-detection benchmark: evaluate it with --method segearth-ov3")
    check_second_dates(spec, root)
    method_args = copy.copy(args)
    method_args.preset, method_args.classes, method_args.classes_file = spec.name, None, None
    _, segmentation, change = settings_from_cli(method_args)
    identity = {
        "method": "segearth-ov3-change",
        "settings": settings_identity(segmentation),
        "change": settings_identity(change),
        "preset": spec.name,
        "models": {"sam3": weights_identity(args.sam3 or DEFAULT_SAM3)},
    }
    return DetectorPredictor(lambda: detector_from_cli(method_args), spec, root, args.method), identity
