"""Round 3, class 9, beyond segment (test_faults.py): what a crash or a full disk leaves in `change`'s part
folders and in the trainers' checkpoint folders does not stick."""

from __future__ import annotations

import json

import numpy as np

from frugalvl.change.outputs import Tile
from frugalvl.change.scene import Parts
from frugalvl.windows import Window


def test_a_change_part_that_does_not_read_back_is_detected_again(tmp_path):
    parts = Parts.prepare(tmp_path, "scene", {"record": 1})
    good, bad = Window(0, 8, 0, 8), Window(0, 8, 8, 16)
    for w in (good, bad):
        change = np.ones((8, 8), np.uint8)
        parts.save(w, Tile(w.y0, w.x0, change, change.astype(np.uint16), change.astype(np.uint16), None))
    data = parts.path(bad).read_bytes()
    parts.path(bad).write_bytes(data[: len(data) // 2])  # written during a full disk
    assert parts.done(good) and np.array_equal(parts.load(good).change, np.ones((8, 8), np.uint8))
    assert not parts.done(bad)
    assert not parts.path(bad).exists()  # removed: the tile is detected again, the rerun does not fail on it


def test_a_killed_checkpoint_save_is_removed_on_resume(tmp_path):
    from frugalvl.select.accelerate_state import CHECKPOINTS, resume

    class Main:
        is_main_process = True

    root = tmp_path / CHECKPOINTS
    cut = root / ".step-7.tmp"
    cut.mkdir(parents=True)
    (cut / "model.safetensors").write_bytes(b"half")
    adapter = tmp_path / ".adapter.tmp"
    adapter.mkdir()
    assert resume(Main(), tmp_path, "state.json", "key", {"a": 1}, "fix") is None  # nothing complete to resume
    assert not cut.exists() and not adapter.exists()
    (root / "step-3").mkdir()
    (root / "step-3" / "note.txt").write_text(json.dumps({}))  # no state file: not a checkpoint, kept
    resume(Main(), tmp_path, "state.json", "key", {"a": 1}, "fix")
    assert (root / "step-3" / "note.txt").exists()


def test_a_stage_never_clears_a_folder_it_did_not_write(tmp_path):
    """`select ... --force` recomputes a stage by clearing its folder: never a folder of someone else's."""
    import pytest

    from frugalvl.errors import UserError
    from frugalvl.select.workdir import begin_stage

    folder = tmp_path / "work" / "train"
    folder.mkdir(parents=True)
    (folder / "my_notes.txt").write_text("mine")
    with pytest.raises(UserError, match="my_notes.txt, which no train stage wrote"):
        begin_stage(folder, "train", {}, {}, [folder / "scorer.pt"], force=True)
    assert (folder / "my_notes.txt").read_text() == "mine"
    (folder / "my_notes.txt").unlink()
    (folder / "scorer.pt").write_bytes(b"an older run's, without its meta.json")
    run = begin_stage(folder, "train", {}, {}, [folder / "scorer.pt"], force=True)  # its own outputs: recomputed
    assert run is not None and (run.out / "meta.json").is_file()  # staged beside it until complete


def test_change_overwrite_starts_a_scene_clean(tmp_path):
    parts = Parts.prepare(tmp_path, "scene", {"record": 1})
    w = Window(0, 8, 0, 8)
    change = np.ones((8, 8), np.uint8)
    parts.save(w, Tile(0, 0, change, change.astype(np.uint16), change.astype(np.uint16), None))
    assert Parts.prepare(tmp_path, "scene", {"record": 1}).done(w)  # same record: resumed
    assert not Parts.prepare(tmp_path, "scene", {"record": 1}, fresh=True).done(w)  # overwrite: removed
