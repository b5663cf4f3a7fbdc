"""``frugalvl segment --method segearth-ov`` end to end on real crops and a GeoTIFF (tiny random CLIP)."""

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from frugalvl.cli import main
from frugalvl.models.jbu import JBUOne
from frugalvl.models.upsampler import save_upsampler
from tests.conftest import EXAMPLES, landsat_file, landsat_rgb


@pytest.fixture(scope="module")
def upsampler_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("up") / "jbu_one.ckpt"
    save_upsampler(path, JBUOne(feat_dim=32, radius=2))
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_png_crops_with_preset_and_upsampler(tmp_path, capsys, tiny_clip_file, upsampler_file):
    potsdam = landsat_file(tmp_path / "in", "potsdam_2_10_0_0_512_512.png")
    code, out, err = run(
        capsys,
        "segment",
        potsdam,
        "-o",
        tmp_path,
        "--preset",
        "potsdam",
        "--clip",
        tiny_clip_file,
        "--upsampler",
        upsampler_file,
        "--save-probs",
        "--no-progress",
    )
    assert code == 0, err
    labels = np.array(Image.open(tmp_path / "potsdam_2_10_0_0_512_512.png"))
    probs = np.load(tmp_path / "potsdam_2_10_0_0_512_512_probs.npy")
    assert labels.shape == (512, 512) and probs.shape == (6, 512, 512) and probs.dtype == np.float32
    # labels are the argmax with the preset's threshold 0.1 -> clutter (5)
    expected = probs.argmax(0)
    expected[probs.max(0) < 0.1] = 5
    assert np.array_equal(labels, expected)
    assert json.loads(Image.open(tmp_path / "potsdam_2_10_0_0_512_512.png").text["class_names"])[0] == "road"
    assert (tmp_path / "potsdam_2_10_0_0_512_512_overlay.png").exists()
    assert "1 segmented" in out and "road" in out


def test_a_kernel_choice_this_machine_lacks_stops_before_any_image(
    tmp_path, capsys, tiny_clip_file, upsampler_file, monkeypatch
):
    potsdam = landsat_file(tmp_path / "in", "potsdam_2_10_0_0_512_512.png")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "segment", potsdam, "-o", out_dir, "--preset", "potsdam", "--clip", tiny_clip_file,
        "--upsampler", upsampler_file, "--jbu-kernel", "compiled", "--no-progress",
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "frugalvl: error: --jbu-kernel compiled needs a C++ compiler and Python's headers "
        "(apt-get install g++ python3-dev, or name a compiler in CXX), or use --jbu-kernel torch"
    ]
    assert not any(out_dir.rglob("*.png"))  # nothing written


def test_folder_input_classes_string_and_resume(tmp_path, capsys, tiny_clip_file):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(landsat_rgb(512)).resize((256, 256)).save(src / "loveda_small.png")
    Image.fromarray(landsat_rgb(512)[:200, :300].copy()).save(src / "vaihingen.jpg")
    out_dir = tmp_path / "out"
    args = [
        "segment",
        src,
        "-o",
        out_dir,
        "--classes",
        "background;building,roof,house;road;water",
        "--clip",
        tiny_clip_file,
        "--no-progress",
    ]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "2 segmented" in out
    assert np.array(Image.open(out_dir / "vaihingen.png")).shape == (200, 300)
    code, out, _ = run(capsys, *args)
    assert code == 0 and "0 segmented, 2 already done" in out


def test_geotiff_keeps_georeference(tmp_path, capsys, tiny_clip_file):
    code, _, err = run(
        capsys,
        "segment",
        EXAMPLES / "landsat_rgb_byte.tif",
        "-o",
        tmp_path,
        "--classes",
        "water;land;cloud",
        "--clip",
        tiny_clip_file,
        "--no-progress",
    )
    assert code == 0, err
    with (
        rasterio.open(EXAMPLES / "landsat_rgb_byte.tif") as src,
        rasterio.open(tmp_path / "landsat_rgb_byte.tif") as out,
    ):
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        labels, valid = out.read(1), src.read_masks().max(0) > 0
    assert set(np.unique(labels[~valid])) == {255} and labels[valid].max() <= 2


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["nope.png"], "does not exist"),
        (["{img}", "--classes", ";"], "empty"),
        (["{img}", "--preset", "atlantis"], "unknown preset"),
        (["{img}", "--classes-file", "missing.txt"], "class file"),
        (["{img}", "--classes", "a;b", "--clip", "missing_clip.pt"], "does not exist"),
        (["{img}", "--classes", "a;b", "--upsampler", "missing.ckpt"], "does not exist"),
        (["{img}", "--classes", "a;b", "--bg-idx", "7"], "not a class index"),
        (["{img}", "--classes", "a;b", "--device", "cuda:3"], "cuda"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, tiny_clip_file, args, fragment):
    img = landsat_file(tmp_path / "in")
    args = [a.format(img=img) for a in args]
    if "--clip" not in args:
        args += ["--clip", str(tiny_clip_file)]
    code, _, err = run(capsys, "segment", *args, "-o", tmp_path, "--no-progress")
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_image_in_a_batch_is_reported(tmp_path, capsys, tiny_clip_file):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.png").write_bytes(b"\x89PNG\r\n broken")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "ok.png")
    code, out, err = run(
        capsys, "segment", src, "-o", tmp_path / "out", "--classes", "a;b", "--clip", tiny_clip_file, "--no-progress"
    )
    assert code == 2 and "broken.png" in err and "1 segmented" in out
    assert not (tmp_path / "out" / "broken.png").exists() and (tmp_path / "out" / "ok.png").exists()


