"""``frugalvl segment``: label maps for images and GeoTIFFs, with any segmentation method."""

from __future__ import annotations

import argparse
import importlib

from ..errors import UserError
from ..presets import list_presets
from ..raster import find_images
from ..vocab import Vocabulary

# method name -> module; each module offers add_cli_arguments(group) and segmenter_from_cli(args)
METHODS = {
    "segearth-ov": "frugalvl.segment.segearth_ov",
    "segearth-ov3": "frugalvl.segment.segearth_ov3",
}


def method_module(name: str):
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def add_vocabulary_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classes")
    group.add_argument("--preset", help=f"dataset preset: its classes and the official thresholds ({', '.join(list_presets())})")
    group.add_argument("--classes", help='classes separated by ";", synonyms by ",": "background;building,roof,house;road"')
    group.add_argument("--classes-file", help="official class file: one class per line, synonyms comma separated")
    add_override_arguments(group)


def add_override_arguments(group) -> None:
    """Options that override a preset's (or the method's) thresholds and windows; shared with evaluate."""
    group.add_argument("--prob-thd", type=float, help="pixels whose best class score is below this get --bg-idx (preset's or 0)")
    group.add_argument("--bg-idx", type=int, help="class index given to low-confidence pixels (preset's or 0)")
    group.add_argument("--slide-crop", type=int, help="sliding-window size in pixels (default: the method's and preset's)")
    group.add_argument("--slide-stride", type=int, help="sliding-window stride in pixels (default: the method's and preset's)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="segearth-ov", choices=sorted(METHODS), help="segmentation method (default segearth-ov)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    for name in METHODS:
        try:
            module = importlib.import_module(METHODS[name])
        except ModuleNotFoundError as exc:
            if exc.name == METHODS[name]:
                continue
            raise
        module.add_cli_arguments(parser.add_argument_group(f"{name} options"))


def vocabulary_from_cli(args: argparse.Namespace, strip: str) -> Vocabulary | None:
    """The user's vocabulary, or None when a preset provides it."""
    given = [x for x in (args.classes, args.classes_file) if x]
    if len(given) > 1:
        raise UserError("give either --classes or --classes-file, not both")
    if args.classes_file:
        return Vocabulary.from_file(args.classes_file, strip=strip)
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if not args.preset:
        raise UserError("no classes given: use --classes 'background;building;road', --classes-file FILE or --preset NAME")
    return None


def register(subparsers) -> None:
    p = subparsers.add_parser("segment", help="segment images or GeoTIFFs into named classes",
                              description="Open-vocabulary segmentation of images and GeoTIFFs, no training needed.")
    p.add_argument("inputs", nargs="+", help="PNG, JPEG, TIFF or GeoTIFF files, or folders of them")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    add_vocabulary_arguments(p)
    add_model_arguments(p)
    io = p.add_argument_group("input and output")
    io.add_argument("--save-probs", action="store_true", help="also write <stem>_probs.npy, float32 C×H×W class scores")
    io.add_argument("--bands", help="1-based band numbers to use as RGB for TIFF inputs, e.g. 4,3,2 (default: first three)")
    io.add_argument("--stretch", default="percentile", choices=["percentile", "minmax"], help="scaling of non-8-bit bands to 0..255")
    io.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist (default: skip them)")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_bands(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise UserError(f"--bands {text!r} is not a comma-separated list of band numbers, e.g. 4,3,2") from None


def run(args: argparse.Namespace) -> int:
    from ..segment.pipeline import segment_files

    paths = find_images(args.inputs)
    segmenter = method_module(args.method).segmenter_from_cli(args)
    summary = segment_files(segmenter, paths, args.outdir, save_probs=args.save_probs, overwrite=args.overwrite,
                            bands=parse_bands(args.bands), stretch=args.stretch, progress=not args.no_progress)
    print(summary.table())
    if summary.failed:
        for path, why in summary.failed:
            print(f"frugalvl: failed: {why}")
        return 2
    return 0
