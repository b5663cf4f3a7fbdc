"""Round 3, class 9: faults that do not stick.

A full disk is one line (exit 2) and the rerun finishes; a part file that does not read back is
recomputed; ``overwrite`` starts a scene afresh; a killed run's temporaries are removed by the next run.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest
import rasterio

from frugalvl.cli import main
from frugalvl.errors import UserError
from frugalvl.fileio import write_json
from frugalvl.segment import scene_tiles
from frugalvl.segment.scene import SceneSettings, plan_scene, run_tiles, segment_scene
from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene


def _labels(path):
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture()
def scene(tmp_path):
    path = tmp_path / "scene.tif"
    write_test_scene(path, 300, 300, nodata_box=(0, 60, 0, 60))
    return path


@pytest.fixture()
def reference(tmp_path, scene):
    return _labels(segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "ref", tile=128).labels)


def test_a_full_disk_is_one_line_and_the_rerun_finishes(tmp_path, scene, tiny_clip_file, capsys, monkeypatch):
    real = np.savez_compressed
    calls = {"n": 0}

    def full_after_two(f, **arrays):
        calls["n"] += 1
        if calls["n"] > 2:
            f.write(b"PK\x03\x04 half a zip")  # what reached the disk before it filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, **arrays)

    monkeypatch.setattr(scene_tiles.np, "savez_compressed", full_after_two)
    out = tmp_path / "out"
    args = ["segment", str(scene), "-o", str(out), "--classes", "a;b", "--clip", str(tiny_clip_file), "--no-progress"]
    assert main([*args, "--tile", "224"]) == 2
    captured = capsys.readouterr()
    assert "no space left on the device" in captured.out + captured.err and "Traceback" not in captured.err
    parts = out / ".scene.parts"
    assert sorted(p.name for p in parts.glob("r*.npz")) == ["r00000_c00000.npz", "r00000_c00001.npz"]
    assert not list(out.rglob("*.tmp*"))  # the half-written part went with its temporary
    monkeypatch.setattr(scene_tiles.np, "savez_compressed", real)
    assert main([*args, "--tile", "224"]) == 0
    assert main([*args, "--tile", "224", "-o", str(tmp_path / "fresh")]) == 0
    assert np.array_equal(_labels(out / "scene.tif"), _labels(tmp_path / "fresh" / "scene.tif"))


def test_a_full_disk_in_a_plain_write_is_one_line(tmp_path, monkeypatch):
    import frugalvl.fileio as fileio

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", full)
    with pytest.raises(UserError, match="no space left on the device writing .*r.json"):
        write_json(tmp_path / "r.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "empty", "wrong_shape"])
def test_a_part_that_does_not_read_back_is_recomputed(tmp_path, scene, reference, damage):
    settings = SceneSettings(tile=128)
    seg = ColourSegmenter.with_classes()
    plan = plan_scene(seg, scene, tmp_path / "o", settings)
    assert plan is not None
    with plan:
        run_tiles(seg, plan)  # every part written, then the run dies before assembling
        victim = plan.part(plan.tiles[4])
    data = victim.read_bytes()
    victim.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "empty": b"",
            "wrong_shape": b"",
        }[damage]
    )
    if damage == "wrong_shape":
        np.savez_compressed(victim, labels=np.zeros((3, 3), np.uint8))
    again = ColourSegmenter.with_classes()
    result = segment_scene(again, scene, tmp_path / "o", settings)
    assert result is not None and result.tiles_run == 1 and len(again.calls) == 1
    assert np.array_equal(_labels(result.labels), reference)


def test_overwrite_starts_the_parts_afresh(tmp_path, scene, reference):
    settings = SceneSettings(tile=128)
    seg = ColourSegmenter.with_classes()
    plan = plan_scene(seg, scene, tmp_path / "o", settings)
    assert plan is not None
    with plan:
        run_tiles(seg, plan)
        for tile in plan.tiles:  # readable parts of the right shape but wrong labels
            np.savez_compressed(plan.part(tile), labels=np.zeros((tile.core.height, tile.core.width), np.uint8))
    result = segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "o", settings, overwrite=True)
    assert np.array_equal(_labels(result.labels), reference)
    # a part folder whose own record is unreadable (a full disk) is started afresh too
    parts = tmp_path / "p" / ".scene.parts"
    parts.mkdir(parents=True)
    (parts / "run.json").write_bytes(b'{"segmen')
    result = segment_scene(ColourSegmenter.with_classes(), scene, tmp_path / "p", settings)
    assert np.array_equal(_labels(result.labels), reference)


def test_temporaries_of_a_killed_run_are_removed_by_the_next_segment_run(tmp_path, scene, tiny_clip_file, capsys):
    out = tmp_path / "out"
    (out / ".scene.parts").mkdir(parents=True)
    stale = [
        out / ".scene.tif.99999999-abcdefgh.tmp.tif",
        out / ".scene.parts" / ".r00000_c00000.npz.99999999-abcdefgh.tmp.npz",
    ]
    for path in stale:
        path.write_bytes(b"left by kill -9")
    args = ["segment", str(scene), "-o", str(out), "--classes", "a;b", "--clip", str(tiny_clip_file), "--no-progress"]
    assert main([*args, "--tile", "224"]) == 0, capsys.readouterr()
    assert not any(p.exists() for p in stale)