# --- docs/reliability.md: never overwrite an input, never reuse a stale result, one line for bad inputs ------------------


def _tiny_png(path, size=(48, 64)):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_output_folder_equal_to_input_folder_is_refused(tmp_path, capsys, tiny_clip_file):
    folder = tmp_path / "inplace"
    folder.mkdir()
    _tiny_png(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    code, _, err = run(
        capsys,
        "segment",
        folder,
        "-o",
        folder,
        "--classes",
        "background;building;road",
        "--clip",
        tiny_clip_file,
        "--no-progress",
    )
    assert code == 2 and "would be overwritten" in err and len(err.strip().splitlines()) == 1
    assert (folder / "a.png").read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_changed_classes_into_the_same_folder_stop_then_overwrite_redoes(tmp_path, capsys, tiny_clip_file):
    img = _tiny_png(tmp_path / "x.png")
    common = ["segment", img, "-o", tmp_path / "out", "--clip", tiny_clip_file, "--no-progress"]
    assert run(capsys, *common, "--classes", "background;building;road")[0] == 0
    code, out, err = run(capsys, *common, "--classes", "background;building;water")
    assert code == 2 and "--overwrite" in err and "water" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, *common, "--classes", "background;building;water", "--overwrite")
    assert code == 0 and "1 segmented" in out
    assert json.loads(Image.open(tmp_path / "out" / "x.png").text["class_names"])[2] == "water"
    code, out, _ = run(capsys, *common, "--classes", "background;building;water")
    assert code == 0 and "0 segmented, 1 already done" in out


def _png_header_only(path, width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")
    )
    return path


def test_huge_headers_are_reported_and_skipped(tmp_path, capsys, tiny_clip_file):
    src = tmp_path / "in"
    src.mkdir()
    _png_header_only(src / "bomb.png", 100000, 100000)
    with rasterio.open(
        src / "huge.tif",
        "w",
        driver="GTiff",
        width=200000,
        height=200000,
        count=1,
        dtype="uint8",
        tiled=True,
        SPARSE_OK="TRUE",
        BIGTIFF="YES",
    ):
        pass  # no block written: a sparse file of a few hundred bytes
    _tiny_png(src / "ok.png")
    code, out, err = run(
        capsys, "segment", src, "-o", tmp_path / "out", "--classes", "a;b", "--clip", tiny_clip_file, "--no-progress"
    )
    assert code == 2 and "Traceback" not in err and "1 segmented" in out
    assert "bomb.png" in err and "huge.tif" in err
    assert (tmp_path / "out" / "ok.png").exists() and not (tmp_path / "out" / "bomb.png").exists()


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_bad_output_folder_is_one_line_before_the_model_loads(tmp_path, capsys, kind):
    img = _tiny_png(tmp_path / "x.png")
    if kind == "file":
        outdir = tmp_path / "out.txt"
        outdir.write_text("not a folder")
    else:
        outdir = "/proc/frugalvl-test-out"  # not writable, even for root
    # the CLIP file does not exist: the output folder must be reported first (before any model loads)
    code, _, err = run(
        capsys, "segment", img, "-o", outdir, "--classes", "a;b", "--clip", tmp_path / "missing.pt", "--no-progress"
    )
    assert code == 2 and "-o" in err and len(err.strip().splitlines()) == 1 and "missing.pt" not in err


# --- docs/scenes.md: whole scenes through the CLI ----------------------------------------------------------------------


