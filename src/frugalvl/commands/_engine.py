"""``--engine {local,ray}`` and its options, shared by ``segment`` and ``select features|score`` (docs/ray.md).

Only the option parsing lives here: Ray is imported by :mod:`frugalvl.distributed` when ``--engine ray``
is given, never otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

# how the Ray drivers' parameters are named in library messages (frugalvl.distributed), and their options
ENGINE_NAMES = {"ray_address": "--ray-address", "gpus_per_worker": "--gpus-per-worker"}  # also standing alone
ENGINE_KEYWORDS = {"engine": "--engine"}  # only as engine='ray'


def add_engine_arguments(parser: argparse.ArgumentParser, workers_flag: str = "--workers") -> None:
    """``workers_flag``: ``--ray-workers`` where ``--workers`` already means something else (select features)."""
    g = parser.add_argument_group("scale-out on Ray (pip install 'frugalvl[ray]', docs/ray.md)")
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: an actor pool on a Ray cluster",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join: auto (started with `ray start --head`), HOST:6379 or ray://HOST:10001 "
        "(default: $RAY_ADDRESS, else a local cluster for this run)",
    )
    g.add_argument(
        workers_flag,
        dest="ray_workers",
        type=_positive_int,
        default=None,
        help="actors in the pool, each with its own model (default: GPUs / --gpus-per-worker, else one per node)",
    )
    g.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs each actor holds, may be fractional, e.g. 0.5 (default: 1 with --device cuda/auto and "
        "a cluster with GPUs, else 0)",
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of the Ray drivers in :mod:`frugalvl.distributed`."""
    return {
        "ray_address": args.ray_address,
        "workers": args.ray_workers,
        "gpus_per_worker": args.gpus_per_worker,
        "device": getattr(args, "device", "cpu") or "cpu",
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of workers")
    return value
