"""``frugalvl segment``: label maps for images and GeoTIFFs, with any segmentation method."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import UserError
from ..segment.exemplars import ExemplarSettings, check_exemplar_run
from ..segment.scene_settings import SceneSettings, SegmentRunSettings
from . import methods
from ._engine import ENGINE_KEYWORDS, ENGINE_NAMES, add_engine_arguments, engine_options
from ._progress import add_progress_arguments, reporter_from_cli
from ._settings import add_settings_options, build_settings, cli_text, given
from .methods import METHODS, method_module
from .vocabulary import add_override_arguments, add_vocabulary_arguments, vocabulary_from_cli

SCENE_FIELDS = ("tile", "overlap", "scale", "vectors", "min_area", "simplify")
SOURCE_FIELDS = (
    "bbox",
    "bbox_crs",
    "aoi",
    "assets",
    "resolution",
    "zoom",
    "max_requests",
)  # the rest: input and output

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
        nargs="*",
        help="PNG, JPEG, TIFF/GeoTIFF/COG, JPEG2000 or VRT files, folders of them, URLs (https://, s3://), "
        "STAC items (.json files or URLs) or tile services (xyz+https://host/{z}/{x}/{y}.png or "
        "wmts+https://host/WMTSCapabilities.xml?layer=NAME&tilematrixset=SET, with a bbox)",
    )
    p.add_argument(
        "--stac-items",
        nargs="+",
        metavar="ITEM",
        help="several STAC items (files or URLs) segmented as one mosaic: where they overlap, a pixel comes "
        "from the first item that has data there (one input; a list file or an item collection does the same)",
    )
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    add_vocabulary_arguments(p)
    add_model_arguments(p)
    io = p.add_argument_group("input and output")
    for name in ("save_probs", "bands", "stretch"):  # in this order in the help
        add_settings_options(
            io, SceneSettings, skip=[f.name for f in dataclasses.fields(SceneSettings) if f.name != name]
        )
    add_settings_options(io, SegmentRunSettings)
    add_progress_arguments(io)
    add_scene_arguments(p)
    add_settings_options(p.add_argument_group("exemplars (docs/methods/exemplars.md)"), ExemplarSettings)
    add_engine_arguments(p)
    p.set_defaults(func=run)


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Tiled whole-scene options (docs/scenes.md), generated from :class:`SceneSettings`."""
    g = parser.add_argument_group("whole scenes (tiled; automatic above 4096² px, for URLs, VRT and JPEG2000)")
    io_fields = [f.name for f in dataclasses.fields(SceneSettings) if f.name not in SCENE_FIELDS]
    add_settings_options(g, SceneSettings, skip=io_fields)
    g = parser.add_argument_group("area of interest, STAC items and tile services (docs/scenes.md; tiled)")
    add_settings_options(
        g, SceneSettings, skip=[f.name for f in dataclasses.fields(SceneSettings) if f.name not in SOURCE_FIELDS]
    )


def run_settings_from_cli(args: argparse.Namespace) -> SegmentRunSettings:
    """The run's settings from the command line, checked before any model loads.

    Giving ``--tile``, ``--tile-overlap`` or a ``--scale`` other than 1 sends every input through the
    tiled scene path; otherwise only large, remote and VRT/JPEG2000 inputs go there.
    """
    scene = build_settings(SceneSettings, given(args, SceneSettings))
    window = getattr(args, "slide_crop", None) or method_module(args.method).entry.settings_class()().slide_crop
    if args.tile is not None and args.tile < window:
        raise UserError(
            f"--tile {args.tile} is smaller than the model's {window} px window: give --tile {window} or more"
        )
    tile_all = args.tile is not None or args.overlap is not None or (args.scale or 1.0) != 1.0
    return build_settings(SegmentRunSettings, {**given(args, SegmentRunSettings), "scene": scene, "tile_all": tile_all})


def parse_bands(text: str | None) -> list[int] | None:
    """``--bands`` text of a command that does not generate it (``change``): a list, or one line."""
    from ..segment.scene_settings import parse_bands as parse

    try:
        bands = parse(text or "")
    except ValueError:
        bands = ("?",)
    if bands is not None and not all(isinstance(b, int) for b in bands):
        raise UserError(f"--bands {text!r} is not a comma-separated list of band numbers, e.g. 4,3,2")
    return None if bands is None else [b for b in bands if isinstance(b, int)]


