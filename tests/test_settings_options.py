"""Options generated from settings dataclasses, and field errors shown as the options that set them.

Every documented field (``option()`` metadata, ``cli`` on) of the settings a command is built from must
appear in that command's ``--help`` with its default, so a default is written once (in the dataclass)
and shown where users read it. A :class:`~frugalvl.settings.FieldError` reads with field names from the
library and with flags from the command line.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from frugalvl.cli import main
from frugalvl.commands._settings import cli_fields, flag_for, flag_of, render_error, shown_default
from frugalvl.errors import UserError
from frugalvl.select.baselines import settings_classes
from frugalvl.select.report import ReportSettings
from frugalvl.select.settings import (
    ClusterSettings,
    EndpointSettings,
    FeatureSettings,
    PickSettings,
    PrepareSettings,
    ScoreSettings,
)
from frugalvl.select.train_settings import TrainSettings
from frugalvl.settings import FieldError
from frugalvl.train.settings import UpsamplerTrainSettings

STAGES = {
    ("select", "prepare"): (PrepareSettings,),
    ("select", "features"): (FeatureSettings, EndpointSettings),
    ("select", "cluster"): (ClusterSettings,),
    ("select", "score"): (ScoreSettings,),
    ("select", "pick"): (PickSettings,),
    ("select", "train"): (TrainSettings,),
    ("select", "report"): (ReportSettings,),
    ("train-upsampler",): (UpsamplerTrainSettings,),
}
# run: every stage's options once; the cluster and score stages use the features' --device, train its --no-progress
RUN = [(c, ()) for c in (PrepareSettings, FeatureSettings, EndpointSettings, PickSettings)] + [
    (ClusterSettings, ("device",)),
    (ScoreSettings, ("device",)),
    (TrainSettings, ("progress", "mllm")),
]


def help_of(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option: no wrapping inside a default
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def option_lines(text: str) -> dict[str, str]:
    """Each option's flag -> its help (argparse puts it on the next line after a long option)."""
    lines: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s+(-\w, )?(--[a-z0-9-]+)", line)
        if m:
            current = m.group(2)
            lines[current] = line
        elif current and line.startswith("     "):
            lines[current] += " " + line.strip()
        else:
            current = None
    return lines


def expect_documented(lines: dict[str, str], cls: type, skip=(), required=("mllm",)) -> None:
    for f in cli_fields(cls, skip):
        flag = flag_of(f)
        assert flag in lines, f"{cls.__name__}.{f.name}: {flag} is not in --help"
        shown = shown_default(f)
        if shown is not None and f.name not in required:  # switches say what they change instead
            assert f"(default {shown})" in lines[flag], (f.name, lines[flag])


@pytest.mark.parametrize("argv", list(STAGES), ids=" ".join)
def test_every_documented_field_is_an_option_showing_its_default(argv, capsys, monkeypatch):
    lines = option_lines(help_of(capsys, monkeypatch, *argv))
    for cls in STAGES[argv]:
        expect_documented(lines, cls)


def test_run_offers_every_stage_option_once(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch, "select", "run")
    lines = option_lines(text)
    for cls, skip in RUN:
        expect_documented(lines, cls, skip)
    assert "(default none)" in lines["--mllm"]  # optional here: none reuses the trained scorer


def test_hand_checked_defaults_in_help(capsys, monkeypatch):
    """A few defaults read off the paper's recipes, independently of the dataclasses."""
    lines = option_lines(help_of(capsys, monkeypatch, "select", "run"))
    for flag, default in {
        "--clip": "ViT-L-14",
        "--clusters": "20",
        "--knn": "30",
        "--subset-ratio": "0.2",
        "--ratio": "0.2",
        "--lr": "2e-05",
        "--batch-size": "16",
        "--score-batch-size": "256",
        "--clip-batch-size": "64",
    }.items():
        assert f"(default {default}" in lines[flag], lines[flag]
    up = option_lines(help_of(capsys, monkeypatch, "train-upsampler"))
    assert "(default 224)" in up["--crop-size"] and "(default 5)" in up["--jitters"]


