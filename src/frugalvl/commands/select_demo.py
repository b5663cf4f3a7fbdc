"""``frugalvl select demo FOLDER``: the five-minute CoIDO tour (:mod:`frugalvl.select.demo`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register_demo(stages) -> None:
    """Add ``demo`` to the ``select`` sub-commands."""
    p = stages.add_parser(
        "demo",
        help="a five-minute first try: easy-VQA data, a tiny CLIP and a tiny LLaVA, every stage, the report",
        description="Write the easy-VQA sample as LLaVA data, a tiny random CLIP and a tiny random LLaVA "
        "under FOLDER, then run every stage (prepare, features, cluster, train, score, pick) and write the "
        "report. The models are random: the picks mean nothing, the stages and files are the real ones.",
    )
    p.add_argument("folder", type=Path, help="where the data, the models, the work folder and the outputs go")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..select.demo import run_tour

    start = time.perf_counter()
    files = run_tour(args.folder)
    print(f"done in {time.perf_counter() - start:.0f} s")
    print(f"data:      {files.data} (images under {files.image_root})")
    print(f"models:    {files.clip}, {files.mllm}")
    print(f"work:      {files.work}")
    print(f"selection: {files.selection}")
    print(f"report:    {files.report}")
    print("the same run with the stage commands:")
    print(f"  frugalvl select run {files.data} --image-root {files.image_root} -w {files.work} \\")
    print(
        f"    --clip {files.clip} --mllm {files.mllm} --clusters 4 --batch-size 8 --num-workers 0 -o {files.selection}"
    )
    print(f"  frugalvl select report {files.work}")
    return 0
