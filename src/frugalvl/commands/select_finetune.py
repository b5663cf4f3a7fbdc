"""``frugalvl select finetune SUBSET`` (LoRA fine-tuning, docs/methods/coido_finetune.md) and ``frugalvl select report WORK``
(one HTML page about a selection): CLI glue over :mod:`frugalvl.train.finetune` and
:mod:`frugalvl.select.report`.

``register_finetune_tools(stages)`` adds both to the ``select`` sub-commands. The fine-tuning
options are generated from :class:`~frugalvl.train.finetune.settings.FinetuneSettings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

from ..errors import UserError
from ._settings import add_settings_options, build_settings, flag_of, given
from ._types import positive_int

# the recipe's fields; the others are shown under "run"
RECIPE_FIELDS = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lr",
    "projector_lr",
    "weight_decay",
    "warmup_ratio",
    "epochs",
    "global_batch",
    "batch_size",
    "max_grad_norm",
    "max_length",
    "image_aspect_ratio",
    "group_by_modality",
    "precision",
    "tf32",
    "gradient_checkpointing",
    "seed",
)
RUN_FIELDS = ("deepspeed", "save_steps", "keep_checkpoints", "num_workers", "progress")


def register_finetune_tools(stages) -> None:
    """Add ``finetune`` and ``report`` to the ``select`` sub-commands."""
    _finetune_parser(stages)
    _report_parser(stages)


# ---------------------------------------------------------------- finetune


def _field(name: str) -> dataclasses.Field:
    from ..train.finetune.settings import FinetuneSettings

    return next(f for f in dataclasses.fields(FinetuneSettings) if f.name == name)


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.finetune.deepspeed import LAUNCHERS
    from ..train.finetune.merge import MERGE_DTYPES
    from ..train.finetune.settings import FinetuneSettings

    p.add_argument(
        "data",
        type=Path,
        help="the selected subset as `frugalvl select pick -o` wrote it: LLaVA JSON, JSON lines, ShareGPT, "
        "a Parquet or save_to_disk folder, or WebDataset shards",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder: checkpoints, adapter/, merged/")
    p.add_argument("--mllm", required=True, help=_field("mllm").metadata["help"])
    add_settings_options(p, FinetuneSettings, skip=("mllm", *RECIPE_FIELDS, *RUN_FIELDS))  # --image-root
    g = p.add_argument_group("LLaVA-1.5 LoRA recipe (defaults = finetune_lora.sh)")
    add_settings_options(g, FinetuneSettings, skip=("mllm", "image_root", *RUN_FIELDS))
    r = p.add_argument_group("run")
    add_settings_options(r, FinetuneSettings, skip=("mllm", "image_root", *RECIPE_FIELDS))
    r.add_argument(
        "--num-processes",
        type=positive_int,
        default=1,
        help="processes (GPUs); above 1 the run is started through --launcher",
    )
    r.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="accelerate",
        help="what starts the processes when --num-processes is above 1 (default accelerate)",
    )
    r.add_argument("--main-process-port", type=positive_int, help="rendezvous port of the launched processes")
    r.add_argument("--dry-run", action="store_true", help="print the launch command instead of running it")
    r.add_argument("--merge", action="store_true", help="also write OUT/merged: a plain LlavaForConditionalGeneration")
    r.add_argument(
        "--merge-dtype", choices=MERGE_DTYPES, default="auto", help="weights of the merged model (auto = the base's)"
    )
    r.add_argument("--force", action="store_true", help="start over: delete OUT's checkpoints and results")


def finetune_settings(args: argparse.Namespace):
    """The settings of the options given (the others keep the recipe's defaults)."""
    from ..train.finetune.settings import FinetuneSettings

    return build_settings(FinetuneSettings, given(args, FinetuneSettings))


def finetune_argv(args: argparse.Namespace) -> list[str]:
    """The finetune arguments of ``args`` as a command line (without the launch options), for the
    launched processes; every setting is written out, so they all see the same values."""
    from ..train.finetune.settings import FinetuneSettings

    settings = finetune_settings(args)
    argv = [str(args.data), "-o", str(args.out), "--mllm", settings.mllm]
    for f in dataclasses.fields(FinetuneSettings):
        value = getattr(settings, f.name)
        if f.name == "mllm" or value is None:
            continue
        if isinstance(f.default, bool):
            argv += [] if value == f.default else [flag_of(f)]
        else:
            argv += [flag_of(f), str(value)]
    argv += (
        ["--merge-dtype", args.merge_dtype] + (["--merge"] if args.merge else []) + (["--force"] if args.force else [])
    )
    return argv


def _finetune_parser(stages) -> None:
    p = stages.add_parser(
        "finetune",
        help="LoRA fine-tuning of LLaVA-1.5 on a selected subset (LLaVA-1.5 recipe)",
        description="LLaVA-1.5's LoRA recipe on a selected subset (any format pick writes): one device, or several through "
        "accelerate launch (--num-processes), optionally with DeepSpeed ZeRO-2/3. "
        "Resumes from OUT's newest checkpoint.",
    )
    add_finetune_arguments(p)
    p.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from ..select.accelerate_state import SettingsChanged
    from ..train.finetune.deepspeed import in_launched_process, launch_command
    from ..train.finetune.loop import finetune
    from ..train.finetune.settings import check_settings

    settings = finetune_settings(args)
    check_settings(settings)
    if args.num_processes > 1 and not in_launched_process():
        cmd = launch_command(finetune_argv(args), args.num_processes, args.launcher, port=args.main_process_port)
        print(shlex.join(cmd))
        if args.dry_run:
            return 0
        return subprocess.call(cmd)
    if args.dry_run:
        raise UserError("--dry-run prints the launch command of a run with --num-processes 2 or more")
    try:
        adapter = finetune(
            args.data, args.out, settings, merge=args.merge, force=args.force, merge_dtype=args.merge_dtype
        )
    except SettingsChanged as exc:
        raise UserError(
            f"{exc.where} was made with other settings ({', '.join(exc.changed)}): rerun with the same ones, "
            f"or pass --force to start over in {args.out}"
        ) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"adapter: {adapter}")
    if args.merge:
        print(f"merged model: {Path(args.out) / 'merged'}")
    return 0


# ---------------------------------------------------------------- report


def _report_parser(stages) -> None:
    from ..select.report import ReportSettings

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
    add_settings_options(p, ReportSettings)  # --gallery, --title
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o that no report wrote")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..select.report import ReportSettings, write_report

    work = args.work or args.work_opt
    if work is None:
        raise UserError("no work folder: give it as `frugalvl select report WORK`")
    settings = build_settings(ReportSettings, given(args, ReportSettings))
    out = write_report(work, args.out, args.selection, settings, overwrite=args.overwrite)
    print(out)
    return 0