def test_baseline_options_give_each_baselines_default(capsys, monkeypatch):
    lines = option_lines(help_of(capsys, monkeypatch, "select", "baseline"))
    for name, cls in settings_classes().items():
        for f in cli_fields(cls):
            line = lines[flag_of(f)]
            assert name in line and f"(default {shown_default(f)})" in line, (name, f.name, line)
    assert "d2-pruning: kNN (default 5); self-filter: neighbours (default 10)" in lines["--k"]


# ---------------------------------------------------------------- field errors


def test_field_error_names_fields_for_the_library_and_flags_for_the_cli():
    plain = FieldError("n_clusters", "must be at least 1, got 0", ClusterSettings)
    assert str(plain) == "n_clusters must be at least 1, got 0"
    assert render_error(plain) == "--clusters must be at least 1, got 0"  # the field's own flag
    placed = FieldError(("ratio", "count"), "cannot pick 9 samples; lower {ratio} or give {count}", PickSettings)
    assert str(placed) == "cannot pick 9 samples; lower ratio or give count"
    assert render_error(placed) == "cannot pick 9 samples; lower --ratio or give --count"
    loose = FieldError("force", "recompute them with {force}")  # no settings class: the parameter's name
    assert render_error(loose) == "recompute them with --force"
    assert isinstance(plain, UserError) and isinstance(plain, ValueError)
    assert render_error(UserError("plain text")) == "plain text"


def test_flag_for_reads_the_metadata():
    assert flag_for(FeatureSettings, "batch_size") == "--clip-batch-size"
    assert flag_for(EndpointSettings, "base_url") == "--text-endpoint"
    assert flag_for(TrainSettings, "gradient_checkpointing") == "--no-gradient-checkpointing"
    assert flag_for(PickSettings, "mode") == "--global"
    assert flag_for(None, "checkpoint_dir") == "--checkpoint-dir"


@pytest.mark.parametrize(
    "cls,bad,field",
    [
        (ClusterSettings, {"ratio": 1.5}, "ratio"),
        (ClusterSettings, {"knn": 0}, "knn"),
        (ClusterSettings, {"solver": "magic"}, "solver"),
        (PickSettings, {"count": -5}, "count"),
        (PickSettings, {"ratio": 0.0}, "ratio"),
        (ScoreSettings, {"batch_size": 0}, "batch_size"),
        (FeatureSettings, {"workers": -1}, "workers"),
        (FeatureSettings, {"imagereward": "maybe"}, "imagereward"),
        (EndpointSettings, {"concurrency": 0}, "concurrency"),
        (PrepareSettings, {"missing_images": "ignore"}, "missing_images"),
        (TrainSettings, {"lr": float("nan")}, "lr"),
        (TrainSettings, {"warmup_ratio": 2.0}, "warmup_ratio"),
        (TrainSettings, {"loss": "nonsense"}, "loss"),
        (TrainSettings, {"lam": -1.0}, "lam"),
        (UpsamplerTrainSettings, {"crop_size": 0}, "crop_size"),
        (UpsamplerTrainSettings, {"normalisation": "z"}, "normalisation"),
        (ReportSettings, {"gallery": 0}, "gallery"),
    ],
)
def test_settings_refuse_naming_the_field(cls, bad, field):
    with pytest.raises(FieldError) as err:
        cls(**bad)
    assert err.value.field == field and str(err.value).startswith(f"{field} ")
    assert render_error(err.value).startswith(flag_for(cls, field) + " ")


def test_every_settings_default_is_valid():
    for cls in (*{c for classes in STAGES.values() for c in classes}, *settings_classes().values()):
        cls()  # no FieldError
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls


def test_pick_count_below_one_never_names_the_ratio():
    with pytest.raises(FieldError) as err:
        PickSettings(count=-5, ratio=0.0)
    assert "--count" in render_error(err.value) and "ratio" not in str(err.value)
