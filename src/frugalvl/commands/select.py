"""``frugalvl select``: CoIDO data selection for visual instruction tuning (spec/coido.md).

Stages over one work folder, each resumable: prepare, features, cluster, train, score, pick;
``run`` chains them.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import UserError

STAGES = ("prepare", "features", "cluster", "train", "score", "pick", "run")


def register(subparsers) -> None:
    parser = subparsers.add_parser("select", help="CoIDO: pick a subset of a LLaVA-format instruction set",
                                   description="CoIDO data selection for visual instruction tuning: prepare, features, "
                                               "cluster, train, score, pick, or run them all. Every stage is resumable.")
    stages = parser.add_subparsers(dest="stage", metavar="STAGE")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    builders = {"prepare": _prepare_parser, "features": _features_parser, "cluster": _cluster_parser,
                "train": _train_parser, "score": _score_parser, "pick": _pick_parser, "run": _run_parser}
    for name in STAGES:
        builders[name](stages)


# ---------------------------------------------------------------- option groups

def _work(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder holding every stage's results")
    p.add_argument("--force", action="store_true", help="recompute this stage even if its results exist")


def _prepare_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prepare")
    g.add_argument("--image-root", help="folder the samples' 'image' paths are relative to")
    g.add_argument("--missing-images", choices=("exclude", "error"), default="exclude",
                   help="samples whose image is missing or corrupt: exclude them from training and selection, "
                        "listed in the report (default), or stop with an error")
    g.add_argument("--no-verify-images", action="store_true", help="only check that image files exist (faster)")


def _features_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument("--clip", default="ViT-L-14", help="CLIP: open_clip name[:tag], hf-hub:ID, folder or OpenAI-format "
                                                     "checkpoint file (default ViT-L-14, openai weights)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument("--clip-precision", choices=("fp32", "fp16", "bf16"), help="CLIP precision (default fp16 on CUDA, else fp32)")
    g.add_argument("--clip-batch-size", type=int, default=64, help="images per CLIP batch (default 64)")
    g.add_argument("--workers", type=int, default=4, help="image-decoding processes (default 4)")
    g.add_argument("--shard-size", type=int, default=10000, help="samples per saved shard (default 10000)")
    g.add_argument("--imagereward", choices=("auto", "on", "off"), default="auto",
                   help="ImageReward score: auto = when the image-reward package and weights are present")
    g.add_argument("--text-quality", choices=("auto", "endpoint", "local", "off"), default="auto",
                   help="LLM text-quality score: auto = the endpoint when configured, else --text-lm when given")
    g.add_argument("--text-endpoint", help="OpenAI-compatible base URL (env OPENAI_BASE_URL), e.g. https://api.deepseek.com/v1")
    g.add_argument("--text-model", help="chat model at the endpoint (env FRUGALVL_TEXT_MODEL), e.g. deepseek-chat")
    g.add_argument("--text-api-key", help="API key (env OPENAI_API_KEY; prefer the environment)")
    g.add_argument("--text-concurrency", type=int, default=8, help="parallel endpoint requests (default 8)")
    g.add_argument("--text-retries", type=int, default=5, help="retries per request, with exponential backoff (default 5)")
    g.add_argument("--text-lm", help="local transformers causal LM (hub id or folder) for --text-quality local")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("subset and clustering")
    g.add_argument("--subset-ratio", type=float, default=0.2, help="p: fraction drawn as the training subset S (default 0.2)")
    g.add_argument("--subset-seed", type=int, default=42, help="seed of the draw (default 42)")
    g.add_argument("--clusters", type=int, default=20, help="spectral clusters K (default 20)")
    g.add_argument("--knn", type=int, default=30, help="neighbours in the affinity graph, self included (default 30)")


def _score_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("score")
    g.add_argument("--score-batch-size", type=int, default=256, help="samples per scorer batch (default 256)")


def _pick_options(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    g = p.add_argument_group("pick")
    g.add_argument("--ratio", type=float, default=0.2, help="keep this fraction of N (default 0.2)")
    g.add_argument("--count", type=int, help="keep exactly this many samples (overrides --ratio)")
    g.add_argument("--global", dest="global_rank", action="store_true",
                   help="keep the lowest r overall instead of per-source proportional quotas")
    g.add_argument("--exclude-text", action="store_true", help="never select text-only samples (official behaviour)")
    g.add_argument("--add-fields", action="store_true", help="add unique_idx and dataset to the written records")
    g.add_argument("-o", "--out", type=Path, required=out_required, help="selected subset as LLaVA JSON")


def _train_options(p: argparse.ArgumentParser, mllm_optional: bool = False) -> None:
    """The trainer's own options; a placeholder while frugalvl.select.trainer is absent.
    ``mllm_optional``: for ``run``, where a scorer already trained in the work folder is reused."""
    try:
        trainer = importlib.import_module("frugalvl.select.trainer")
    except ModuleNotFoundError as exc:
        if exc.name != "frugalvl.select.trainer":
            raise
        p.add_argument("--mllm", help="LLaVA model id or folder (training is not available in this build)")
        return
    trainer.add_train_arguments(p)
    for action in p._actions:  # noqa: SLF001 - argparse has no public way to relax one option
        if action.dest == "mllm" and mllm_optional:
            action.required = False


# ---------------------------------------------------------------- settings from arguments

def prepare_settings(args: argparse.Namespace):
    from ..select import PrepareSettings
    return PrepareSettings(image_root=args.image_root, missing_images=args.missing_images,
                           verify_images=not args.no_verify_images)


def feature_settings(args: argparse.Namespace):
    from ..select import EndpointSettings, FeatureSettings
    for name in ("clip_batch_size", "shard_size", "text_concurrency"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    endpoint = EndpointSettings(base_url=args.text_endpoint, model=args.text_model, api_key=args.text_api_key,
                                concurrency=args.text_concurrency, retries=args.text_retries)
    return FeatureSettings(clip=args.clip, device=args.device, precision=args.clip_precision, batch_size=args.clip_batch_size,
                           workers=args.workers, shard_size=args.shard_size, imagereward=args.imagereward,
                           text_quality=args.text_quality, text_lm=args.text_lm, endpoint=endpoint,
                           progress=not args.no_progress)


def cluster_settings(args: argparse.Namespace):
    from ..select import ClusterSettings
    if not 0 < args.subset_ratio <= 1:
        raise UserError(f"--subset-ratio must be in (0, 1], got {args.subset_ratio}")
    return ClusterSettings(ratio=args.subset_ratio, seed=args.subset_seed, n_clusters=args.clusters, knn=args.knn,
                           device=getattr(args, "device", "cpu"))


def pick_settings(args: argparse.Namespace):
    from ..select import PickSettings
    if args.count is None and not 0 < args.ratio <= 1:
        raise UserError(f"--ratio must be in (0, 1], got {args.ratio}")
    return PickSettings(ratio=args.ratio, count=args.count, mode="global" if args.global_rank else "quota",
                        exclude_text=args.exclude_text, add_fields=args.add_fields)


def train_settings(args: argparse.Namespace):
    try:
        from ..select import trainer
    except ModuleNotFoundError as exc:
        if exc.name != "frugalvl.select.trainer":
            raise
        raise UserError("training is not available: frugalvl.select.trainer is missing from this install") from None
    return trainer.settings_from_args(args)


# ---------------------------------------------------------------- stage commands

def _prepare_parser(stages) -> None:
    p = stages.add_parser("prepare", help="index a LLaVA JSON, derive sources, check images")
    p.add_argument("data", type=Path, help="LLaVA-format JSON (list of samples)")
    _work(p)
    _prepare_options(p)

    def run(args):
        from ..select import pipeline
        pipeline.prepare(args.data, args.work, prepare_settings(args), args.force)
    p.set_defaults(func=run)


def _features_parser(stages) -> None:
    p = stages.add_parser("features", help="CLIP embeddings and quality scores for every sample")
    _work(p)
    _features_options(p)

    def run(args):
        from ..select import pipeline
        pipeline.features(args.work, feature_settings(args), args.force)
    p.set_defaults(func=run)


def _cluster_parser(stages) -> None:
    p = stages.add_parser("cluster", help="draw the random training subset and cluster it (spectral)")
    _work(p)
    _cluster_options(p)
    p.add_argument("--device", default="cpu", help="device of the kNN search: cpu, cuda or cuda:N (default cpu)")

    def run(args):
        from ..select import pipeline
        pipeline.cluster(args.work, cluster_settings(args), args.force)
    p.set_defaults(func=run)


def _train_parser(stages) -> None:
    p = stages.add_parser("train", help="train the scorer together with the MLLM on the subset", conflict_handler="resolve")
    _work(p)
    _train_options(p)

    def run(args):
        from ..select import pipeline
        pipeline.train(args.work, train_settings(args), args.force)
    p.set_defaults(func=run)


def _score_parser(stages) -> None:
    p = stages.add_parser("score", help="score every sample with the trained scorer")
    _work(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _score_options(p)

    def run(args):
        from ..select import pipeline
        pipeline.score(args.work, args.score_batch_size, args.device, args.force)
    p.set_defaults(func=run)


def _pick_parser(stages) -> None:
    p = stages.add_parser("pick", help="keep the lowest-scored samples and write the subset")
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder holding every stage's results")
    _pick_options(p)

    def run(args):
        from ..select import pipeline
        pipeline.pick(args.work, args.out, pick_settings(args))
    p.set_defaults(func=run)


def _run_parser(stages) -> None:
    p = stages.add_parser("run", help="every stage in order, each skipped when already done", conflict_handler="resolve")
    p.add_argument("data", type=Path, help="LLaVA-format JSON (list of samples)")
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder holding every stage's results")
    _prepare_options(p)
    _features_options(p)
    _cluster_options(p)
    _score_options(p)
    _pick_options(p)
    _train_options(p, mllm_optional=True)

    def run(args):
        from ..select import pipeline
        train = train_settings(args) if getattr(args, "mllm", None) else None   # None: reuse train/scorer.pt
        pipeline.run(args.data, args.work, args.out, prepare_settings(args), feature_settings(args), cluster_settings(args),
                     train, pick_settings(args), score_device=args.device)
    p.set_defaults(func=run)
