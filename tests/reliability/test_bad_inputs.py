"""Issue 10, as a table: bad inputs end with one clear line, the right exit status and no files left.

The rows live in ``bad_inputs.toml`` (command, expected exit, message fragment); every row is run
in-process through :func:`frugalvl.cli.main` with a tiny random CLIP, and must leave the output
folder without any file (no partial results, no temporaries).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main

TABLE = tomllib.loads((Path(__file__).with_name("bad_inputs.toml")).read_text(encoding="utf-8"))["case"]


def invoke(capsys, args: list[str]) -> tuple[int, str, str]:
    """Run ``frugalvl ARGS``; argparse's own errors (SystemExit) count as their exit status."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def places(tmp_path, tiny_clip_file) -> dict[str, str]:
    img = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
    plain = tmp_path / "weights.safetensors"
    plain.write_bytes(b"not a folder")
    data = tmp_path / "data"
    data.mkdir()
    return {
        "img": str(img),
        "out": str(tmp_path / "out"),
        "clip": str(tiny_clip_file),
        "file": str(plain),
        "data": str(data),
    }


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()] if folder.exists() else []


@pytest.mark.parametrize("case", TABLE, ids=[f"item{c['item']}:{' '.join(c['args'][5:])}" for c in TABLE])
def test_bad_input_gives_one_line_and_leaves_nothing(case, places, capsys):
    args = [a.format(**places) for a in case["args"]]
    code, out, err = invoke(capsys, args)
    assert code == case["exit"], (out, err)
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err
    assert case["message"] in error_lines[0], err
    assert files_under(Path(places["out"])) == []
