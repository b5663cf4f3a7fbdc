"""``frugalvl train-upsampler``: train a SimFeatUp JBU upsampler for any ViT CLIP on unlabeled images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from ._settings import add_settings_options, build_settings, given

# Settings shown under "checkpoints and speed"; the others are the recipe's.
RUN_FIELDS = ("checkpoint_every", "keep_checkpoints", "precision", "workers")
RECIPE_FIELDS = (
    "steps",
    "batch_size",
    "lr",
    "crop_size",
    "n_jitters",
    "projection_dim",
    "img_weight",
    "upsampler",
    "radius",
    "last_block",
    "normalisation",
    "seed",
)


def register(subparsers: Any) -> None:
    from ..models.defaults import DEFAULT_CLIP
    from ..train.settings import UpsamplerTrainSettings

    p = subparsers.add_parser(
        "train-upsampler",
        help="train a SimFeatUp upsampler for a CLIP from unlabeled images",
        description="Learn the JBU-One feature upsampler of SegEarth-OV for any ViT CLIP (RemoteCLIP, GeoRSCLIP, "
        "open_clip models) from unlabeled images, with the official SimFeatUp recipe. The result loads "
        "with 'frugalvl segment --upsampler FILE'. On several GPUs or nodes run it under a launcher, e.g. "
        "'accelerate launch --num_processes 2 -m frugalvl train-upsampler ...' (--batch-size is per process).",
    )
    p.add_argument(
        "--images",
        required=True,
        nargs="+",
        metavar="DIR_OR_LIST",
        help="folders of images (searched recursively), image files, or text files listing one image path per line",
    )
    p.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help=f"CLIP: open_clip name[:tag] (default {DEFAULT_CLIP}, OpenAI weights), hf-hub:ORG/REPO, an OpenAI-format .pt file, or ARCH:FILE",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="UPSAMPLER.ckpt",
        help="the trained upsampler, in the official checkpoint layout",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda or cuda:N (default auto); under accelerate launch or torchrun "
        "each process takes cuda:LOCAL_RANK (or the CPU with --device cpu)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o file that this trainer did not write (never an input)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    recipe = p.add_argument_group("recipe (defaults: the official SimFeatUp settings)")
    add_settings_options(recipe, UpsamplerTrainSettings, skip=RUN_FIELDS)
    run = p.add_argument_group("checkpoints and speed")
    run.add_argument(
        "--checkpoint-dir",
        help="folder of resumable checkpoints and log.jsonl (default: OUTPUT's stem + '_train' beside it)",
    )
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    add_settings_options(run, UpsamplerTrainSettings, skip=RECIPE_FIELDS)
    p.set_defaults(func=run_command)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The settings' defaults, overridden by the options given (``--projection-dim 0``: all channels)."""
    from ..train.settings import UpsamplerTrainSettings

    values = given(args, UpsamplerTrainSettings)
    if values.get("projection_dim") == 0:
        values["projection_dim"] = None
    return build_settings(UpsamplerTrainSettings, values)


def run_command(args: argparse.Namespace) -> int:
    import contextlib

    from ..fileio import check_output, check_writable_dir, output_lock, remove_stale_temporaries
    from ..train.checkpoints import default_checkpoint_dir
    from ..train.distributed import init_ranks
    from ..train.images import list_training_images
    from ..train.settings import check_settings

    settings = settings_from_args(args)
    check_settings(settings)  # before the slow part; the patch size is checked once the CLIP is loaded
    images = list_training_images(args.images)
    output = Path(args.output)
    if output.is_dir():
        raise UserError(f"-o {output} is a folder: give the path of the .ckpt file to write")
    check_writable_dir(output.parent or Path("."), option="-o (its folder)")
    check_output(output, training_inputs(args, images), trained_outputs(output), args.overwrite, "output")
    ranks = init_ranks(args.device)  # one process unless started by accelerate launch / torchrun
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir is not None else default_checkpoint_dir(output)
    with contextlib.ExitStack() as held:
        if ranks.is_main:  # one writer per folder: the output's and the checkpoints' (the other ranks are this run)
            for locked in dict.fromkeys([output.parent.absolute(), folder.absolute()]):
                held.enter_context(output_lock(locked))
                remove_stale_temporaries(locked)
        return _train(args, ranks, settings, images, output)


def _train(args: argparse.Namespace, ranks: Any, settings: Any, images: list[Path], output: Path) -> int:
    from ..devices import resolve_device
    from ..models.clip import load_clip
    from ..train.loop import summary_line, train_upsampler

    device = ranks.device if ranks.world > 1 else resolve_device(args.device)
    clip = load_clip(args.clip, device=device)
    summary = train_upsampler(
        clip,
        images,
        output,
        settings,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        progress=not args.no_progress,
        report=_note,
        ranks=ranks,
    )
    if ranks.is_main:
        print(f"{summary_line(summary)}: use it with frugalvl segment --upsampler {summary.output}")
    return 0


def training_inputs(args: argparse.Namespace, images: list[Path]) -> list[Path]:
    """Every file the training reads: the image files and lists given, the images found, a local CLIP."""
    given = [Path(s).expanduser() for s in args.images]
    clip = [Path(args.clip).expanduser(), Path(str(args.clip).split(":", 1)[-1]).expanduser()]
    return [p for p in [*given, *images, *clip] if p.is_file()]


def trained_outputs(output: Path) -> list[Path]:
    """``[output]`` when it is an upsampler this trainer wrote (then a new training may replace it)."""
    from ..train.checkpoints import is_trained_upsampler

    return [output] if output.is_file() and is_trained_upsampler(output) else []


def _note(message: str) -> None:
    """Notes during training (skipped images, resumption) on stderr, above the progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
