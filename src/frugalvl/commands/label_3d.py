"""``frugalvl label-3d``: open-vocabulary labels for a point cloud from the photos it was made from."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError
from ._settings import add_settings_options, build_settings, given
from .methods import METHODS, method_module
from .vocabulary import add_override_arguments


def _settings_class() -> Any:
    from ..pointcloud.settings import Label3DSettings

    return Label3DSettings


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "label-3d",
        help="label a point cloud from its drone photos: segment each photo, project the points, vote",
        description="Open-vocabulary labels for a photogrammetric point cloud, no training: every photo of the "
        "block is segmented, every point is projected into every photo with the block's camera model, and the "
        "photos vote (SegEarth-OV3 v2, 3D).",
    )
    p.add_argument("photos", metavar="PHOTOS", help="folder holding the block's photos")
    p.add_argument("--cameras", required=True, metavar="BLOCK.xml", help="ContextCapture/iTwin BlocksExchange XML")
    p.add_argument("--cloud", required=True, metavar="CLOUD", help="point cloud: .ply, .las or .laz")
    p.add_argument("-o", "--outdir", required=True, help="output folder (label maps go to OUT/masks/)")
    classes = p.add_argument_group("classes")
    classes.add_argument("--preset", help="point-cloud preset: classes, weights, colours and thresholds (stpls3d)")
    classes.add_argument("--classes", help='classes separated by ";", synonyms by ",": "ground,road;tree;car;building"')
    classes.add_argument("--classes-file", help="official class file: one class per line, synonyms comma separated")
    add_override_arguments(classes)
    p.add_argument(
        "--method", default="segearth-ov3", choices=sorted(METHODS), help="segmentation method (default segearth-ov3)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    for name in METHODS:
        method_module(name).add_arguments(p.add_argument_group(f"{name} options"))
    add_settings_options(p.add_argument_group("votes"), _settings_class())
    p.add_argument("--overwrite", action="store_true", help="segment photos again even if their label maps exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def apply_preset(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the segmentation options from a point-cloud preset (the user's options win); its vote settings.

    With the user's own classes only the preset's thresholds apply: its class weights, colours and
    background class index belong to its classes."""
    from ..presets.points import load_points_preset

    args.preset3d, args.colours = args.preset, None
    if not args.preset:
        return {}
    preset = load_points_preset(args.preset)
    args.preset = None  # the image presets do not know it
    if not (args.classes or args.classes_file):
        args.classes = ";".join(preset["classes"])
        args.colours = preset.get("colours")
    table = preset.get(args.method.replace("-", "_"), {})
    for key, value in table.items():
        if key == "bg_idx" and args.colours is None:
            continue
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return {"class_weights": tuple(preset["class_weights"])} if "class_weights" in preset and args.colours else {}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..fileio import check_writable_dir
    from ..pointcloud.pipeline import check_cloud_and_block, label_cloud, writing_labels

    cls = _settings_class()
    values = apply_preset(args)
    values.update(given(args, cls))
    settings = build_settings(cls, values, leading_field=True)
    if not (args.classes or args.classes_file):
        raise UserError(
            "no classes given: use --classes 'ground;tree;building', --classes-file FILE or --preset stpls3d"
        )
    cameras, cloud = check_cloud_and_block(args.cameras, args.cloud, settings)  # before any model loads
    check_writable_dir(args.outdir, option="-o")
    if not Path(args.photos).is_dir():
        raise UserError(f"photo folder {args.photos} is not a folder: give the folder holding the block's photos")
    with writing_labels(cameras, cloud, args.photos, args.cameras, args.outdir, settings, args.overwrite):
        segmenter = method_module(args.method).segmenter_from_cli(args)  # after every check on the outputs
        result = label_cloud(
            segmenter,
            args.photos,
            args.cameras,
            args.cloud,
            args.outdir,
            settings,
            colours=args.colours,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    print(result.table())
    print(f"labelled cloud: {result.output}")
    return 0
