"""Issue 10 item 10: messages that name the real problem, and no made-up problems."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main
from frugalvl.commands import demo_check
from frugalvl.errors import UserError
from frugalvl.models import weights
from frugalvl.models.sam3 import load_sam3
from frugalvl.presets import method_settings
from frugalvl.vocab import Vocabulary


def test_preset_with_own_classes_does_not_invent_a_bg_idx(tmp_path, tiny_clip_file, capsys):
    """``--preset potsdam --classes "a;b"`` complained about a ``--bg-idx 5`` nobody passed."""
    img = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
    code = main(
        [
            "segment",
            str(img),
            "-o",
            str(tmp_path / "out"),
            "--preset",
            "potsdam",
            "--classes",
            "a;b",
            "--clip",
            str(tiny_clip_file),
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "not a class index" not in err and "error" not in err
    labels = np.array(Image.open(tmp_path / "out" / "scene.png"))
    assert labels.max() <= 1  # only the user's two classes
    assert json.loads(Image.open(tmp_path / "out" / "scene.png").text["class_names"]) == ["a", "b"]


@pytest.mark.parametrize("method", ["segearth_ov", "segearth_ov3"])
def test_preset_bg_idx_applies_only_where_it_names_the_same_class(method):
    own = method_settings("potsdam", method)
    assert own["bg_idx"] == 5
    assert method_settings("potsdam", method, Vocabulary.parse("a;b"))["bg_idx"] == 0
    assert method_settings("potsdam", method, Vocabulary.parse("a;b;c;d;e;f;g"))["bg_idx"] == 0
    names = Vocabulary.parse(";".join(["road", "building", "low vegetation", "tree", "car", "clutter"]))
    assert method_settings("potsdam", method, names)["bg_idx"] == 5  # the preset's clutter class, same place
    assert method_settings("potsdam", method, names)["prob_thd"] == own["prob_thd"]


@pytest.mark.parametrize("text", ["building;road;building", "a,b;c,B", "water; Water ", "sea,lake;river,lake"])
def test_duplicate_class_names_are_refused(text):
    with pytest.raises(UserError, match="twice") as info:
        Vocabulary.parse(text)
    assert "\n" not in str(info.value)


def test_synonyms_repeated_within_one_class_are_harmless():
    assert Vocabulary.parse("a,a;b").names == ["a", "b"]


def test_sam3_file_is_not_called_missing(tmp_path):
    weights_file = tmp_path / "model.safetensors"
    weights_file.write_bytes(b"x")
    with pytest.raises(UserError) as info:
        load_sam3(str(weights_file))
    assert "is a file" in str(info.value) and "does not exist" not in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        load_sam3(str(tmp_path / "missing_folder"))


def test_demo_check_names_both_missing_weights(tmp_path, capsys, monkeypatch):
    """``make demo`` named one missing weight per attempt; the check names both, by their make variables."""
    monkeypatch.setenv("FRUGALVL_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(weights, "host_reachable", lambda host: False)  # offline, without trying
    code = demo_check.main(["--clip", str(tmp_path / "ViT-B-16.pt"), "--upsampler", "official"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "ERROR:root" not in err
    assert "FRUGALVL_CLIP=" in err and "FRUGALVL_UPSAMPLER=" in err and "2 weights are missing" in err
    assert "FRUGALVL_UPSAMPLER=/path/to/xclip_jbu_one_million_aid.ckpt" in err  # the fix, with the file to get


def test_demo_check_passes_with_local_files(tmp_path, tiny_clip_file, capsys):
    up = tmp_path / "jbu.ckpt"
    up.write_bytes(b"x")
    assert demo_check.main(["--clip", str(tiny_clip_file), "--upsampler", str(up)]) == 0
    with pytest.raises(UserError, match=r"^1 weight is missing: --upsampler .*missing\.ckpt"):
        weights.check_segearth_ov_weights(
            str(tiny_clip_file), str(tmp_path / "missing.ckpt"), ("--clip", "--upsampler")
        )


def test_open_clip_name_not_in_cache_is_reported_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "_open_clip_cached", lambda cfg, cache_dir: False)
    monkeypatch.setattr(weights, "host_reachable", lambda host: False)
    assert "not downloaded yet" in weights.clip_problem("ViT-B-16")
    assert weights.clip_problem("ViT-B-16:openai") == weights.clip_problem("ViT-B-16")


def test_library_errors_on_the_root_logger_are_not_shown(caplog, capfd):
    """open_clip reports a failed download with ``logging.error`` on the root logger: an extra ERROR:root line."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    with caplog.at_level(logging.INFO), weights.quiet_root_logger():
        logging.error("Failed to download weights")
        logging.getLogger("some.library").warning("kept")
    assert "Failed to download" not in caplog.text and "kept" in caplog.text
    assert "Failed to download" not in capfd.readouterr().err
    assert root.handlers == handlers and not root.filters
