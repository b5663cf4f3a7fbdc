"""``frugalvl select baseline NAME`` and ``frugalvl select compare A B ...``
(docs/methods/coido_baselines.md#baselines).

CLI glue only: the baselines live in :mod:`frugalvl.select.baselines`, the comparison in
:mod:`frugalvl.select.compare`. A baseline takes ``pick``'s budget and quota options and writes ``pick``'s
outputs (the LLaVA JSON at ``-o``, ids, report) under ``WORK/baseline-NAME/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BASELINE_NAMES = (
    "random",
    "clip-score",
    "semdedup",
    "d2-pruning",
    "self-filter",
    "el2n",
    "perplexity",
    "coincide-lite",
)


def register_select_tools(stages) -> None:
    """Add ``baseline`` and ``compare`` to the ``select`` sub-commands."""
    _baseline_parser(stages)
    _compare_parser(stages)


def _baseline_options(p: argparse.ArgumentParser) -> None:
    from .select import AT_LEAST_1, POSITIVE

    g = p.add_argument_group("baseline options (each applies to the baselines named; defaults = the published ones)")
    g.add_argument(
        "--seed", type=int, help="random: seed of the draw; semdedup, coincide-lite: k-means seed (default 42)"
    )
    g.add_argument("--score", help="clip-score: which scaled score to rank by (default clipscore)")
    g.add_argument(
        "--clusters",
        type=AT_LEAST_1,
        help="semdedup, coincide-lite: k-means centroids (default ceil(N/66): 10,000 for 665K)",
    )
    g.add_argument(
        "--difficulty",
        choices=("clipscore", "ce", "r"),
        help="d2-pruning: node difficulty: CLIP score, stage-1 CE of --reference, or -r of the scorer "
        "(default clipscore)",
    )
    g.add_argument(
        "--k", dest="k", type=AT_LEAST_1, help="d2-pruning: kNN (default 5); self-filter: neighbours (default 10)"
    )
    g.add_argument(
        "--gamma", type=POSITIVE, help="d2-pruning: message decay (default 0.4); self-filter: penalty (default 1)"
    )
    g.add_argument(
        "--band",
        choices=("top", "middle", "bottom"),
        help="el2n, perplexity: the band of values kept (default top for el2n, middle for perplexity)",
    )
    g.add_argument(
        "--reference",
        help="el2n, perplexity, d2-pruning --difficulty ce, self-filter: reference LLaVA "
        "(folder or hub id; default WORK/train/mllm, written by "
        "`select train --save-mllm`)",
    )
    g.add_argument(
        "--scorer",
        type=Path,
        help="self-filter: a scorer.pt trained with `select train --loss importance` "
        "(default: fit a linear scorer here with L_I on --reference's CE)",
    )
    g.add_argument("--train-on", choices=("subset", "full"), help="self-filter: fit on S (default) or every sample")
    g.add_argument("--temperature", type=POSITIVE, help="coincide-lite: T of the budget softmax (default 0.1)")
    g.add_argument("--device", help="reference model / scorer device: cpu, cuda or cuda:N (default cpu)")
    g.add_argument("--batch-size", type=AT_LEAST_1, help="reference model forward batch (default 4)")


def _baseline_parser(stages) -> None:
    from .select import _pick_options

    p = stages.add_parser(
        "baseline",
        help="select with a baseline under the same budget and quotas as pick",
        description="Select with a baseline (docs/methods/coido_baselines.md#baselines) under pick's budget K and per-source "
        "quotas; writes pick's outputs under WORK/baseline-NAME/.",
    )
    p.add_argument("name", choices=BASELINE_NAMES, help="the baseline")
    p.add_argument(
        "-w", "--work", required=True, type=Path, help="work folder of `frugalvl select` (prepare + features)"
    )
    _pick_options(p)
    _baseline_options(p)

    def run(args):
        from ..select.baselines import make_settings, run_baseline
        from .select import pick_settings

        options = {
            "seed": args.seed,
            "score": args.score,
            "clusters": args.clusters,
            "difficulty": args.difficulty,
            "k": args.k,
            "gamma": args.gamma,
            "band": args.band,
            "reference": args.reference,
            "scorer": None if args.scorer is None else str(args.scorer),
            "train_on": args.train_on,
            "temperature": args.temperature,
            "device": args.device,
            "batch_size": args.batch_size,
        }
        report = run_baseline(args.name, args.work, args.out, pick_settings(args), make_settings(args.name, options))
        print(f"{args.name}: {report['n_selected']} of {report['n_samples']} samples -> {report['out']}")
        print(f"per source: {report['selected_per_source']}")
        print(f"ids and report in {Path(args.work) / ('baseline-' + args.name)}")

    p.set_defaults(func=run)


def _compare_parser(stages) -> None:
    p = stages.add_parser(
        "compare",
        help="overlap, composition and score distributions of two or more selections",
        description="Compare selections of one work folder: Jaccard overlap, per-source and "
        "per-cluster composition, score distributions; writes compare.json and "
        "compare.png.",
    )
    p.add_argument(
        "selections",
        nargs="+",
        help="pick, a baseline name (WORK/baseline-NAME), or a folder with selected_ids.npy (two or more)",
    )
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder the selections were made from")
    p.add_argument("--out-dir", type=Path, help="where compare.json and compare.png go (default WORK/compare)")

    def run(args):
        from ..select.compare import compare, format_table

        result = compare(args.work, args.selections, args.out_dir)
        print(format_table(result))
        print("\nwritten: " + ", ".join(result["written"]))

    p.set_defaults(func=run)
