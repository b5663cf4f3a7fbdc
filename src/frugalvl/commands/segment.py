"""``frugalvl segment``: label maps for images and GeoTIFFs, with any segmentation method."""

from __future__ import annotations

import argparse

from ..errors import UserError
from . import methods
from .methods import METHODS, method_module
from .vocabulary import add_override_arguments, add_vocabulary_arguments, vocabulary_from_cli

__all__ = ["METHODS", "method_module", "add_model_arguments", "add_override_arguments", "add_vocabulary_arguments",
           "vocabulary_from_cli", "register"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="segearth-ov", choices=sorted(METHODS),
                        help="segmentation method (default segearth-ov)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    for name in METHODS:
        methods.method_module(name).add_arguments(parser.add_argument_group(f"{name} options"))


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
    from ..raster import find_images
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