def test_scene_cli_tiles_vectors_areas_and_bad_inputs(tmp_path, capsys, tiny_clip_file):
    from rio_cogeo.cogeo import cog_validate

    from frugalvl.testing.segmenters import write_test_scene

    src = tmp_path / "scenes"
    src.mkdir()
    write_test_scene(src / "s1.tif", 300, 260)
    (src / "s2.tif").write_bytes(b"II*\x00broken")
    code, out, err = run(
        capsys,
        "segment",
        src,
        "-o",
        tmp_path / "out",
        "--classes",
        "a;b;c",
        "--clip",
        tiny_clip_file,
        "--tile",
        "224",
        "--vectors",
        "gpkg",
        "--min-area",
        "1",
        "--no-progress",
    )
    assert code == 2 and "s2.tif" in err and "1 segmented" in out and "ha" in out
    labels = tmp_path / "out" / "s1.tif"
    assert cog_validate(str(labels))[0] and (tmp_path / "out" / "s1.gpkg").exists()
    with rasterio.open(labels) as f:
        px = np.bincount(f.read(1).ravel(), minlength=256)[:3]
    # areas: pixel count × 0.25 m² per pixel
    row = [line for line in out.splitlines() if line.startswith("a ")][0].split()
    assert int(row[1]) == px[0] and float(row[3]) == pytest.approx(px[0] * 0.25, abs=0.1)
    for extra, fragment in [
        (["--tile", "100"], "smaller than the model's"),
        (["--min-area", "-1"], "--min-area"),
        (["--tile", "224", "--scale", "0"], "--scale"),
        # the library names the field (overlap), the CLI its flag: the same line as before the split
        (
            ["--tile", "256", "--tile-overlap", "200"],
            "error: --tile-overlap 200 must be between 0 and half the tile (128)",
        ),
        (["--tile", "16"], "error: --tile 16 is too small: give at least 32 px (e.g. 512)"),
    ]:
        code, _, err = run(
            capsys,
            "segment",
            src / "s1.tif",
            "-o",
            tmp_path / "bad",
            "--classes",
            "a;b",
            "--clip",
            tiny_clip_file,
            "--no-progress",
            *extra,
        )
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_url_that_does_not_answer_is_one_line(tmp_path, capsys, tiny_clip_file):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run(
        capsys,
        "segment",
        f"http://127.0.0.1:{port}/scene.tif",
        "-o",
        tmp_path / "o",
        "--classes",
        "a;b",
        "--clip",
        tiny_clip_file,
        "--no-progress",
    )
    assert code == 2 and "cannot open" in err and "Traceback" not in err
    assert not [p for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")]


def test_large_raster_goes_to_the_scene_path_with_a_moving_tile_bar(tmp_path, capsys, monkeypatch):
    from frugalvl.segment import pipeline, routing
    from frugalvl.testing.segmenters import ColourSegmenter, write_test_scene

    write_test_scene(tmp_path / "big.tif", 300, 300)
    monkeypatch.setattr(routing, "AUTO_SCENE_PIXELS", 200 * 200)  # routing: which inputs are tiled
    seg = ColourSegmenter.with_classes()
    summary = pipeline.segment_files(seg, [tmp_path / "big.tif"], tmp_path / "o", progress=True)
    err = capsys.readouterr().err
    assert summary.done and len(seg.calls) == 1 and seg.calls[0] == (300, 300)  # default tile 512: one tile
    assert "tile" in err  # the per-scene tile bar
    monkeypatch.setattr(routing, "AUTO_SCENE_PIXELS", 10**9)
    assert not pipeline.uses_scene_path(tmp_path / "big.tif", None)


def test_library_messages_name_fields_and_the_cli_names_flags():
    """Library text names settings as Python does; the CLI shows the same line with its options."""
    from frugalvl.commands._settings import build_settings
    from frugalvl.commands.segment import cli_message
    from frugalvl.errors import UserError
    from frugalvl.segment.scene_settings import SceneSettings

    for values, line in [
        ({"tile": 128, "overlap": 100}, "--tile-overlap 100 must be between 0 and half the tile (64)"),
        ({"min_area": -1.0}, "--min-area -1.0 must be zero or positive (map units², pixels without a CRS)"),
    ]:
        with pytest.raises(UserError) as info:
            build_settings(SceneSettings, values)
        assert str(info.value) == line
    remedy = (
        "x.tif in /data/outdir/run_o was made with other settings (scene.tile: 1 -> 2): use overwrite=True to redo it"
    )
    assert (
        cli_message(remedy + ", or another outdir")
        == remedy.replace("overwrite=True", "--overwrite") + ", or another -o"
    )
    assert cli_message("outdir /a/b is a file, not a folder") == "-o /a/b is a file, not a folder"
    assert cli_message("write the outputs to another folder (outdir)") == "write the outputs to another folder (-o)"
    plain = "tile r00001 of scene.tif: half the tile is nodata, scale and bands as given"  # field words in prose stay
    assert cli_message(plain) == plain


def test_a_failed_scene_line_names_the_flag(tmp_path, capsys, tiny_clip_file):
    """An unfinished run with other settings is reported per input, with --overwrite (not overwrite=True)."""
    from frugalvl.testing.segmenters import write_test_scene

    scene = tmp_path / "s.tif"
    write_test_scene(scene, 300, 260)
    common = ["segment", scene, "-o", tmp_path / "o", "--clip", tiny_clip_file, "--no-progress", "--tile", "224"]
    parts = tmp_path / "o" / ".s.parts"
    parts.mkdir(parents=True)
    (parts / "run.json").write_text('{"segmenter": {}, "settings": {}}')  # left by a run with other settings
    code, out, err = run(capsys, *common, "--classes", "a;b")
    assert code == 2 and "skipped: an unfinished run of s in" in err and "use --overwrite to start it afresh" in err
    assert out.splitlines()[-1].startswith("frugalvl: failed: an unfinished run of s in")
    assert out.splitlines()[-1].endswith("use --overwrite to start it afresh, or another -o")
    assert "overwrite=True" not in err + out
