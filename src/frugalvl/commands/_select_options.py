"""The options of ``frugalvl select`` and its tools, generated from the stage settings dataclasses.

Shared by :mod:`.select` (the stages) and :mod:`.select_baselines` (``baseline`` takes ``pick``'s
options), so neither imports the other. Each option is a documented field of a settings class in
:mod:`frugalvl.select.settings` or :mod:`frugalvl.select.train_settings`; its destination carries the
stage's prefix (``features_batch_size``), because ``run`` gathers the options of every stage.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._settings import add_settings_options, build_settings, given

# destination prefixes: one per settings class (train's options keep their field names)
PREPARE, FEATURES, ENDPOINT, CLUSTER, SCORE, PICK, TRAIN = (
    "prepare_",
    "features_",
    "endpoint_",
    "cluster_",
    "score_",
    "pick_",
    "",
)


def in_work(run: Callable[[argparse.Namespace], Any], settings: Callable[[argparse.Namespace], Any] | None = None):
    """Wrap a stage: its settings are built first (a bad value ends here, before anything is touched),
    then its work folder is checked writable (before any model loads), locked for the run (one writer per
    work folder) and cleared of the temporaries a killed run left, then the stage runs. A run refused
    before it wrote anything removes the work folder it had just created."""

    def checked(args: argparse.Namespace):
        from ..errors import UserError
        from ..fileio import check_writable_dir, output_lock, remove_stale_temporaries

        if settings is not None:
            settings(args)
        check_writable_dir(args.work, option="-w", create=False)
        created = not Path(args.work).exists()
        try:
            with output_lock(args.work):
                remove_stale_temporaries(args.work, recursive=True)
                return run(args)
        except UserError:
            if created:
                with contextlib.suppress(OSError):
                    Path(args.work).rmdir()  # only when empty: the run wrote nothing
            raise

    return checked


def work_options(p: argparse.ArgumentParser, force: bool = True) -> None:
    p.add_argument("-w", "--work", required=True, type=Path, help="work folder holding every stage's results")
    if force:
        p.add_argument(
            "--force",
            action="store_true",
            help="recompute even if results exist (the old ones are replaced only when the new are complete)",
        )


# ---------------------------------------------------------------- option groups


def prepare_options(p: argparse.ArgumentParser) -> None:
    from ..select.settings import PrepareSettings

    add_settings_options(p.add_argument_group("prepare"), PrepareSettings, prefix=PREPARE)


def features_options(p: argparse.ArgumentParser) -> None:
    from ..select.settings import EndpointSettings, FeatureSettings

    g = p.add_argument_group("features")
    add_settings_options(g, FeatureSettings, prefix=FEATURES)
    add_settings_options(g, EndpointSettings, prefix=ENDPOINT)


def cluster_options(p: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
    from ..select.settings import ClusterSettings

    add_settings_options(p.add_argument_group("subset and clustering"), ClusterSettings, skip, prefix=CLUSTER)


def score_options(p: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
    from ..select.settings import ScoreSettings

    add_settings_options(p.add_argument_group("score"), ScoreSettings, skip, prefix=SCORE)


def pick_options(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    from ..select.settings import PickSettings

    g = p.add_argument_group("pick")
    add_settings_options(g, PickSettings, prefix=PICK)
    g.add_argument(
        "-o",
        "--out",
        type=Path,
        required=out_required,
        help="the selection in the input's format: a file for JSON inputs, a folder for tables and shards "
        "(several budgets: a folder of them)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o that no selection wrote (never the input or a work-folder file)",
    )


def train_options(p: argparse.ArgumentParser, mllm_required: bool = True, skip: Iterable[str] = ()) -> None:
    """Options of the coupled training. ``mllm_required=False`` for ``run``, where a scorer already
    trained in the work folder is reused."""
    from ..select.train_settings import TrainSettings

    g = p.add_argument_group("coupled training")
    add_settings_options(g, TrainSettings, skip, prefix=TRAIN, required=("mllm",) if mllm_required else ())


# ---------------------------------------------------------------- settings from arguments


def prepare_settings(args: argparse.Namespace):
    from ..select.settings import PrepareSettings

    return build_settings(PrepareSettings, given(args, PrepareSettings, prefix=PREPARE))


def feature_settings(args: argparse.Namespace):
    from ..select.settings import EndpointSettings, FeatureSettings

    endpoint = build_settings(EndpointSettings, given(args, EndpointSettings, prefix=ENDPOINT))
    return build_settings(FeatureSettings, {**given(args, FeatureSettings, prefix=FEATURES), "endpoint": endpoint})


def _on_features_device(args: argparse.Namespace, cls, prefix: str):
    """``cls`` from its options; without its own device (``run`` has none for the stage), the features'."""
    values = given(args, cls, prefix=prefix)
    device = getattr(args, FEATURES + "device", None)
    if "device" not in values and device is not None:
        values["device"] = device
    return build_settings(cls, values)


def cluster_settings(args: argparse.Namespace):
    """In ``run`` the kNN search uses the features' device (the cluster stage's own ``--device`` is not there)."""
    from ..select.settings import ClusterSettings

    return _on_features_device(args, ClusterSettings, CLUSTER)


def score_settings(args: argparse.Namespace):
    """In ``run`` the scorer uses the features' device."""
    from ..select.settings import ScoreSettings

    return _on_features_device(args, ScoreSettings, SCORE)


def pick_settings(args: argparse.Namespace):
    from ..select.settings import PickSettings
    from ..settings import FieldError

    values = given(args, PickSettings, prefix=PICK)
    for name in ("ratio", "count"):
        if isinstance(values.get(name), tuple):
            raise FieldError(name, "takes one value here (several budgets are for `select pick`)", PickSettings)
    return build_settings(PickSettings, values)


def pick_budget_settings(args: argparse.Namespace) -> list:
    """One PickSettings per budget given (``--ratio 0.05,0.1`` and/or ``--count 100,200``); one when a
    single value (or none) is given."""
    from ..select.selections import budgets_from
    from ..select.settings import PickSettings

    values = given(args, PickSettings, prefix=PICK)
    ratio, count = values.pop("ratio", None), values.pop("count", None)
    if not isinstance(ratio, tuple) and not isinstance(count, tuple):
        return [pick_settings(args)]
    base = build_settings(PickSettings, values)
    ratios = ratio if isinstance(ratio, tuple) else () if ratio is None else (ratio,)
    counts = count if isinstance(count, tuple) else () if count is None else (count,)
    return budgets_from(base, ratios, counts)  # a refused value is a FieldError, shown with its option


def train_settings(args: argparse.Namespace):
    """In ``run`` the progress bar follows the features' ``--no-progress``."""
    from ..select.train_settings import TrainSettings

    values = given(args, TrainSettings, prefix=TRAIN)
    progress = getattr(args, FEATURES + "progress", None)
    if "progress" not in values and progress is not None:
        values["progress"] = progress
    return build_settings(TrainSettings, values)
