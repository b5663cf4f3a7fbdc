"""``frugalvl select``: CoIDO data selection for visual instruction tuning (docs/methods/coido.md).

Stages over one work folder, each resumable: prepare, features, cluster, train, score, pick;
``run`` chains them. The options are generated from the stage settings (:mod:`._select_options`);
every stage's settings are built, and so checked, before it reads, writes or deletes anything.
The tools beside the stages (``baseline``, ``compare``, ``demo``, ``finetune``, ``report``) register from their
own modules, which never import this one.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from . import select_baselines, select_demo, select_finetune
from ._engine import ENGINE_KEYWORDS, ENGINE_NAMES, add_engine_arguments, engine_options
from ._select_options import (
    cluster_options,
    cluster_settings,
    feature_settings,
    features_options,
    in_work,
    pick_budget_settings,
    pick_options,
    pick_settings,
    prepare_options,
    prepare_settings,
    score_options,
    score_settings,
    train_options,
    train_settings,
    work_options,
)

STAGES = ("prepare", "features", "cluster", "train", "score", "pick", "run")
TRACES = ("why", "verify", "cost")  # reading a work folder's record
# the stage tools' own modules, each adding its sub-commands to ``select``
TOOLS = (
    select_finetune.register_finetune_tools,
    select_baselines.register_select_tools,
    select_demo.register_demo,
)

__all__ = [
    "STAGES",
    "cluster_settings",
    "feature_settings",
    "pick_settings",
    "prepare_settings",
    "register",
    "score_settings",
    "train_settings",
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "select",
        help="CoIDO: pick a subset of a LLaVA-format instruction set",
        description="CoIDO data selection for visual instruction tuning: prepare, features, "
        "cluster, train, score, pick, or run them all. Every stage is resumable.",
    )
    stages = parser.add_subparsers(dest="stage", metavar="STAGE")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    builders = {
        "prepare": _prepare_parser,
        "features": _features_parser,
        "cluster": _cluster_parser,
        "train": _train_parser,
        "score": _score_parser,
        "pick": _pick_parser,
        "run": _run_parser,
        "why": _why_parser,
        "verify": _verify_parser,
        "cost": _cost_parser,
    }
    for name in STAGES + TRACES:
        builders[name](stages)
    for tools in TOOLS:
        tools(stages)


def _train_options(p: argparse.ArgumentParser, mllm_required: bool = True) -> None:
    """The coupled training's options (kept under this name for callers of the stage parser)."""
    train_options(p, mllm_required)


@contextlib.contextmanager
def _ray_messages():
    """The Ray drivers' messages name their parameters (``engine='ray'``, ``ray_address``): here, the options."""
    from ..errors import UserError
    from ..settings import FieldError
    from ._settings import cli_text

    try:
        yield
    except FieldError:
        raise  # rendered with its flags by the CLI
    except UserError as exc:
        raise UserError(cli_text(str(exc), names=ENGINE_NAMES, keywords=ENGINE_KEYWORDS)) from None


# ---------------------------------------------------------------- stage commands


def _prepare_parser(stages) -> None:
    p = stages.add_parser("prepare", help="index the instruction data, check samples and images, derive sources")
    p.add_argument(
        "data",
        type=Path,
        help="LLaVA JSON, JSON lines, ShareGPT, Parquet (file or folder), a save_to_disk folder or WebDataset shards",
    )
    work_options(p)
    prepare_options(p)

    def run(args):
        from ..select import pipeline

        pipeline.prepare(args.data, args.work, prepare_settings(args), args.force)

    p.set_defaults(func=in_work(run, prepare_settings))


def _features_parser(stages) -> None:
    p = stages.add_parser("features", help="CLIP embeddings and quality scores for every sample")
    work_options(p)
    features_options(p)
    add_engine_arguments(p, workers_flag="--ray-workers")

    def run(args):
        from ..select import pipeline

        settings = feature_settings(args)
        if args.engine == "ray":
            from ..distributed.ray_select import features_ray

            options = {**engine_options(args), "device": settings.device}
            with _ray_messages():
                features_ray(args.work, settings, args.force, progress=settings.progress, **options)
            return
        pipeline.features(args.work, settings, args.force)

    p.set_defaults(func=in_work(run, feature_settings))


def _cluster_parser(stages) -> None:
    p = stages.add_parser("cluster", help="draw the random training subset and cluster it (spectral)")
    work_options(p)
    cluster_options(p)

    def run(args):
        from ..select import pipeline

        pipeline.cluster(args.work, cluster_settings(args), args.force)

    p.set_defaults(func=in_work(run, cluster_settings))


