"""Issue 10 item 6: outputs get the permissions a plain ``open()`` gives; a killed run's temporaries go away;
output folders are checked before any model loads."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.cli import main
from frugalvl.errors import UserError
from frugalvl.fileio import atomic_path, check_writable_dir, is_stale_temporary, remove_stale_temporaries, write_json


@pytest.fixture
def umask():
    """Set a umask for the test and restore the old one after."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_write_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_json(tmp_path / "r.json", {"a": 1})
    with open(tmp_path / "plain.json", "w") as f:  # what a plain open() gives, the independent expectation
        f.write("{}")
    assert mode(tmp_path / "r.json") == mode(tmp_path / "plain.json") == 0o666 & ~mask


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, umask):
    target = tmp_path / "r.json"
    target.write_text("{}")
    os.chmod(target, 0o640)
    write_json(target, {"a": 2})
    assert mode(target) == 0o640 and target.read_text().strip().startswith("{")


def test_segment_outputs_are_readable_by_others(tmp_path, umask, tiny_clip_file, capsys):
    """The issue's case: labels, overlay and probabilities came out 0600."""
    umask(0o022)
    img = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(img),
            "-o",
            str(out),
            "--classes",
            "water;land",
            "--clip",
            str(tiny_clip_file),
            "--save-probs",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"scene.png", "scene_overlay.png", "scene_probs.npy"}
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(0o644) for p in written}


def test_a_killed_writer_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    """SIGKILL a process inside atomic_path: its temporary stays; remove_stale_temporaries clears it."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from frugalvl.fileio import atomic_path
        with atomic_path({str(tmp_path / "labels.png")!r}) as tmp:
            tmp.write_bytes(b"half")
            print(tmp, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.exists() and not is_stale_temporary(tmp)  # its writer is still running: not stale
        assert remove_stale_temporaries(tmp_path) == [] and tmp.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert tmp.exists() and not (tmp_path / "labels.png").exists()
    assert remove_stale_temporaries(tmp_path) == [tmp]
    assert not tmp.exists()


def test_only_atomic_path_temporaries_are_removed(tmp_path):
    keep = [".hidden.txt", ".a.png.tmp", "a.png", ".a.png.abcdefgh.tmp.tif", "notes.tmp.png"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
    old_style = tmp_path / ".a.png.ab_d3fgh.tmp.png"  # written before temporaries carried the pid
    sidecar = tmp_path / ".v.gpkg.999999999-abcdefgh.tmp.gpkg-journal"  # a pid above Linux's pid_max: gone
    for path in (old_style, sidecar):
        path.write_bytes(b"")
    nested = tmp_path / "sub" / ".r.json.k2j4h5g6.tmp.json"
    nested.parent.mkdir()
    nested.write_bytes(b"")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([old_style, sidecar])
    assert nested.exists()
    assert remove_stale_temporaries(tmp_path, recursive=True) == [nested]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_own_temporary_in_flight_is_kept(tmp_path):
    with atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("{}")
        assert remove_stale_temporaries(tmp_path) == [] and tmp.exists()
    assert (tmp_path / "x.json").exists()


def test_check_writable_dir(tmp_path, monkeypatch):
    created = check_writable_dir(tmp_path / "new" / "deep")
    assert created.is_dir()
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match=r"^-o .*f\.txt is a file, not a folder") as info:
        check_writable_dir(a_file)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="^--workspace .* cannot be created"):
        check_writable_dir(a_file / "below", option="--workspace")

    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # root may write anywhere: simulate a read-only folder
    with pytest.raises(UserError, match=r"^-o .* is not writable \(Permission denied\)"):
        check_writable_dir(tmp_path)
    assert not any(p.name.startswith(".frugalvl-write-test") for p in tmp_path.iterdir())
