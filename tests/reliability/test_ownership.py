"""Round 3, class 6: no command overwrites a file it did not make; class 9: one writer per output folder.

The root is one ownership check (:func:`frugalvl.fileio.check_output`) every command makes on each output
path before it writes: never an input (through any link) or a file inside an input folder, and never an
existing file that no frugalvl run recorded unless ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main
from frugalvl.errors import UserError
from frugalvl.fileio import LOCK_NAME, check_output, output_lock
from frugalvl.select.workdir import check_subset_output


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    return err[-1]


# ---------------------------------------------------------------- the check itself


def test_check_output_refuses_an_input_through_a_link_even_with_overwrite(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("[]")
    link = tmp_path / "link.json"
    link.symlink_to(data)
    for out in (data, link, tmp_path / "sub" / ".." / "data.json"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(UserError, match="is an input of this run"):
            check_output(out, [data], overwrite=True)
    assert data.read_text() == "[]"


def test_check_output_refuses_a_path_inside_an_input_folder(tmp_path):
    work = tmp_path / "work"
    (work / "prepare").mkdir(parents=True)
    with pytest.raises(UserError, match="inside the input folder"):
        check_output(work / "prepare" / "samples.json", [work], overwrite=True)
    with pytest.raises(UserError, match="inside the input folder"):
        check_output(work / "prepare" / "new.json", [work])
    (work / "old.json").write_text("{}")
    with pytest.raises(UserError, match="inside the input folder"):
        check_output(work / "old.json", [work], overwrite=True)
    assert check_output(work / "subset.json", [work]) == work / "subset.json"  # a new file beside the stages


def test_check_output_refuses_unrecorded_files_unless_overwrite(tmp_path):
    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    mine.write_text("1")
    theirs.write_text("2")
    assert check_output(mine, recorded=[mine]) == mine
    assert check_output(tmp_path / "new.json") == tmp_path / "new.json"
    with pytest.raises(UserError, match="no frugalvl run recorded writing it") as err:
        check_output(theirs, recorded=[mine])
    assert "overwrite" in str(err.value)
    assert check_output(theirs, recorded=[mine], overwrite=True) == theirs


# ---------------------------------------------------------------- segment


def _segment(img: Path, out: Path, clip: Path, *extra: str) -> int:
    args = ["segment", str(img), "-o", str(out), "--classes", "water;land", "--clip", str(clip), "--no-progress"]
    return main([*args, *extra])


def test_segment_does_not_replace_an_unrelated_file_of_the_same_stem(tmp_path, tiny_clip_file, capsys):
    """The issue's case: segmenting photo.jpg into a folder replaced an unrelated photo.png."""
    src = tmp_path / "in"
    src.mkdir()
    img = src / "photo.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    out.mkdir()
    theirs = _png(out / "photo.png", seed=9)
    before = theirs.read_bytes()
    assert _segment(img, out, tiny_clip_file) == 2
    line = _error_line(capsys)
    assert "photo.png" in line and "--overwrite" in line and "no frugalvl run recorded" in line
    assert theirs.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["photo.png"]  # nothing else written, no lock left
    assert _segment(img, out, tiny_clip_file, "--overwrite") == 0
    assert theirs.read_bytes() != before
    assert "segmenter" in json.loads((out / "photo_run.json").read_text())


def test_a_killed_segment_run_resumes_over_its_own_claimed_outputs(tmp_path, tiny_clip_file, capsys):
    """Outputs written before the record are claimed by frugalvl: a rerun finishes them, not refuses."""
    img = _png(tmp_path / "scene.png")
    out = tmp_path / "out"
    assert _segment(img, out, tiny_clip_file) == 0
    finished = (out / "scene.png").read_bytes()
    (out / "scene_run.json").write_text(json.dumps({"writing": ["scene.png", "scene_overlay.png"]}))  # killed
    (out / "scene.png").write_bytes(b"half")
    assert _segment(img, out, tiny_clip_file) == 0, capsys.readouterr()
    assert (out / "scene.png").read_bytes() == finished
    assert "segmenter" in json.loads((out / "scene_run.json").read_text())