def _train_parser(stages) -> None:
    p = stages.add_parser("train", help="train the scorer together with the MLLM on the subset")
    work_options(p)
    train_options(p)

    def run(args):
        from ..select import pipeline

        pipeline.train(args.work, train_settings(args), args.force)

    p.set_defaults(func=in_work(run, train_settings))


def _score_parser(stages) -> None:
    p = stages.add_parser("score", help="score every sample with the trained scorer")
    work_options(p)
    score_options(p)
    add_engine_arguments(p)

    def run(args):
        from ..select import pipeline

        s = score_settings(args)
        if args.engine == "ray":
            from ..distributed.ray_select import score_ray

            opts = {k: v for k, v in engine_options(args).items() if k != "device"}
            with _ray_messages():
                score_ray(args.work, s.batch_size, s.device, args.force, **opts)
            return
        pipeline.score(args.work, s.batch_size, s.device, args.force)

    p.set_defaults(func=in_work(run, score_settings))


def _pick_parser(stages) -> None:
    p = stages.add_parser(
        "pick",
        help="keep the lowest-scored samples and write the subset",
        description="Keep the lowest r per source (or overall) and write the subset in the input's format. "
        "Several budgets (--ratio 0.05,0.1,0.2 and/or --count 100,200) are picked from the same scores, "
        "each into its own folder OUT/ratio-R or OUT/count-C with its ids, report and provenance.",
    )
    work_options(p, force=False)
    pick_options(p)

    def run(args):
        from ..select import pipeline

        budgets = pick_budget_settings(args)
        if len(budgets) == 1:
            pipeline.pick(args.work, args.out, budgets[0], overwrite=args.overwrite)
            return
        for report in pipeline.pick_budgets(args.work, args.out, budgets, overwrite=args.overwrite):
            print(f"{report['n_selected']} of {report['n_samples']} samples -> {report['out']}")

    p.set_defaults(func=in_work(run, pick_budget_settings))


def _why_parser(stages) -> None:
    p = stages.add_parser("why", help="why a sample is in or out of a selection")
    p.add_argument("id", help="the sample's id (or its position in the input)")
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder of the selection")
    p.add_argument(
        "--selection",
        help="a selection folder (a budget's OUT/ratio-R, WORK/baseline-NAME) or a baseline's name; default WORK/pick",
    )

    def run(args):
        from ..select.why import explain

        for line in explain(args.work, args.id, args.selection):
            print(line)

    p.set_defaults(func=run)


def _verify_parser(stages) -> None:
    p = stages.add_parser("verify", help="recompute a selection's digests and say what changed")
    p.add_argument("folder", type=Path, help="a selection folder holding provenance.json (WORK/pick, a budget's)")

    def run(args):
        from ..select.provenance import verify

        problems = verify(args.folder)
        for line in problems:
            print(f"changed: {line}")
        if problems:
            return 1
        print(f"{args.folder}: the input, the selected ids and the written files match their digests")
        return 0

    p.set_defaults(func=run)


def _cost_parser(stages) -> None:
    p = stages.add_parser("cost", help="the cost ledger: each stage's wall, CPU and device time, peak memory")
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder")

    def run(args):
        from ..select import ledger

        print(ledger.table(ledger.summary(args.work)))

    p.set_defaults(func=run)


def _run_parser(stages) -> None:
    p = stages.add_parser("run", help="every stage in order, each skipped when already done")
    p.add_argument("data", type=Path, help="LLaVA-format JSON (list of samples)")
    work_options(p)
    prepare_options(p)
    features_options(p)
    cluster_options(p, skip=("device",))  # the features' --device
    score_options(p, skip=("device",))
    pick_options(p)
    train_options(p, mllm_required=False, skip=("progress",))  # the features' --no-progress

    def all_settings(args):
        train = train_settings(args) if args.mllm else None  # None: reuse train/scorer.pt
        return (
            prepare_settings(args),
            feature_settings(args),
            cluster_settings(args),
            train,
            pick_settings(args),
            score_settings(args),
        )

    def run(args):
        from ..select import pipeline

        prepare, features, cluster, train, pick, score = all_settings(args)
        pipeline.run(
            args.data,
            args.work,
            args.out,
            prepare,
            features,
            cluster,
            train,
            pick,
            score_device=score.device,
            force=args.force,
            score_batch_size=score.batch_size,
            overwrite=args.overwrite,
        )

    p.set_defaults(func=in_work(run, all_settings))
