"""``frugalvl select``: CoIDO data selection for visual instruction tuning (docs/methods/coido.md).

Stages over one work folder, each resumable: prepare, features, cluster, train, score, pick;
``run`` chains them. Numbers are range-checked as they are parsed (one line, exit 2), and every
stage's settings are checked before it reads, writes or deletes anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..precision import FIXED, PRECISIONS
from ._engine import add_engine_arguments, engine_options
from ._types import float_range, nonnegative_float, nonnegative_int, positive_float, positive_int, probability

STAGES = ("prepare", "features", "cluster", "train", "score", "pick", "run")
CLIP_PRECISIONS = FIXED
LOSS_VARIANTS_HELP = "coido | importance | importance+diversity | weighted"


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
    }
    for name in STAGES:
        builders[name](stages)
    __import__("frugalvl.commands.select_finetune", fromlist=["x"]).register_finetune_tools(stages)
    __import__("frugalvl.commands.select_baselines", fromlist=["x"]).register_select_tools(stages)


# ---------------------------------------------------------------- numbers checked at parse time


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = positive_float(text)
    return float_range(high=1)(str(value))


AT_LEAST_1 = positive_int
AT_LEAST_0 = nonnegative_int
FRACTION = fraction  # (0, 1]
POSITIVE = positive_float  # > 0
NON_NEGATIVE = nonnegative_float  # >= 0
UNIT = probability  # [0, 1]


# ---------------------------------------------------------------- option groups


def _in_work(run):
    """Wrap a stage: its work folder is checked writable (before any model loads) and cleared of the
    temporaries a killed run left, then the stage runs."""

    def checked(args: argparse.Namespace):
        from ..fileio import check_writable_dir, remove_stale_temporaries

        check_writable_dir(args.work, option="-w", create=False)
        remove_stale_temporaries(args.work, recursive=True)
        return run(args)

    return checked


def _work(p: argparse.ArgumentParser, force: bool = True) -> None:
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder holding every stage's results")
    if force:
        p.add_argument(
            "--force",
            action="store_true",
            help="recompute even if results exist (the old ones are replaced only when the new are complete)",
        )


def _prepare_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prepare")
    g.add_argument("--image-root", help="folder the samples' 'image' paths are relative to")
    g.add_argument(
        "--missing-images",
        choices=("exclude", "error"),
        default="exclude",
        help="samples whose image is missing or corrupt, or that are invalid: exclude them from training "
        "and selection, listed in the report (default), or stop with an error",
    )
    g.add_argument("--no-verify-images", action="store_true", help="only check that image files exist (faster)")
    g.add_argument(
        "--allow-absolute-images",
        action="store_true",
        help="accept absolute image paths and paths leading out of --image-root ('..'); refused by default",
    )


def _features_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument(
        "--clip",
        default="ViT-L-14",
        help="CLIP: open_clip name[:tag], hf-hub:ID, folder or OpenAI-format "
        "checkpoint file (default ViT-L-14, openai weights)",
    )
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument("--clip-precision", choices=CLIP_PRECISIONS, help="CLIP precision (default fp16 on CUDA, else fp32)")
    g.add_argument("--clip-batch-size", type=AT_LEAST_1, default=64, help="images per CLIP batch (default 64)")
    g.add_argument("--workers", type=AT_LEAST_0, default=4, help="image-decoding processes (default 4)")
    g.add_argument("--shard-size", type=AT_LEAST_1, default=10000, help="samples per saved shard (default 10000)")
    g.add_argument(
        "--imagereward",
        choices=("auto", "on", "off"),
        default="auto",
        help="ImageReward score: auto = when the image-reward package and weights are present",
    )
    g.add_argument(
        "--text-quality",
        choices=("auto", "endpoint", "local", "off"),
        default="auto",
        help="LLM text-quality score: auto = the endpoint when configured, else --text-lm when given",
    )
    g.add_argument(
        "--text-endpoint", help="OpenAI-compatible base URL (env OPENAI_BASE_URL), e.g. https://api.deepseek.com/v1"
    )
    g.add_argument("--text-model", help="chat model at the endpoint (env FRUGALVL_TEXT_MODEL), e.g. deepseek-chat")
    g.add_argument("--text-api-key", help="API key (env OPENAI_API_KEY; prefer the environment)")
    g.add_argument("--text-concurrency", type=AT_LEAST_1, default=8, help="parallel endpoint requests (default 8)")
    g.add_argument(
        "--text-retries", type=AT_LEAST_0, default=5, help="retries per request, with exponential backoff (default 5)"
    )
    g.add_argument("--text-lm", help="local transformers causal LM (hub id or folder) for --text-quality local")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("subset and clustering")
    g.add_argument(
        "--subset-ratio",
        type=FRACTION,
        default=0.2,
        help="p: fraction drawn as the training subset S, in (0, 1] (default 0.2)",
    )
    g.add_argument("--subset-seed", type=int, default=42, help="seed of the draw (default 42)")
    g.add_argument("--clusters", type=AT_LEAST_1, default=20, help="spectral clusters K (default 20)")
    g.add_argument(
        "--knn", type=AT_LEAST_1, default=30, help="neighbours in the affinity graph, self included (default 30)"
    )
    g.add_argument(
        "--cluster-solver",
        choices=("auto", "exact", "fast"),
        default="auto",
        help="auto (default): exact kNN and eigensolver up to 20K points, faiss kNN + AMG/LOBPCG above; "
        "exact or fast to force one",
    )


def _score_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("score")
    g.add_argument("--score-batch-size", type=AT_LEAST_1, default=256, help="samples per scorer batch (default 256)")


def _pick_options(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    g = p.add_argument_group("pick")
    g.add_argument("--ratio", type=FRACTION, default=0.2, help="keep this fraction of N, in (0, 1] (default 0.2)")
    g.add_argument("--count", type=AT_LEAST_1, help="keep exactly this many samples (overrides --ratio)")
    g.add_argument(
        "--global",
        dest="global_rank",
        action="store_true",
        help="keep the lowest r overall instead of per-source proportional quotas",
    )
    g.add_argument("--exclude-text", action="store_true", help="never select text-only samples (official behaviour)")
    g.add_argument("--add-fields", action="store_true", help="add unique_idx and dataset to the written records")
    g.add_argument("-o", "--out", type=Path, required=out_required, help="selected subset as LLaVA JSON")


def _train_options(p: argparse.ArgumentParser, mllm_required: bool = True) -> None:
    """Options of the coupled training; defaults from :class:`~frugalvl.select.train_settings.TrainSettings`.
    ``mllm_required=False`` for ``run``, where a scorer already trained in the work folder is reused."""
    from ..select.train_settings import TrainSettings

    d = TrainSettings()
    g = p.add_argument_group("coupled training (docs/methods/coido.md)")
    g.add_argument(
        "--mllm",
        required=mllm_required,
        help="LLaVA: a llava-hf folder, a hub id, or lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR",
    )
    g.add_argument(
        "--loss",
        default=d.loss,
        help=f"{LOSS_VARIANTS_HELP}: uncertainty-weighted (default) | L_I | L_I + lam·L_D | (1-lam)·L_I + lam·L_D",
    )
    g.add_argument(
        "--lam", type=NON_NEGATIVE, default=None, help="λ of importance+diversity (default 1) / weighted (0.5)"
    )
    g.add_argument("--lr", type=POSITIVE, default=d.lr, help=f"learning rate (default {d.lr})")
    g.add_argument("--uncertainty-lr", type=POSITIVE, default=None, help="lr of s1/s2 (default: --lr)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=d.weight_decay)
    g.add_argument("--warmup-ratio", type=UNIT, default=d.warmup_ratio)
    g.add_argument("--epochs", type=AT_LEAST_1, default=d.epochs)
    g.add_argument("--batch-size", type=AT_LEAST_1, default=d.batch_size, help="per device: the softmax micro-batch")
    g.add_argument("--grad-accum", type=AT_LEAST_1, default=d.grad_accum)
    g.add_argument("--max-grad-norm", type=NON_NEGATIVE, default=d.max_grad_norm, help="0 disables clipping")
    g.add_argument("--max-length", type=AT_LEAST_1, default=d.max_length)
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="auto: bf16 mixed precision on a GPU, fp32 on the CPU",
    )
    g.add_argument("--no-tf32", dest="tf32", action="store_false")
    g.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    g.add_argument("--no-group-by-modality", dest="group_by_modality", action="store_false")
    g.add_argument("--image-aspect-ratio", choices=("pad", "resize"), default=d.image_aspect_ratio)
    g.add_argument("--lora", action="store_true", help="train a LoRA adapter (+ projector) instead of the full LM")
    g.add_argument("--lora-r", type=AT_LEAST_1, default=d.lora_r)
    g.add_argument("--lora-alpha", type=AT_LEAST_1, default=d.lora_alpha)
    g.add_argument(
        "--save-minutes",
        type=NON_NEGATIVE,
        default=d.save_minutes,
        help=f"checkpoint every this many minutes, and on Ctrl-C (0: only on Ctrl-C; default {d.save_minutes:g})",
    )
    g.add_argument(
        "--save-steps", type=AT_LEAST_0, default=d.save_steps, help="also checkpoint every N steps (0: never)"
    )
    g.add_argument("--keep-checkpoints", type=AT_LEAST_0, default=d.keep_checkpoints, help="newest kept (0: all)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--num-workers",
        type=AT_LEAST_0,
        default=d.num_workers,
        help=f"image-loading processes (default {d.num_workers}: this machine's cores less one, at most 4)",
    )
    g.add_argument("--save-mllm", action="store_true", help="also write the trained MLLM to train/mllm/")


# ---------------------------------------------------------------- settings from arguments


def prepare_settings(args: argparse.Namespace):
    from ..select import PrepareSettings

    return PrepareSettings(
        image_root=args.image_root,
        missing_images=args.missing_images,
        verify_images=not args.no_verify_images,
        allow_absolute_images=args.allow_absolute_images,
    )


def feature_settings(args: argparse.Namespace):
    from ..select import EndpointSettings, FeatureSettings

    endpoint = EndpointSettings(
        base_url=args.text_endpoint,
        model=args.text_model,
        api_key=args.text_api_key,
        concurrency=args.text_concurrency,
        retries=args.text_retries,
    )
    return FeatureSettings(
        clip=args.clip,
        device=args.device,
        precision=args.clip_precision,
        batch_size=args.clip_batch_size,
        workers=args.workers,
        shard_size=args.shard_size,
        imagereward=args.imagereward,
        text_quality=args.text_quality,
        text_lm=args.text_lm,
        endpoint=endpoint,
        progress=not args.no_progress,
    )


def cluster_settings(args: argparse.Namespace):
    from ..select import ClusterSettings

    return ClusterSettings(
        ratio=args.subset_ratio,
        seed=args.subset_seed,
        n_clusters=args.clusters,
        knn=args.knn,
        device=getattr(args, "device", "cpu"),
        solver=args.cluster_solver,
    )


def pick_settings(args: argparse.Namespace):
    from ..select import PickSettings

    return PickSettings(
        ratio=args.ratio,
        count=args.count,
        mode="global" if args.global_rank else "quota",
        exclude_text=args.exclude_text,
        add_fields=args.add_fields,
    )


def train_settings(args: argparse.Namespace):
    from dataclasses import fields

    from ..select.train_settings import TrainSettings

    names = {f.name for f in fields(TrainSettings)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["progress"] = not getattr(args, "no_progress", False)
    return TrainSettings(**values)


# ---------------------------------------------------------------- stage commands


def _prepare_parser(stages) -> None:
    p = stages.add_parser("prepare", help="index a LLaVA JSON, check samples and images, derive sources")
    p.add_argument("data", type=Path, help="LLaVA-format JSON (list of samples)")
    _work(p)
    _prepare_options(p)

    def run(args):
        from ..select import pipeline

        pipeline.prepare(args.data, args.work, prepare_settings(args), args.force)

    p.set_defaults(func=_in_work(run))


def _features_parser(stages) -> None:
    p = stages.add_parser("features", help="CLIP embeddings and quality scores for every sample")
    _work(p)
    _features_options(p)
    add_engine_arguments(p, workers_flag="--ray-workers")

    def run(args):
        from ..select import pipeline

        if args.engine == "ray":
            from ..distributed.ray_select import features_ray

            features_ray(
                args.work, feature_settings(args), args.force, progress=not args.no_progress, **engine_options(args)
            )
            return
        pipeline.features(args.work, feature_settings(args), args.force)

    p.set_defaults(func=_in_work(run))


def _cluster_parser(stages) -> None:
    p = stages.add_parser("cluster", help="draw the random training subset and cluster it (spectral)")
    _work(p)
    _cluster_options(p)
    p.add_argument("--device", default="cpu", help="device of the kNN search: cpu, cuda or cuda:N (default cpu)")

    def run(args):
        from ..select import pipeline

        pipeline.cluster(args.work, cluster_settings(args), args.force)

    p.set_defaults(func=_in_work(run))


def _train_parser(stages) -> None:
    p = stages.add_parser("train", help="train the scorer together with the MLLM on the subset")
    _work(p)
    _train_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args):
        from ..select import pipeline

        pipeline.train(args.work, train_settings(args), args.force)

    p.set_defaults(func=_in_work(run))


def _score_parser(stages) -> None:
    p = stages.add_parser("score", help="score every sample with the trained scorer")
    _work(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _score_options(p)
    add_engine_arguments(p)

    def run(args):
        from ..select import pipeline

        if args.engine == "ray":
            from ..distributed.ray_select import score_ray

            opts = {k: v for k, v in engine_options(args).items() if k != "device"}
            score_ray(args.work, args.score_batch_size, args.device, args.force, **opts)
            return
        pipeline.score(args.work, args.score_batch_size, args.device, args.force)

    p.set_defaults(func=_in_work(run))


def _pick_parser(stages) -> None:
    p = stages.add_parser("pick", help="keep the lowest-scored samples and write the subset")
    _work(p, force=False)
    _pick_options(p)

    def run(args):
        from ..select import pipeline

        pipeline.pick(args.work, args.out, pick_settings(args))

    p.set_defaults(func=_in_work(run))


def _run_parser(stages) -> None:
    p = stages.add_parser("run", help="every stage in order, each skipped when already done")
    p.add_argument("data", type=Path, help="LLaVA-format JSON (list of samples)")
    _work(p)
    _prepare_options(p)
    _features_options(p)
    _cluster_options(p)
    _score_options(p)
    _pick_options(p)
    _train_options(p, mllm_required=False)

    def run(args):
        from ..select import pipeline

        train = train_settings(args) if args.mllm else None  # None: reuse train/scorer.pt
        pipeline.run(
            args.data,
            args.work,
            args.out,
            prepare_settings(args),
            feature_settings(args),
            cluster_settings(args),
            train,
            pick_settings(args),
            score_device=args.device,
            force=args.force,
            score_batch_size=args.score_batch_size,
        )

    p.set_defaults(func=_in_work(run))
