"""Round 3, classes 6 and 9, for every command beside segment/select pick/train-upsampler (test_ownership.py):
no output replaces an unrelated file or an input, and a second run into a folder being written stops.

Each case builds the smallest inputs its command accepts, plants a file of someone else's where an output
goes, and runs the command line: one line naming the output, exit 2, the file unchanged; with --overwrite
(where the command has it) the file is replaced. Inputs named as outputs are refused, --overwrite or not.
Every refusal happens before any model loads (the model options name nothing loadable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main
from frugalvl.fileio import LEDGER_NAME, LOCK_NAME, claim_outputs, claimed_outputs, output_lock

NOT_A_MODEL = "/nonexistent/model"  # loading it would fail: a case that gets that far has not refused


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


@dataclass
class Case:
    argv: list[str]  # the command line
    planted: Path  # where an unrelated file is planted (an output of this run)
    words: tuple[str, ...]  # the refusal line names these
    as_input: list[str] | None = None  # a command line whose output is one of its inputs
    overwrite: bool = True  # whether --overwrite replaces the planted file
    locked: Path | None = None  # the folder a held lock stops
    extra: dict = field(default_factory=dict)


def _change(tmp: Path) -> Case:
    before, after = _png(tmp / "a" / "scene.png", 1), _png(tmp / "b" / "scene.png", 2)
    out = tmp / "out"
    argv = ["change", str(before), str(after), "-o", str(out), "--sam3", NOT_A_MODEL, "--progress", "none"]
    # the after date named like the change map of the before date, in the output folder
    twin = _png(out / "scene_change.tif", 3)
    as_input = ["change", str(before), str(twin), "-o", str(out), "--sam3", NOT_A_MODEL, "--overwrite"]
    return Case(argv, out / "scene_change_overlay.png", ("--outdir", "no frugalvl run recorded"), as_input, False, out)


def _evaluate(tmp: Path) -> Case:
    root = tmp / "data"
    img, ann = root / "potsdam" / "img_dir" / "val", root / "potsdam" / "ann_dir" / "val"
    _png(img / "t_0.png", 1)
    ann.mkdir(parents=True)
    Image.fromarray(np.ones((32, 32), np.uint8)).save(ann / "t_0.png")
    preds = tmp / "preds"
    preds.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(preds / "t_0.png")
    out = tmp / "ev"
    argv = ["evaluate", "--dataset", "potsdam", "--data-root", str(root), "--predictions", str(preds), "-o", str(out)]
    planted = out / "potsdam" / "predictions-preds" / "per_class.csv"
    as_input = [*argv[:-1], str(img), "--overwrite"]  # the results inside the dataset's image folder
    return Case([*argv, "--no-progress"], planted, ("--outdir", "per_class.csv"), as_input, True, out)


def _label_3d(tmp: Path) -> Case:
    from frugalvl.testing.pointcloud import default_cameras, default_scene, sample_cloud, write_block, write_ply

    scene, cameras = default_scene(), default_cameras()
    block = write_block(tmp, cameras, scene)
    xyz, truth, _ = sample_cloud(scene, spacing=1.0)
    cloud = write_ply(tmp / "cloud.ply", xyz, truth)
    out = tmp / "out3d"
    base = ["label-3d", str(tmp / "photos"), "--cameras", str(block), "--cloud", str(cloud)]
    model = ["--classes", "ground;box", "--method", "segearth-ov", "--clip", NOT_A_MODEL, "--no-progress"]
    as_input = [*base, "-o", str(tmp / "photos"), *model, "--overwrite"]  # label maps among the photos
    planted = out / "masks" / "photo_1.png"
    return Case([*base, "-o", str(out), *model], planted, ("--outdir", "photo_1.png"), as_input, locked=out)


def _report(tmp: Path) -> Case:
    work = tmp / "work"
    work.mkdir()
    selection = tmp / "ids.txt"
    selection.write_text("a\n")
    out = tmp / "page.html"
    as_input = ["select", "report", str(work), "--selection", str(selection), "-o", str(selection), "--overwrite"]
    return Case(["select", "report", str(work), "-o", str(out)], out, ("--out", "page.html"), as_input, True)


def _compare(tmp: Path) -> Case:
    work = tmp / "work"
    out = tmp / "cmp"
    argv = ["select", "compare", "pick", "random", "-w", str(work), "--out-dir", str(out)]
    return Case(argv, out / "compare.json", ("--out-dir", "compare.json"), None, True, out)


def _finetune(tmp: Path) -> Case:
    data = tmp / "subset.json"
    data.write_text("[]")
    out = tmp / "ft"
    argv = ["select", "finetune", str(data), "-o", str(out), "--mllm", "example/not-loaded"]
    as_input = ["select", "finetune", str(data), "-o", str(tmp), "--mllm", "example/not-loaded", "--force"]
    return Case(argv, out / "notes.txt", ("--out", "notes.txt"), as_input, False, out)


def _demo(tmp: Path) -> Case:
    out = tmp / "tour"
    return Case(["select", "demo", str(out)], out / "notes.txt", ("folder", "notes.txt"), None, False)


CASES: dict[str, Callable[[Path], Case]] = {
    "change": _change,
    "evaluate": _evaluate,
    "label-3d": _label_3d,
    "select report": _report,
    "select compare": _compare,
    "select finetune": _finetune,
    "select demo": _demo,
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_command_replaces_an_unrelated_file_or_an_input(tmp_path, capsys, name):
    if name == "label-3d":
        pytest.importorskip("plyfile")
    case = CASES[name](tmp_path)
    case.planted.parent.mkdir(parents=True, exist_ok=True)
    case.planted.write_bytes(b"someone else's")
    assert main(case.argv) == 2
    line = _last_line(capsys)
    assert all(w in line for w in case.words), line
    assert "no frugalvl run recorded" in line
    assert case.planted.read_bytes() == b"someone else's"
    assert not list(case.planted.parent.glob(".*.tmp*")) and not (case.planted.parent / LOCK_NAME).exists()
    if case.overwrite:  # --overwrite lets the run go on (it may stop later: the inputs are minimal)
        main([*case.argv, "--overwrite"])
        assert "no frugalvl run recorded" not in capsys.readouterr().err
    if case.as_input is not None:
        inputs_before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert main(case.as_input) == 2
        line = _last_line(capsys)
        assert "is an input of this run" in line or "inside the input" in line or "holds or lies inside" in line, line
        for path, data in inputs_before.items():
            if path.name not in (LEDGER_NAME, LOCK_NAME):
                assert path.read_bytes() == data, path


def test_claimed_outputs_are_resumed_not_refused(tmp_path):
    """A file claimed in its folder's ledger before it was written is frugalvl's: the next run replaces it."""
    from frugalvl.fileio import check_outputs

    out = tmp_path / "out"
    out.mkdir()
    half = out / "scene_change.tif"
    claim_outputs([half])
    half.write_bytes(b"half written")
    assert claimed_outputs(out) == [half]
    assert check_outputs([half, out / "new.png"]) == [half, out / "new.png"]
    assert claimed_outputs(out) == [half]  # checking claims nothing: commands claim right before writing
    check_outputs([half, out / "new.png"], claim=True)
    assert sorted(p.name for p in claimed_outputs(out)) == ["new.png", "scene_change.tif"]
    theirs = out / "theirs.png"
    theirs.write_bytes(b"x")
    with pytest.raises(Exception, match="no frugalvl run recorded"):
        check_outputs([theirs])
    assert [p.name for p in claimed_outputs(out)] == ["new.png", "scene_change.tif"]  # a refusal claims nothing


# ---------------------------------------------------------------- one writer per folder


def _hold(folder: Path):
    holder = textwrap.dedent(f"""
        import time
        from frugalvl.fileio import output_lock
        with output_lock({str(folder)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _select_prepare(tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data.json"
    data.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "hi"}]}]))
    return ["select", "prepare", str(data), "-w", str(tmp / "work")], tmp / "work"


