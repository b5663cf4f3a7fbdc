"""``segment --engine ray`` on a local 2-CPU Ray cluster: the same bytes as the single-process run, a bad
scene reported while the others finish, and a worker killed mid-run resumed to the same bytes (docs/ray.md)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from frugalvl import cli
from frugalvl.errors import UserError
from frugalvl.segment.pipeline import segment_files
from frugalvl.testing.ray_workers import ColourFactory

LABEL_SUFFIXES = (".png", ".tif", "_overlay.png", "_run.json")


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_tiles_and_files_on_ray_equal_the_local_run_and_a_bad_scene_is_reported(ray_cluster, real_inputs, tmp_path):
    from frugalvl.distributed.ray_segment import segment_files_ray

    crops, vrt = real_inputs
    paths = [*crops, vrt]
    factory = ColourFactory(fail_on="80x80")  # crop2 is 80×80: its worker raises a RuntimeError
    local = segment_files(ColourFactory()(), paths, tmp_path / "local", progress=False)
    summary = segment_files_ray(factory, paths, tmp_path / "ray", workers=2, progress=False)
    assert [Path(p).name for p, _ in summary.failed] == ["crop2.png"]
    assert "simulated worker bug" in summary.failed[0][1]
    assert [Path(p).name for p in summary.done] == ["crop0.png", "crop1.png", "scene.vrt"]
    ref = {k: v for k, v in _outputs(tmp_path / "local").items() if not k.startswith("crop2")}
    got = _outputs(tmp_path / "ray")
    assert set(got) == set(ref) and "scene.tif" in got  # the VRT went tile by tile (9 tiles of 512 px)
    assert all(got[k] == ref[k] for k in ref), [k for k in ref if got[k] != ref[k]]
    assert summary.pixels == local.pixels - _pixels_of(tmp_path / "local" / "crop2.png")
    assert not (tmp_path / "ray" / ".scene.parts").exists()


def _pixels_of(label_file: Path):
    from collections import Counter

    import numpy as np
    from PIL import Image

    labels = np.asarray(Image.open(label_file))
    return Counter({int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))})


def test_a_worker_killed_mid_run_resumes_to_the_same_bytes(ray_cluster, real_inputs, tmp_path):
    from frugalvl.distributed.ray_segment import segment_files_ray

    crops, vrt = real_inputs
    paths = [*crops, vrt]
    segment_files(ColourFactory()(), paths, tmp_path / "local", progress=False)
    pids = tmp_path / "pids"
    pids.mkdir()
    slow = ColourFactory(delay=0.4, pid_dir=str(pids))
    outcome: dict = {}

    def job() -> None:  # restarts=0: the dead worker is not replaced, the run stops
        try:
            outcome["summary"] = segment_files_ray(slow, paths, tmp_path / "ray", workers=2, progress=False, restarts=0)
        except UserError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.time() + 120
    parts = tmp_path / "ray" / ".scene.parts"
    while len(list(parts.glob("r*_c*.npz"))) < 2 and time.time() < deadline:  # let some tiles finish first
        time.sleep(0.05)
    victim = int(next(p for p in pids.iterdir() if p.name.isdigit()).name)
    assert victim != os.getpid()
    os.kill(victim, signal.SIGKILL)
    done_at_kill = _outputs(tmp_path / "ray") if (tmp_path / "ray").exists() else {}
    thread.join(timeout=180)
    assert not thread.is_alive()
    ref = _outputs(tmp_path / "local")
    assert set(done_at_kill) != set(ref)  # killed mid-run, not after it
    assert "run the same command again" in outcome.get("error", ""), outcome
    kept = {p.name: p.read_bytes() for p in parts.glob("r*_c*.npz")}
    assert 2 <= len(kept) < 9  # the tiles finished before the kill are kept for the rerun
    crops_done = sum((tmp_path / "ray" / f"{p.stem}_run.json").exists() for p in crops)
    rerun = tmp_path / "rerun_pids"
    rerun.mkdir()
    summary = segment_files_ray(ColourFactory(pid_dir=str(rerun)), paths, tmp_path / "ray", workers=2, progress=False)
    assert not summary.failed
    # only what the kill left undone is computed again (fewer if a dying run still finished a row)
    assert 1 <= len(list((rerun / "calls").iterdir())) <= (9 - len(kept)) + (3 - crops_done)
    got = _outputs(tmp_path / "ray")
    assert set(got) == set(ref) and all(got[k] == ref[k] for k in ref), [k for k in ref if got.get(k) != ref[k]]


def test_cli_engine_ray_equals_local_with_a_real_model(ray_cluster, real_inputs, tiny_clip_file, tmp_path, capsys):
    crops, _ = real_inputs
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + os.urandom(200))
    common = [
        *map(str, crops[:2]),
        str(bad),
        "--classes",
        "water;land,field;forest",
        "--clip",
        str(tiny_clip_file),
        "--no-progress",
    ]
    assert cli.main(["segment", *common, "-o", str(tmp_path / "local")]) == 2
    local_out = capsys.readouterr().out
    assert cli.main(["segment", *common, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 2
    ray_out = capsys.readouterr().out
    assert local_out == ray_out  # the same class table, counts and one failure line for broken.tif
    assert "broken.tif" in ray_out.splitlines()[-1]
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")


def test_without_engine_ray_nothing_imports_ray(tiny_clip_file, tmp_path):
    """``segment --help`` then a normal run, in one fresh interpreter: Ray is never imported."""
    import subprocess
    import sys

    import cv2
    import numpy as np

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.full((40, 40, 3), 90, np.uint8))
    runs = [
        ["segment", "--help"],
        [
            "segment",
            str(img),
            "-o",
            str(tmp_path / "o"),
            "--classes",
            "a;b",
            "--clip",
            str(tiny_clip_file),
            "--no-progress",
        ],
    ]
    code = (
        "import sys\nfrom frugalvl import cli\n"
        f"for argv in {runs!r}:\n"
        "    try:\n        code = cli.main(argv)\n    except SystemExit as e:\n        code = e.code\n"
        "    print('exit', code, sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180).stdout
    assert [line for line in out.splitlines() if line.startswith("exit")] == ["exit 0 []", "exit 0 []"]
    assert (tmp_path / "o" / "img.png").exists()
