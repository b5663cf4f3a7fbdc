"""``frugalvl segment --method segearth-ov`` end to end on real crops and a GeoTIFF (tiny random CLIP)."""

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from frugalvl.cli import main
from frugalvl.models.jbu import JBUOne, save_upsampler
from tests.conftest import EXAMPLES, shared_file


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
    potsdam = shared_file("potsdam_2_10_0_0_512_512.png")
    code, out, err = run(capsys, "segment", potsdam, "-o", tmp_path, "--preset", "potsdam", "--clip", tiny_clip_file,
                         "--upsampler", upsampler_file, "--save-probs", "--no-progress")
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


def test_folder_input_classes_string_and_resume(tmp_path, capsys, tiny_clip_file):
    src = tmp_path / "in"
    src.mkdir()
    Image.open(shared_file("loveda_0.png")).resize((256, 256)).save(src / "loveda_small.png")
    Image.open(shared_file("vaihingen_area1_0_0_512_512.png")).crop((0, 0, 300, 200)).save(src / "vaihingen.jpg")
    out_dir = tmp_path / "out"
    args = ["segment", src, "-o", out_dir, "--classes", "background;building,roof,house;road;water", "--clip", tiny_clip_file,
            "--no-progress"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "2 segmented" in out
    assert np.array(Image.open(out_dir / "vaihingen.png")).shape == (200, 300)
    code, out, _ = run(capsys, *args)
    assert code == 0 and "0 segmented, 2 already done" in out


def test_geotiff_keeps_georeference(tmp_path, capsys, tiny_clip_file):
    code, _, err = run(capsys, "segment", EXAMPLES / "landsat_rgb_byte.tif", "-o", tmp_path, "--classes", "water;land;cloud",
                       "--clip", tiny_clip_file, "--no-progress")
    assert code == 0, err
    with rasterio.open(EXAMPLES / "landsat_rgb_byte.tif") as src, rasterio.open(tmp_path / "landsat_rgb_byte.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        labels, valid = out.read(1), src.read_masks().max(0) > 0
    assert set(np.unique(labels[~valid])) == {255} and labels[valid].max() <= 2


@pytest.mark.parametrize("args,fragment", [
    (["nope.png"], "does not exist"),
    (["{img}", "--classes", ";"], "empty"),
    (["{img}", "--preset", "atlantis"], "unknown preset"),
    (["{img}", "--classes-file", "missing.txt"], "class file"),
    (["{img}", "--classes", "a;b", "--clip", "missing_clip.pt"], "does not exist"),
    (["{img}", "--classes", "a;b", "--upsampler", "missing.ckpt"], "does not exist"),
    (["{img}", "--classes", "a;b", "--bg-idx", "7"], "not a class index"),
    (["{img}", "--classes", "a;b", "--device", "cuda:3"], "cuda"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, tiny_clip_file, args, fragment):
    img = shared_file("potsdam_2_10_0_0_512_512.png")
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
    code, out, err = run(capsys, "segment", src, "-o", tmp_path / "out", "--classes", "a;b", "--clip", tiny_clip_file,
                         "--no-progress")
    assert code == 2 and "broken.png" in err and "1 segmented" in out
    assert not (tmp_path / "out" / "broken.png").exists() and (tmp_path / "out" / "ok.png").exists()
