"""``frugalvl select baseline NAME`` and ``frugalvl select compare A B ...``
(docs/methods/coido_baselines.md#baselines).

CLI glue only: the baselines live in :mod:`frugalvl.select.baselines`, the comparison in
:mod:`frugalvl.select.compare`. A baseline takes ``pick``'s budget and quota options and writes ``pick``'s
outputs (the LLaVA JSON at ``-o``, ids, report) under ``WORK/baseline-NAME/``. Its own options are the
fields of the baselines' settings (:mod:`frugalvl.select.baselines.settings`): a field several baselines
share is one option, whose help gives each baseline's default.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ._select_options import pick_options, pick_settings
from ._settings import build_settings, cli_fields, flag_of, given, shown_default

BASELINE = "baseline_"  # destination prefix of the baseline options


def register_select_tools(stages) -> None:
    """Add ``baseline`` and ``compare`` to the ``select`` sub-commands."""
    _baseline_parser(stages)
    _compare_parser(stages)


def baseline_names() -> tuple[str, ...]:
    from ..select.baselines import REGISTRY

    return tuple(REGISTRY)


def shared_fields() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Each option name -> the (baseline, field) pairs it sets, in the registry's order."""
    from ..select.baselines import settings_classes

    by_flag: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for name, cls in settings_classes().items():
        for f in cli_fields(cls):
            by_flag.setdefault(flag_of(f), []).append((name, f))
    return by_flag


def _baseline_options(p: argparse.ArgumentParser) -> None:
    """One option per field name across the baselines' settings; the help lists who uses it."""
    g = p.add_argument_group("baseline options (each applies to the baselines named; defaults = the published ones)")
    for flag, uses in shared_fields().items():
        parts: dict[str, list[str]] = {}  # text -> baselines, so baselines sharing a class share a line
        for name, f in uses:
            shown = shown_default(f)
            parts.setdefault(f"{f.metadata['help']} (default {shown})", []).append(name)
        help_text = "; ".join(f"{', '.join(names)}: {text}" for text, names in parts.items())
        first = uses[0][1]
        kwargs: dict[str, Any] = {"dest": BASELINE + first.name, "default": None, "help": help_text}
        choices = [c for _, f in uses for c in (f.metadata.get("choices") or ())]
        if choices:
            kwargs["choices"] = tuple(dict.fromkeys(choices))
        else:
            default = first.default
            kwargs["type"] = first.metadata.get("parse") or (type(default) if default is not None else str)
            kwargs["metavar"] = first.metadata.get("metavar") or first.name.split("_")[-1].upper()
        g.add_argument(flag, **kwargs)


def baseline_settings(name: str, args: argparse.Namespace) -> Any:
    """The settings of baseline ``name`` from the options given (the others keep its defaults)."""
    from ..select.baselines import settings_class

    cls = settings_class(name)
    return build_settings(cls, given(args, cls, prefix=BASELINE))  # a refused value names its option


def _baseline_parser(stages) -> None:
    names = baseline_names()
    p = stages.add_parser(
        "baseline",
        help="select with a baseline under the same budget and quotas as pick",
        description="Select with a baseline (docs/methods/coido_baselines.md#baselines) under pick's budget K and "
        "per-source quotas; writes pick's outputs under WORK/baseline-NAME/.",
    )
    p.add_argument("name", choices=names, help="the baseline")
    p.add_argument(
        "-w", "--work", required=True, type=Path, help="work folder of `frugalvl select` (prepare + features)"
    )
    pick_options(p)
    _baseline_options(p)

    def run(args):
        import contextlib

        from ..fileio import output_lock, remove_stale_temporaries
        from ..select.baselines import run_baseline

        pick, settings = pick_settings(args), baseline_settings(args.name, args)
        held = output_lock(args.work) if Path(args.work).is_dir() else contextlib.nullcontext()  # one writer
        with held:
            remove_stale_temporaries(args.work, recursive=True)
            report = run_baseline(args.name, args.work, args.out, pick, settings, overwrite=args.overwrite)
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
    p.add_argument("--overwrite", action="store_true", help="replace files in --out-dir that no comparison wrote")

    def run(args):
        from ..select.compare import compare, format_table

        result = compare(args.work, args.selections, args.out_dir, overwrite=args.overwrite)
        print(format_table(result))
        print("\nwritten: " + ", ".join(result["written"]))

    p.set_defaults(func=run)