def test_a_second_run_into_the_same_folder_stops_with_the_writers_pid(tmp_path, tiny_clip_file, capsys):
    img = _png(tmp_path / "scene.png")
    out = tmp_path / "out"
    out.mkdir()
    holder = textwrap.dedent(f"""
        import sys, time
        from frugalvl.fileio import output_lock
        with output_lock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert _segment(img, out, tiny_clip_file) == 2
        assert _error_line(capsys).endswith(
            f"another run is writing here (pid {proc.pid}): {out}; wait for it or write elsewhere"
        )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the second run wrote nothing
    finally:
        proc.kill()
        proc.wait()
    # the killed holder's lock is stale: the kernel released it, the next run takes it over and removes it
    assert (out / LOCK_NAME).exists()
    assert _segment(img, out, tiny_clip_file) == 0
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_reentrant_in_one_process_and_removed_at_the_end(tmp_path):
    with output_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with output_lock(tmp_path):
            pass
        assert lock.exists()
    assert not lock.exists()


# ---------------------------------------------------------------- select


def _work_with_input(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data.json"
    data.write_text('[{"id": "a", "conversations": []}]')
    work = tmp_path / "work"
    (work / "prepare").mkdir(parents=True)
    (work / "prepare" / "report.json").write_text(json.dumps({"input": str(data.resolve())}))
    return data, work


@pytest.mark.parametrize("where", ["input", "in_work", "unrecorded"])
def test_select_pick_refuses_outputs_it_does_not_own(tmp_path, capsys, where):
    """The issue's case: `select pick -o` equal to the input JSON overwrote it."""
    data, work = _work_with_input(tmp_path)
    other = tmp_path / "notes.json"
    other.write_text("mine")
    out = {"input": data, "in_work": work / "prepare" / "report.json", "unrecorded": other}[where]
    before = out.read_text()
    assert main(["select", "pick", "-w", str(work), "-o", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("frugalvl: error: --out") and str(out) in line
    assert out.read_text() == before


def test_select_recognises_the_subset_it_wrote_before(tmp_path):
    data, work = _work_with_input(tmp_path)
    subset = tmp_path / "subset.json"
    subset.write_text("[]")
    with pytest.raises(UserError, match="no frugalvl run recorded"):
        check_subset_output(work, subset)
    (work / "pick").mkdir()
    (work / "pick" / "meta.json").write_text(json.dumps({"stage": "pick", "out": str(subset.resolve())}))
    assert check_subset_output(work, subset) == subset
    with pytest.raises(UserError, match="is an input"):
        check_subset_output(work, data, overwrite=True)


def test_select_run_checks_its_output_before_the_first_stage(tmp_path, capsys):
    data, _ = _work_with_input(tmp_path)
    work = tmp_path / "fresh"
    assert main(["select", "run", str(data), "-w", str(work), "-o", str(data), "--mllm", "x"]) == 2
    assert "is an input of this run" in _error_line(capsys)
    assert not work.exists()


# ---------------------------------------------------------------- train-upsampler


@pytest.mark.parametrize("target", ["clip", "image"])
def test_train_upsampler_never_writes_over_its_inputs(tmp_path, tiny_clip_file, capsys, target):
    """The issue's case: `train-upsampler -o` equal to --clip or an --images file overwrote it."""
    images = tmp_path / "imgs"
    images.mkdir()
    img = _png(images / "a.png")
    clip = tmp_path / "clip.pt"
    clip.write_bytes(tiny_clip_file.read_bytes())
    out = {"clip": clip, "image": img}[target]
    before = out.read_bytes()
    started = time.monotonic()
    code = main(
        ["train-upsampler", "--images", str(images), "--clip", f"ViT-B-16:{clip}", "-o", str(out), "--overwrite"]
    )
    assert code == 2
    assert "is an input of this run" in _error_line(capsys)
    assert out.read_bytes() == before
    assert time.monotonic() - started < 30  # refused before the CLIP loads


def test_train_upsampler_refuses_an_unrelated_existing_file(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    _png(images / "a.png")
    out = tmp_path / "up.ckpt"
    out.write_bytes(b"someone else's")
    assert main(["train-upsampler", "--images", str(images), "-o", str(out)]) == 2
    line = _error_line(capsys)
    assert "--output" in line and "--overwrite" in line
    assert out.read_bytes() == b"someone else's"