def _train_upsampler(tmp: Path) -> tuple[list[str], Path]:
    _png(tmp / "imgs" / "a.png")
    return ["train-upsampler", "--images", str(tmp / "imgs"), "--clip", NOT_A_MODEL, "-o", str(tmp / "up" / "u.ckpt")], tmp / "up"  # fmt: skip


def _locked_case(make: Callable[[Path], Case]) -> Callable[[Path], tuple[list[str], Path]]:
    def build(tmp: Path) -> tuple[list[str], Path]:
        case = make(tmp)
        assert case.locked is not None
        return case.argv, case.locked

    return build


LOCKED: dict[str, Callable[[Path], tuple[list[str], Path]]] = {
    "change": _locked_case(_change),
    "evaluate": _locked_case(_evaluate),
    "label-3d": _locked_case(_label_3d),
    "select compare": _locked_case(_compare),
    "select prepare": _select_prepare,
    "train-upsampler": _train_upsampler,
}


@pytest.mark.parametrize("name", list(LOCKED))
def test_a_second_run_into_a_folder_being_written_stops_with_the_writers_pid(tmp_path, capsys, name):
    if name == "label-3d":
        pytest.importorskip("plyfile")
    argv, folder = LOCKED[name](tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in folder.rglob("*"))
    proc = _hold(folder)
    try:
        assert main(argv) == 2
        line = _last_line(capsys)
        assert f"another run is writing here (pid {proc.pid})" in line, line
        assert sorted(p.name for p in folder.rglob("*")) == sorted([*before, LOCK_NAME])  # nothing written
    finally:
        proc.kill()
        proc.wait()


def test_the_ray_segment_driver_holds_the_lock(tmp_path):
    """The library's Ray path locks the output folder before Ray starts (a held lock stops it at once)."""
    from frugalvl.distributed.ray_segment import segment_files_ray
    from frugalvl.errors import UserError

    img = _png(tmp_path / "scene.png")
    out = tmp_path / "out"
    proc = _hold(out)
    try:
        with pytest.raises(UserError, match=f"another run is writing here \\(pid {proc.pid}\\)"):
            segment_files_ray(lambda: None, [img], out, ray_address="ray://127.0.0.1:9")
    finally:
        proc.kill()
        proc.wait()
    with output_lock(out):  # the killed holder's lock is stale: taken over
        pass


def test_label_3d_removes_a_killed_runs_scratch_folder(tmp_path, capsys):
    pytest.importorskip("plyfile")
    case = _label_3d(tmp_path)
    scratch = tmp_path / "out3d" / ".label-3d-killed"
    scratch.mkdir(parents=True)
    (scratch / "xyz.npy").write_bytes(b"\0" * 64)
    temporary = tmp_path / "out3d" / ".cloud_labels.ply.999999-abcdefgh.tmp.ply"  # a pid that does not run
    temporary.write_bytes(b"half")
    main(case.argv)  # stops at the model (NOT_A_MODEL), after the folder's checks
    capsys.readouterr()
    assert not scratch.exists() and not temporary.exists()
