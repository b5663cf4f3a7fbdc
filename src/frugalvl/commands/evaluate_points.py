"""``frugalvl evaluate --points CLOUD``: the 3D metric (per-class IoU, mIoU) of a labelled point cloud."""

from __future__ import annotations

import argparse
from typing import Any


def add_points_arguments(group: Any) -> None:
    group.add_argument(
        "--truth-property",
        default="class",
        help="with --points: the vertex property holding the truth (default class; STPLS3D's fine ids are mapped)",
    )


def run_points(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluate.points import evaluate_points
    from ..fileio import check_writable_dir, write_json

    result = evaluate_points(args.points, truth_property=args.truth_property)
    print(result.report())
    out = check_writable_dir(Path(args.outdir) / "points", option="-o")
    write_json(out / f"{result.cloud.stem}.json", result.as_json())
    print(f"\nresults: {out / (result.cloud.stem + '.json')}")
    return 0
