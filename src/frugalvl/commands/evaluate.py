"""``frugalvl evaluate``: benchmark scores with the official metric, next to the papers' numbers."""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..evaluate.datasets import DatasetSpec
    from ..evaluate.runner import DatasetResult


def register(subparsers) -> None:
    from ..evaluate.datasets import list_datasets
    from .evaluate_points import add_points_arguments
    from .segment import add_model_arguments, add_override_arguments

    p = subparsers.add_parser(
        "evaluate",
        help="score a method on the remote-sensing benchmarks (mIoU / IoU as the papers)",
        description="Evaluate SegEarth-OV, SegEarth-OV3 or any tool's label maps on the papers' benchmarks, "
        "with mmseg's IoU metric, and print the results next to the published numbers.",
    )
    what = p.add_argument_group("what to evaluate")
    choice = what.add_mutually_exclusive_group(required=True)
    choice.add_argument("--dataset", help=f"one benchmark: {', '.join(list_datasets())}")
    choice.add_argument(
        "--all", action="store_true", help="every benchmark found under --data-root, printed as the papers' two tables"
    )
    choice.add_argument("--points", metavar="CLOUD", help="score a labelled point cloud (label-3d's output)")
    what.add_argument(
        "--data-root",
        help="folder holding the datasets in the official layout (the official configs' data/)",
    )
    what.add_argument(
        "--predictions",
        metavar="PRED_DIR",
        help="score label maps made by any tool instead of running a method: <image stem>.png or .tif "
        "holding class indices (with --all: PRED_DIR/<dataset>/)",
    )
    what.add_argument("--limit", type=int, help="evaluate only the first N images of each dataset (quick runs)")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--outdir", default="eval_results", help="output folder (default eval_results)")
    out.add_argument("--no-cache", action="store_true", help="do not keep per-image results (no resuming)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument(
        "--overwrite", action="store_true", help="replace result files in -o that no evaluation recorded writing"
    )
    add_points_arguments(what)
    add_override_arguments(p.add_argument_group("overrides of the preset's settings (default: the official ones)"))
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.points:
        from .evaluate_points import run_points

        return run_points(args)
    if args.data_root is None:
        raise UserError("the following arguments are required: --data-root")

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: give a positive number of images")
    from ..fileio import writing_into

    root = Path(args.data_root)
    if not root.is_dir():
        raise UserError(
            f"--data-root {root} is not a folder: give the folder holding the datasets (the official configs' data/)"
        )
    with writing_into(args.outdir, option="-o"):  # writable, locked, killed runs' temporaries gone: before any model
        return _run_locked(args, root)


def _run_locked(args: argparse.Namespace, root: Path) -> int:
    from ..evaluate.datasets import dataset_present, dataset_spec, list_datasets
    from ..evaluate.tables import paper_tables

    if args.dataset:
        _check_outputs(args, [(dataset_spec(args.dataset), args.predictions)], root, None)
        result = _evaluate_one(args, dataset_spec(args.dataset), root, pred_dir=args.predictions)
        print(_report(result))
        _print_outputs(result)
        return 0

    specs = [dataset_spec(n) for n in _paper_order(list_datasets())]
    present = [s for s in specs if dataset_present(s, root)]
    if not present:
        example = specs[0].layout(root) if specs else ""
        raise UserError(f"no benchmark found under {root}: expected the official layout, e.g. {example}")
    missing = [s.name for s in specs if s not in present]
    if missing:
        print(f"not found under {root} (skipped): {', '.join(missing)}")
    label = args.method if not args.predictions else f"predictions-{Path(args.predictions).resolve().name}"
    planned = [(s, Path(args.predictions) / s.name if args.predictions else None) for s in present]
    _check_outputs(args, [(s, p) for s, p in planned if p is None or p.is_dir()], root, label)
    results, failed = [], []
    make_segmenter = None if args.predictions else _shared_model_segmenters(args)
    for spec in present:
        if not args.predictions and not _has_settings(spec.name, args.method):
            print(f"{spec.name}: the preset has no {args.method} settings (skipped)")
            continue
        pred_dir = None
        if args.predictions:
            pred_dir = Path(args.predictions) / spec.name
            if not pred_dir.is_dir():
                print(f"{spec.name}: no predictions folder {pred_dir} (skipped)")
                continue
        try:
            result = _evaluate_one(args, spec, root, pred_dir=pred_dir, label=label, make_segmenter=make_segmenter)
        except UserError as exc:  # one broken dataset should not cost the others
            failed.append(str(exc))
            print(f"frugalvl: error: {exc}", file=sys.stderr)
            continue
        print(_report(result) + "\n")
        results.append(result)
    if not results:
        raise UserError(f"nothing evaluated under {root}" + (f": {failed[0]}" if failed else ""))
    from ..evaluate.runner import write_summary

    print(paper_tables({r.spec.name: r.headline for r in results}, label))
    json_path, csv_path = write_summary(results, args.outdir, label)
    print(f"\nsummary: {json_path} and {csv_path}")
    if failed:
        print(f"frugalvl: {len(failed)} dataset(s) failed, see the errors above", file=sys.stderr)
        return 2
    return 0


