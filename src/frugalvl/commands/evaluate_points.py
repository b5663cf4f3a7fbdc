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
    import json
    from pathlib import Path

    from ..evaluate.points import evaluate_points
    from ..fileio import check_outputs, write_json, writing_into

    result = evaluate_points(args.points, truth_property=args.truth_property)
    print(result.report())
    out = Path(args.outdir) / "points"
    path = out / f"{result.cloud.stem}.json"
    with writing_into(out, option="-o"):
        try:
            ours = {"cloud", "points", "mIoU"} <= set(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            ours = False
        check_outputs([path], [args.points], [path] if ours else [], args.overwrite, claim=True)
        write_json(path, result.as_json())
    print(f"\nresults: {path}")
    return 0
