"""``frugalvl segment``: label maps for images and GeoTIFFs, with any segmentation method."""

from __future__ import annotations

import argparse

from ..errors import UserError
from . import methods
from ._engine import SegmenterFactory, add_engine_arguments, engine_options
from .methods import METHODS, method_module
from .vocabulary import add_override_arguments, add_vocabulary_arguments, vocabulary_from_cli

__all__ = [
    "METHODS",
    "method_module",
    "add_model_arguments",
    "add_override_arguments",
    "add_vocabulary_arguments",
    "vocabulary_from_cli",
    "register",
]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", default="segearth-ov", choices=sorted(METHODS), help="segmentation method (default segearth-ov)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    for name in METHODS:
        methods.method_module(name).add_arguments(parser.add_argument_group(f"{name} options"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images or GeoTIFFs into named classes",
        description="Open-vocabulary segmentation of images and GeoTIFFs, no training needed.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="PNG, JPEG, TIFF/GeoTIFF/COG, JPEG2000 or VRT files, folders of them, or URLs (https://, s3://)",
    )
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    add_vocabulary_arguments(p)
    add_model_arguments(p)
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--save-probs",
        action="store_true",
        help="also write class scores: <stem>_probs.npy (float32 C×H×W) for images, "
        "<stem>_probs.tif (uint8 COG, 255 × score) for tiled scenes",
    )
    io.add_argument(
        "--bands", help="1-based band numbers to use as RGB for TIFF inputs, e.g. 4,3,2 (default: first three)"
    )
    io.add_argument(
        "--stretch", default="percentile", choices=["percentile", "minmax"], help="scaling of non-8-bit bands to 0..255"
    )
    io.add_argument(
        "--overwrite", action="store_true", help="redo inputs whose outputs already exist (default: skip them)"
    )
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_scene_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=run)


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Tiled whole-scene options (docs/scenes.md)."""
    g = parser.add_argument_group("whole scenes (tiled; automatic above 4096² px, for URLs, VRT and JPEG2000)")
    g.add_argument("--tile", type=int, help="segment every input in tiles of N×N px (default for large scenes: 512)")
    g.add_argument("--tile-overlap", type=int, help="pixels shared by neighbouring tiles (default: tile/4)")
    g.add_argument("--scale", type=float, default=1.0, help="resample scenes by F first, e.g. 0.5 = twice the GSD")
    g.add_argument("--vectors", choices=["gpkg", "geojson", "parquet"], help="also write class polygons in this format")
    g.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this (map units², px)")
    g.add_argument("--simplify", type=float, default=0.0, help="simplify polygons with this tolerance (map units)")


def scene_settings_from_cli(args: argparse.Namespace):
    """Tile settings (None without --tile), checked before any model loads."""
    from ..segment.scene import SceneSettings

    tile = args.tile if args.tile is not None else 512
    settings = SceneSettings(
        tile=tile,
        overlap=args.tile_overlap,
        scale=args.scale,
        min_area=args.min_area,
        simplify=args.simplify,
        vectors=args.vectors,
    )
    window = getattr(args, "slide_crop", None) or (224 if args.method == "segearth-ov" else 0)
    if args.tile is not None and args.tile < window:
        raise UserError(
            f"--tile {args.tile} is smaller than the model's {window} px window: give --tile {window} or more"
        )
    return settings if (args.tile is not None or args.tile_overlap is not None or args.scale != 1.0) else None


def parse_bands(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise UserError(f"--bands {text!r} is not a comma-separated list of band numbers, e.g. 4,3,2") from None


def _segment_on_ray(args: argparse.Namespace, paths, bands, scene):
    """``--engine ray``: the same run on a Ray actor pool (frugalvl.distributed, docs/ray.md)."""
    from ..distributed.ray_segment import segment_files_ray

    return segment_files_ray(
        SegmenterFactory(args),
        paths,
        args.outdir,
        progress=not args.no_progress,
        save_probs=args.save_probs,
        overwrite=args.overwrite,
        bands=bands,
        stretch=args.stretch,
        scene=scene,
        vectors=args.vectors,
        min_area=args.min_area,
        simplify=args.simplify,
        **engine_options(args),
    )


def run(args: argparse.Namespace) -> int:
    from ..raster import find_images
    from ..segment.pipeline import check_inputs_and_outputs, check_outdir, segment_files

    scene = scene_settings_from_cli(args)
    paths = find_images(args.inputs)
    bands = parse_bands(args.bands)
    check_outdir(args.outdir)  # before any model loads
    check_inputs_and_outputs(paths, args.outdir)
    if getattr(args, "engine", "local") == "ray":
        summary = _segment_on_ray(args, paths, bands, scene)
    else:
        summary = segment_files(
            method_module(args.method).segmenter_from_cli(args),
            paths,
            args.outdir,
            save_probs=args.save_probs,
            overwrite=args.overwrite,
            bands=bands,
            stretch=args.stretch,
            progress=not args.no_progress,
            scene=scene,
            vectors=args.vectors,
            min_area=args.min_area,
            simplify=args.simplify,
        )
    print(summary.table())
    if summary.failed:
        for _path, why in summary.failed:
            print(f"frugalvl: failed: {why}")
        return 2
    return 0