def _check_outputs(args: argparse.Namespace, planned: list, root: Path, label: str | None) -> None:
    """Every result file this run will write, checked before any model loads: never in a dataset's or the
    predictions' folder, never a file no evaluation recorded writing unless --overwrite."""
    from ..evaluate.runner import check_run_outputs, check_summary_outputs, dataset_inputs

    inputs = [args.predictions] if args.predictions else []
    for spec, pred_dir in planned:
        run = label or (args.method if pred_dir is None else f"predictions-{Path(pred_dir).resolve().name}")
        check_run_outputs(Path(args.outdir) / spec.name / run, [*dataset_inputs(spec, root), *inputs], args.overwrite)
    if label is not None:
        check_summary_outputs(args.outdir, label, inputs, args.overwrite)


def _has_settings(dataset: str, method: str) -> bool:
    """Whether a dataset's preset holds settings for the method (the v2 datasets have SegEarth-OV3's only)."""
    from ..presets import load_preset

    return method.replace("-", "_") in load_preset(dataset)


def _paper_order(names: list[str]) -> list[str]:
    """The papers' column order first (multi-class, building, road, water), then any others."""
    from ..evaluate.tables import MULTICLASS, SINGLE_CLASS

    order = [*MULTICLASS, *(d for group in SINGLE_CLASS.values() for d in group)]
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _shared_model_segmenters(args: argparse.Namespace) -> Callable[[argparse.Namespace], Any]:
    """Builds segmenters that share one model, loaded on first need (so ``--all`` loads it once)."""
    from .segment import method_module

    module = method_module(args.method)
    loaded: list = []

    def make(method_args: argparse.Namespace):
        if not loaded:
            loaded.append(module.load_models(args))
        return module.segmenter_from_cli(method_args, loaded[0])

    return make


def _evaluate_one(
    args: argparse.Namespace,
    spec: DatasetSpec,
    root: Path,
    pred_dir: str | Path | None,
    label: str | None = None,
    make_segmenter: Callable[[argparse.Namespace], Any] | None = None,
) -> DatasetResult:
    """Score one dataset: from prediction files when ``pred_dir`` is given, else by running the method."""
    from ..evaluate.runner import FilePredictor, Predictor, SegmenterPredictor, evaluate_dataset

    predictor: Predictor
    if pred_dir is not None:
        predictor = FilePredictor(pred_dir, label)
        settings: dict[str, Any] = {"predictions": str(Path(pred_dir).resolve())}
        cache = False  # reading label files is as cheap as reading a cache, and files may change
    elif spec.change:  # two dates per sample (frugalvl.evaluate.change)
        from .change import evaluation_predictor

        predictor, settings = evaluation_predictor(args, spec, root)
        cache = not args.no_cache
    else:
        method_args = _method_args(args, spec.name)
        make = make_segmenter or _shared_model_segmenters(args)
        predictor = SegmenterPredictor(lambda: make(method_args), label=args.method)
        settings = cache_identity(args.method, method_args)
        cache = not args.no_cache
    run_dir = Path(args.outdir) / spec.name / predictor.label
    inputs = [pred_dir] if pred_dir is not None else []
    result = evaluate_dataset(
        spec, root, predictor, run_dir, settings=settings, limit=args.limit, cache=cache,
        progress=not args.no_progress, overwrite=args.overwrite, inputs=inputs,
    )  # fmt: skip
    if spec.change:
        from ..evaluate.change import change_metrics_json
        from ..fileio import write_json

        write_json(run_dir / "change_metrics.json", change_metrics_json(result.scores, spec.label_names))
    return result


def _report(result: DatasetResult) -> str:
    """The segmentation tables, and for a change dataset the official change metrics below them."""
    if not result.spec.change:
        return result.report()
    from ..evaluate.change import change_report

    title = "change detection (mmseg mIoU + mFscore, %)"
    return f"{result.report()}\n\n{change_report(result.scores, result.spec.label_names, title)}"


def cache_identity(method: str, method_args: argparse.Namespace) -> dict[str, Any]:
    """What keys the per-image cache: the method, its full settings, the vocabulary's source and the
    identity of the weights (a file's SHA-256), so any change that can change a result misses the cache."""
    from ..settings import settings_identity
    from .segment import method_module

    module = method_module(method)
    return {
        "method": method,
        "settings": settings_identity(module.settings_from_cli(method_args)),
        "preset": method_args.preset,
        "models": module.model_identity(method_args),
    }


def _method_args(args: argparse.Namespace, dataset: str) -> argparse.Namespace:
    """The segment command's arguments for one dataset: its preset's classes and thresholds."""
    method_args = copy.copy(args)
    method_args.preset = dataset
    method_args.classes = None
    method_args.classes_file = None
    return method_args


def _print_outputs(result: DatasetResult) -> None:
    assert result.run_dir is not None  # evaluate_dataset always sets it
    cached = result.images - result.computed
    resumed = f" ({cached} from earlier runs)" if cached else ""
    print(
        f"\n{result.images} images scored{resumed}; results: {result.run_dir / 'results.json'} and {result.run_dir / 'per_class.csv'}"
    )
