"""``frugalvl select finetune SUBSET.json`` (LoRA fine-tuning, docs/methods/coido_finetune.md) and
``frugalvl select report WORK`` (one HTML page about a selection): CLI glue over :mod:`frugalvl.select.finetune` and
:mod:`frugalvl.select.report`.

``register_finetune_tools(stages)`` adds both to the ``select`` sub-commands.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from dataclasses import fields
from pathlib import Path

from ..errors import UserError
from ._types import nonnegative_float, nonnegative_int, positive_float, positive_int, probability

FLAG_FREE = ("progress", "tf32", "gradient_checkpointing", "group_by_modality")  # --no-... switches


def register_finetune_tools(stages) -> None:
    """Add ``finetune`` and ``report`` to the ``select`` sub-commands."""
    _finetune_parser(stages)
    _report_parser(stages)


# ---------------------------------------------------------------- finetune


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    from ..precision import PRECISIONS
    from ..select.finetune import MERGE_DTYPES, FinetuneSettings

    d = FinetuneSettings()
    p.add_argument("data", type=Path, help="the selected subset, a LLaVA-format JSON (`frugalvl select pick -o`)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder: checkpoints, adapter/, merged/")
    p.add_argument(
        "--mllm",
        required=True,
        help="base LLaVA: llava-hf folder, hub id, or lm=VICUNA_DIR,"
        "projector=mm_projector.bin,vision=CLIP_DIR (the paper's start)",
    )
    p.add_argument(
        "--image-root", help="folder the records' 'image' paths are relative to (default: the JSON's folder)"
    )
    g = p.add_argument_group("LLaVA-1.5 LoRA recipe (defaults = finetune_lora.sh)")
    g.add_argument("--lora-r", type=positive_int, default=d.lora_r)
    g.add_argument("--lora-alpha", type=positive_int, default=d.lora_alpha)
    g.add_argument("--lora-dropout", type=probability, default=d.lora_dropout)
    g.add_argument("--lr", type=positive_float, default=d.lr, help=f"LoRA learning rate (default {d.lr})")
    g.add_argument(
        "--projector-lr",
        type=positive_float,
        default=d.projector_lr,
        help=f"projector learning rate (default {d.projector_lr})",
    )
    g.add_argument("--weight-decay", type=nonnegative_float, default=d.weight_decay)
    g.add_argument("--warmup-ratio", type=probability, default=d.warmup_ratio)
    g.add_argument("--epochs", type=positive_int, default=d.epochs)
    g.add_argument(
        "--global-batch",
        type=positive_int,
        default=d.global_batch,
        help="effective batch = per-device batch × accumulation × processes (default 128)",
    )
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="per device (default 16)")
    g.add_argument("--max-grad-norm", type=nonnegative_float, default=d.max_grad_norm, help="0 disables clipping")
    g.add_argument("--max-length", type=positive_int, default=d.max_length)
    g.add_argument("--image-aspect-ratio", choices=("pad", "resize"), default=d.image_aspect_ratio)
    g.add_argument("--no-group-by-modality", dest="group_by_modality", action="store_false")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="auto = bf16 on a GPU, fp32 on CPU")
    g.add_argument("--no-tf32", dest="tf32", action="store_false")
    g.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    g.add_argument("--seed", type=int, default=d.seed)
    r = p.add_argument_group("run")
    r.add_argument("--deepspeed", help="zero2 | zero3 (configs shipped with frugalvl) | a DeepSpeed JSON file")
    r.add_argument(
        "--num-processes",
        type=positive_int,
        default=1,
        help="processes (GPUs); above 1 the run is started through --launcher",
    )
    r.add_argument("--launcher", choices=("accelerate", "torchrun"), default="accelerate")
    r.add_argument("--main-process-port", type=positive_int, help="rendezvous port of the launched processes")
    r.add_argument("--dry-run", action="store_true", help="print the launch command instead of running it")
    r.add_argument(
        "--save-steps", type=nonnegative_int, default=d.save_steps, help="checkpoint every N steps (0: never)"
    )
    r.add_argument("--keep-checkpoints", type=nonnegative_int, default=d.keep_checkpoints)
    r.add_argument("--num-workers", type=nonnegative_int, default=d.num_workers, help="image-loading processes")
    r.add_argument("--no-progress", dest="progress", action="store_false")
    r.add_argument("--merge", action="store_true", help="also write OUT/merged: a plain LlavaForConditionalGeneration")
    r.add_argument(
        "--merge-dtype", choices=MERGE_DTYPES, default="auto", help="weights of the merged model (auto = the base's)"
    )
    r.add_argument("--force", action="store_true", help="start over: delete OUT's checkpoints and results")


def finetune_settings(args: argparse.Namespace):
    from ..select.finetune import FinetuneSettings

    names = {f.name for f in fields(FinetuneSettings)}
    return FinetuneSettings(**{k: v for k, v in vars(args).items() if k in names})


def finetune_argv(args: argparse.Namespace) -> list[str]:
    """The finetune arguments of ``args`` as a command line (without the launch options), for the
    launched processes; every setting is written out, so they all see the same values."""
    from ..select.finetune import FinetuneSettings

    argv = [str(args.data), "-o", str(args.out), "--mllm", args.mllm]
    for f in fields(FinetuneSettings):
        value = getattr(args, f.name)
        if f.name in ("mllm",) or value is None:
            continue
        if f.name in FLAG_FREE:
            argv += [] if value else [f"--no-{f.name.replace('_', '-')}"]
        else:
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
    argv += (
        ["--merge-dtype", args.merge_dtype] + (["--merge"] if args.merge else []) + (["--force"] if args.force else [])
    )
    return argv


def _finetune_parser(stages) -> None:
    p = stages.add_parser(
        "finetune",
        help="LoRA fine-tuning of LLaVA-1.5 on a selected subset (LLaVA-1.5 recipe)",
        description="LLaVA-1.5's LoRA recipe on a subset JSON: one device, or several through "
        "accelerate launch (--num-processes), optionally with DeepSpeed ZeRO-2/3. "
        "Resumes from OUT's newest checkpoint.",
    )
    add_finetune_arguments(p)
    p.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from ..select import finetune as F

    settings = finetune_settings(args)
    F.check_settings(settings)
    if args.num_processes > 1 and not F.in_launched_process():
        cmd = F.launch_command(finetune_argv(args), args.num_processes, args.launcher, port=args.main_process_port)
        print(shlex.join(cmd))
        if args.dry_run:
            return 0
        return subprocess.call(cmd)
    if args.dry_run:
        raise UserError("--dry-run prints the launch command of a run with --num-processes 2 or more")
    adapter = F.finetune(
        args.data, args.out, settings, merge=args.merge, force=args.force, merge_dtype=args.merge_dtype
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"adapter: {adapter}")
    if args.merge:
        print(f"merged model: {Path(args.out) / 'merged'}")
    return 0


# ---------------------------------------------------------------- report


def _report_parser(stages) -> None:
    from ..select.report import ReportSettings

    d = ReportSettings()
    p = stages.add_parser(
        "report",
        help="one self-contained HTML page about a work folder's selection",
        description="r histogram per source, selected/rejected share per source and per cluster, "
        "and the lowest- and highest-scored samples, in one HTML file.",
    )
    p.add_argument("work", type=Path, nargs="?", help="the work folder of `frugalvl select`")
    p.add_argument("-w", "--work", dest="work_opt", type=Path, help="the work folder (same as the positional)")
    p.add_argument("-o", "--out", type=Path, help="HTML file to write (default WORK/report.html)")
    p.add_argument(
        "--selection", type=Path, help="selected_ids.npy or selected_ids.txt (default WORK/pick/selected_ids.npy)"
    )
    p.add_argument(
        "--gallery", type=positive_int, default=d.gallery, help="lowest and highest samples shown (default 24)"
    )
    p.add_argument("--title", default=d.title)
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..select.report import ReportSettings, write_report

    work = args.work or args.work_opt
    if work is None:
        raise UserError("no work folder: give it as `frugalvl select report WORK`")
    out = write_report(work, args.out, args.selection, ReportSettings(gallery=args.gallery, title=args.title))
    print(out)
    return 0
