"""Progress reporters (frugalvl.progress) and ``segment --progress {bar,json,none} [--progress-fd N]``."""

from __future__ import annotations

import io
import json
import os

import pytest

from frugalvl.progress import SCHEMA_VERSION, JsonReporter, NullReporter, TqdmReporter, as_reporter
from tests.conftest import landsat_file


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_reporter_writes_one_object_per_line_with_absolute_counts():
    stream = io.StringIO()
    rep = JsonReporter(stream)
    bar = rep.start("tile", 3, "scene", done=1, level=1)
    bar.advance()
    rep.phase("assemble", "scene")
    bar.advance(1, total=4)
    bar.close()
    bar.close()  # closing twice says it once
    lines = stream.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(e["v"] == SCHEMA_VERSION == 1 for e in events)
    assert [(e["event"], e.get("done"), e.get("total")) for e in events] == [
        ("start", 1, 3),
        ("advance", 2, 3),
        ("phase", None, None),
        ("advance", 3, 4),
        ("close", 3, 4),
    ]
    assert events[2] == {"v": 1, "event": "phase", "phase": "assemble", "item": "scene"}
    assert events[0] == {"v": 1, "event": "start", "unit": "tile", "name": "scene", "level": 1, "done": 1, "total": 3}


def test_a_closed_stream_ends_the_events_not_the_run():
    stream = io.StringIO()
    rep = JsonReporter(stream)
    bar = rep.start("img", 2, "segment")
    stream.close()
    bar.advance()  # no exception
    bar.close()


def test_as_reporter():
    assert isinstance(as_reporter(True), TqdmReporter) and isinstance(as_reporter(False), NullReporter)
    rep = JsonReporter(io.StringIO())
    assert as_reporter(rep) is rep


def test_scene_run_reports_every_tile_and_the_steps_after_them(tmp_path):
    from frugalvl.segment.pipeline import segment_files
    from frugalvl.segment.scene_settings import SceneSettings, SegmentRunSettings
    from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene

    write_test_scene(tmp_path / "s.tif", 300, 250)
    settings = SegmentRunSettings(scene=SceneSettings(tile=128, overlap=32, vectors="gpkg"), tile_all=True)
    stream = io.StringIO()
    seg = ColourSegmenter.with_classes()
    summary = segment_files(
        seg,
        [tmp_path / "s.tif"],
        tmp_path / "o",
        settings,
        progress=JsonReporter(stream),
    )
    assert summary.done
    events = _events(stream.getvalue())
    tiles = [e for e in events if e.get("unit") == "tile"]
    # stride 96 on 300 x 250: columns at 0, 96, 172; rows at 0, 96, 122 -> 9 tiles (mmseg's grid)
    assert [e["done"] for e in tiles if e["event"] == "advance"] == list(range(1, 10))
    assert tiles[0]["event"] == "start" and tiles[0]["total"] == 9 and tiles[-1]["event"] == "close"
    assert len(seg.calls) == 9
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["plan", "assemble", "overlay", "vectors"]
    top = [e for e in events if e.get("level") == 0]
    assert [e["event"] for e in top] == ["start", "item", "advance", "close"]
    assert top[1]["item"] == "s.tif" and top[-1]["done"] == top[-1]["total"] == 1
    # a rerun: the input is done already, counted as such
    stream2 = io.StringIO()
    segment_files(
        seg,
        [tmp_path / "s.tif"],
        tmp_path / "o",
        settings,
        progress=JsonReporter(stream2),
    )
    assert [e["event"] for e in _events(stream2.getvalue())] == ["start", "item", "advance", "close"]


def test_cli_json_on_stderr_and_on_a_file_descriptor(tmp_path, capsys, tiny_clip_file):
    from frugalvl.cli import main

    img = landsat_file(tmp_path, "a.png", size=64)
    common = [
        "segment",
        str(img),
        "--classes",
        "a;b",
        "--clip",
        str(tiny_clip_file),
        "--slide-crop",
        "32",
        "--slide-stride",
        "32",
    ]
    assert main([*common, "-o", str(tmp_path / "o1"), "--progress", "json"]) == 0
    err = capsys.readouterr().err
    events = _events(err)
    windows = [e for e in events if e.get("unit") == "win" and e["event"] == "advance"]
    assert windows and windows[-1]["done"] == windows[-1]["total"]
    assert [e["done"] for e in windows] == sorted(e["done"] for e in windows)
    # the model loading and the text encoding come first, each announced (no silent minutes), then the input's
    phases = [e for e in events if e["event"] == "phase"]
    assert [e["phase"] for e in phases] == ["load", "encode", "write"]
    assert phases[0]["item"].startswith("CLIP ") and phases[1]["item"].startswith("160 text prompts (2 class names")
    assert events.index(phases[1]) < next(i for i, e in enumerate(events) if e["event"] == "start")
    assert "it/s" not in err and "\r" not in err  # no terminal bar in json mode
    read_fd, write_fd = os.pipe()
    try:
        code = main([*common, "-o", str(tmp_path / "o2"), "--progress", "json", "--progress-fd", str(write_fd)])
        os.close(write_fd)
        with os.fdopen(read_fd, encoding="utf-8") as r:
            piped = r.read()
    finally:
        for fd in (write_fd, read_fd):
            try:
                os.close(fd)
            except OSError:
                pass
    assert code == 0
    assert [e["event"] for e in _events(piped)][:3] == ["phase", "phase", "start"]
    assert _events(piped)[-1]["event"] == "close"
    assert not _events(capsys.readouterr().err)  # nothing on stderr
    assert main([*common, "-o", str(tmp_path / "o3"), "--progress", "none"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--progress", "json", "--no-progress"], "--no-progress and --progress json contradict each other"),
        (["--progress-fd", "1"], "--progress-fd only applies to --progress json"),
        (["--progress", "json", "--progress-fd", "987"], "--progress-fd 987 is not a file descriptor open for writing"),
    ],
)
def test_bad_progress_options_are_one_line_before_the_model_loads(tmp_path, capsys, extra, fragment):
    from frugalvl.cli import main

    img = landsat_file(tmp_path, "a.png", size=32)
    code = main(
        ["segment", str(img), "-o", str(tmp_path / "o"), "--classes", "a;b", "--clip", str(tmp_path / "no.pt"), *extra]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_info_json_lists_presets_methods_extras_without_torch(capsys):
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-c", "import sys; from frugalvl.cli import main; main(['info', '--json']); print('torch' in sys.modules)"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, check=True,
    )  # fmt: skip
    body, torch_loaded = done.stdout.strip().splitlines()
    info = json.loads(body)
    from frugalvl import __version__
    from frugalvl.presets import list_presets, preset_vocabulary

    assert info["version"] == __version__ and info["methods"] == ["segearth-ov", "segearth-ov3"]
    assert sorted(info["presets"]) == list_presets()
    assert info["presets"]["loveda"]["segearth_ov"] == preset_vocabulary("loveda", "segearth_ov").names
    assert "sam3" in info["extras"] and "test" not in info["extras"] and "all" not in info["extras"]
    assert torch_loaded == "False" and "devices" not in info