def cli_message(text: str) -> str:
    """A library message about this run as the command line says it (its fields as their options)."""
    return cli_text(
        text,
        SceneSettings,
        SegmentRunSettings,
        ExemplarSettings,
        names=ENGINE_NAMES | {"outdir": "-o"},
        keywords=ENGINE_KEYWORDS,
    )


def _report_failure(path: str, why: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"frugalvl: skipped: {cli_message(why)}", file=sys.stderr)  # above the progress bars


def _segment_on_ray(args: argparse.Namespace, paths, settings: SegmentRunSettings, reporter, exemplars=None):
    """``--engine ray``: the same run on a Ray actor pool (frugalvl.distributed, docs/ray.md)."""
    from ..distributed.ray_segment import segment_files_ray

    return segment_files_ray(
        method_module(args.method).recipe_from_cli(args),
        paths,
        args.outdir,
        settings,
        progress=reporter,
        exemplars=exemplars if exemplars is not None and exemplars.exemplars is not None else None,
        **engine_options(args),
    )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UserError as exc:
        from ._settings import render_error

        raise UserError(cli_message(render_error(exc))) from None


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    created = not Path(args.outdir).exists()
    try:
        return _segment(args)
    except UserError:
        _remove_if_empty(Path(args.outdir), created)  # a refused run leaves no empty folder behind
        raise


def _remove_if_empty(outdir, created: bool) -> None:
    if created and outdir.is_dir() and not any(outdir.iterdir()):
        outdir.rmdir()


def _finished(args: argparse.Namespace, paths, settings: SegmentRunSettings):
    """The table of a run that is done already, read from its records before any model loads; None
    when some input has work left (or only loading the models tells). Outputs made with other
    settings stop the run here, before any model loads, naming every difference."""
    from ..segment.pipeline import finished_summary

    recipe = method_module(args.method).recipe_from_cli(args)
    record = method_module(args.method).entry.record(recipe.models, recipe.vocabulary, recipe.settings)
    return None if record is None else finished_summary(record, paths, args.outdir, settings)


def _inputs(args: argparse.Namespace) -> list[str]:
    """The positional inputs, and ``--stac-items`` as one more input (a mosaic of the items)."""
    inputs = list(args.inputs)
    if getattr(args, "stac_items", None):
        from ..sources.stac import items_source

        inputs.append(items_source(args.stac_items))
    if not inputs:
        raise UserError("give inputs: images, folders, URLs, STAC items or tile services (or --stac-items)")
    return inputs


def _segment(args: argparse.Namespace) -> int:
    from ..raster import find_images
    from ..segment.pipeline import check_inputs, writing_outputs

    settings = run_settings_from_cli(args)
    reporter = reporter_from_cli(args)
    paths = find_images(_inputs(args))
    exemplars = build_settings(ExemplarSettings, given(args, ExemplarSettings))
    check_exemplar_run(method_module(args.method).entry.exemplars, exemplars, len(paths))
    method_module(args.method).recipe_from_cli(args)  # settings against the vocabulary, before any model loads
    check_inputs(paths, settings)
    with writing_outputs(paths, args.outdir, settings.overwrite):  # checked and locked before any model loads
        return _segment_locked(args, paths, settings, reporter, exemplars)


def _segment_locked(args: argparse.Namespace, paths, settings: SegmentRunSettings, reporter, exemplars) -> int:
    from ..progress import reporting
    from ..segment.pipeline import segment_files

    # with exemplars the record holds their prototypes: only the segmenter knows it
    summary = None if exemplars.exemplars is not None else _finished(args, paths, settings)
    if summary is not None:
        print("every input is done already (give --overwrite to redo them): the finished run's table", file=sys.stderr)
    elif getattr(args, "engine", "local") == "ray":
        summary = _segment_on_ray(args, paths, settings, reporter, exemplars)
    else:
        with reporting(reporter):  # "loading CLIP ...", "encoding N text prompts ...": no silent minutes
            segmenter = method_module(args.method).segmenter_from_cli(args)
        summary = segment_files(
            segmenter,
            paths,
            args.outdir,
            settings,
            progress=reporter,
            on_failure=_report_failure,
            exemplars=exemplars if exemplars.exemplars is not None else None,
        )
    print(summary.table())
    if summary.failed:
        for _path, why in summary.failed:
            print(f"frugalvl: failed: {cli_message(why)}")
        return 2
    return 0
