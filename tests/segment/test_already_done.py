"""Rerunning a finished run: recognised from the records before any model loads, the finished run's
table read from them; every changed setting named; a refused run leaves no empty folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main
from tests.conftest import EXAMPLES, landsat_rgb


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _table_rows(out: str) -> dict[str, int]:
    rows = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[-2 if "%" not in parts[-1] else -2].isdigit():
            rows[parts[0]] = int(parts[-2])
    return rows


@pytest.mark.parametrize("tiled", [False, True])
def test_rerun_loads_no_model_and_prints_the_finished_table(tmp_path, capsys, tiny_clip_file, monkeypatch, tiled):
    from frugalvl.segment.methods import Method

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(landsat_rgb(512)).resize((256, 256)).save(src / "a.png")
    Image.fromarray(landsat_rgb(512)[:200, :300].copy()).save(src / "b.png")
    args = ["segment", src, "-o", tmp_path / "out", "--classes", "background;building;water", "--clip", tiny_clip_file]
    args += ["--no-progress"] + (["--tile", "224"] if tiled else [])
    code, first, _ = run(capsys, *args)
    assert code == 0 and "2 segmented" in first

    def no_loading(*a, **k):
        raise AssertionError("a finished run loaded a model")

    monkeypatch.setattr(Method, "load_models", no_loading)
    code, again, err = run(capsys, *args)
    assert code == 0 and "0 segmented, 2 already done" in again and "done already" in err
    # the same table as the run that did the work (not zeros)
    assert again.splitlines()[:-1] == first.splitlines()[:-1]
    assert sum(int(line.split()[1]) for line in again.splitlines()[1:-1]) == 256 * 256 + 200 * 300


def test_a_georeferenced_rerun_keeps_the_areas(tmp_path, capsys, tiny_clip_file, monkeypatch):
    from frugalvl.segment.methods import Method

    args = ["segment", EXAMPLES / "landsat_rgb_byte.tif", "-o", tmp_path, "--classes", "background;water"]
    args += ["--clip", tiny_clip_file, "--no-progress"]
    code, first, _ = run(capsys, *args)
    assert code == 0 and "ha" in first.splitlines()[0]
    monkeypatch.setattr(Method, "load_models", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    code, again, _ = run(capsys, *args)
    assert code == 0 and again.splitlines()[:-1] == first.splitlines()[:-1]


def test_identity_without_the_model_is_the_loaded_segmenters(tiny_clip_file):
    from frugalvl.models.clip import load_clip
    from frugalvl.segment.methods import method
    from frugalvl.segment.records import SegmenterRecord
    from frugalvl.vocab import Vocabulary

    entry = method("segearth-ov")
    vocab = Vocabulary.parse("background;building,roof;water")
    settings = entry.settings(prob_thd=0.2)
    unloaded = entry.record({"clip": str(tiny_clip_file)}, vocab, settings)
    loaded = SegmenterRecord.of(
        entry.build({"clip": load_clip(str(tiny_clip_file)), "upsampler": None}, vocab, settings)
    )
    assert unloaded == loaded
    assert (
        entry.record({"clip": str(tiny_clip_file), "upsampler": "official"}, vocab, settings) is None
    )  # only loading tells


def test_changed_settings_are_all_named(tmp_path, capsys, tiny_clip_file):
    img = tmp_path / "x.png"
    Image.fromarray(landsat_rgb(512)[:64, :64].copy()).save(img)
    common = ["segment", img, "-o", tmp_path / "out", "--clip", tiny_clip_file, "--no-progress"]
    assert run(capsys, *common, "--classes", "background;building;road")[0] == 0
    code, _, err = run(capsys, *common, "--classes", "background;building;water", "--prob-thd", "0.3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "water" in err and "prob_thd" in err and "; " in err  # the classes and the threshold, both named


def test_a_refused_run_leaves_no_empty_folder(tmp_path, capsys, tiny_clip_file):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    out = tmp_path / "new" / "out"
    code, _, err = run(
        capsys, "segment", img, "-o", out, "--classes", "a;b", "--clip", tmp_path / "nope.pt", "--no-progress"
    )
    assert code == 2 and not out.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    code, _, _ = run(
        capsys, "segment", img, "-o", existing, "--classes", "a;b", "--clip", tmp_path / "nope.pt", "--no-progress"
    )
    assert code == 2 and existing.is_dir()  # a folder the user had stays
