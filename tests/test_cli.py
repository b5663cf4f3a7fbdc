"""The command line as a whole: start-up cost, supported Python, and one source for every default."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_help_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "from frugalvl.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'open_clip', 'transformers', 'rasterio', 'ray') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_declared_python_is_the_one_the_code_needs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # tomllib (3.11+) is used by the presets: the package must not claim an older Python
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert project["tool"]["mypy"]["python_version"] == "3.11"
    assert sys.version_info >= (3, 11)


def _defaults_differ(built, cls, skip=()) -> list[str]:
    default = cls()
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in skip and getattr(built, f.name) != getattr(default, f.name)
    ]


@pytest.mark.parametrize("stage", ["prepare", "features", "cluster", "pick", "train"])
def test_select_option_defaults_are_the_settings_defaults(stage):
    """The select options are written in commands/select.py: checked here against the dataclasses."""
    from frugalvl.cli import build_parser
    from frugalvl.commands import select as cli
    from frugalvl.select import ClusterSettings, FeatureSettings, PickSettings, PrepareSettings, TrainSettings

    argv = {
        "prepare": ["select", "prepare", "data.json", "-w", "w"],
        "features": ["select", "features", "-w", "w"],
        "cluster": ["select", "cluster", "-w", "w"],
        "pick": ["select", "pick", "-w", "w", "-o", "out.json"],
        "train": ["select", "train", "-w", "w", "--mllm", "m"],
    }[stage]
    args = build_parser(["select"]).parse_args(argv)
    builder, cls, skip = {
        "prepare": (cli.prepare_settings, PrepareSettings, ()),
        "features": (cli.feature_settings, FeatureSettings, ("endpoint",)),
        "cluster": (cli.cluster_settings, ClusterSettings, ()),
        "pick": (cli.pick_settings, PickSettings, ()),
        "train": (cli.train_settings, TrainSettings, ("mllm", "num_workers")),
    }[stage]
    assert _defaults_differ(builder(args), cls, skip) == []
