"""Round 3, class 10: one line, exit 2, and as early as possible.

Extreme aspect ratios are segmented (not a crash that stops a folder run); malformed model folders are
one line; settings that the vocabulary, the inputs' headers or the data can refute are refused before
any model loads; a bad number is one line without the usage text; an image path that leaves the image
root through a symbolic link is refused like ``..``.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import rasterio
from PIL import Image

from frugalvl.cli import main
from frugalvl.errors import UserError
from frugalvl.select.data import sample_problem


def _png(path, h=40, w=48, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _err(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


@pytest.mark.parametrize("tile", [None, "224"])
def test_a_3x20000_strip_is_segmented_and_does_not_stop_the_folder(tmp_path, tiny_clip_file, capsys, tile):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "strip.png", 3, 20000)
    _png(folder / "ok.png")
    out = tmp_path / "out"
    args = ["segment", str(folder), "-o", str(out), "--classes", "a;b", "--clip", str(tiny_clip_file), "--no-progress"]
    assert main([*args, *(["--tile", tile] if tile else [])]) == 0, capsys.readouterr()
    suffix = ".tif" if tile else ".png"
    with rasterio.open(out / f"strip{suffix}") as src:
        assert (src.height, src.width) == (3, 20000)
    assert (out / f"ok{suffix}").exists()


def test_bg_idx_and_bands_are_refused_before_any_model_loads(tmp_path, capsys):
    img = _png(tmp_path / "a.png")
    missing_clip = str(tmp_path / "no-such-clip.pt")  # loading it would fail: the check must come first
    base = ["segment", str(img), "-o", str(tmp_path / "o"), "--classes", "a;b", "--clip", missing_clip]
    assert main([*base, "--bg-idx", "5"]) == 2
    assert _err(capsys) == ["frugalvl: error: --bg-idx 5 is not a class index: the vocabulary has 2 classes (0 to 1)"]
    assert main([*base, "--bands", "1,2,3"]) == 2
    assert _err(capsys) == ["frugalvl: error: --bands applies to TIFF/GeoTIFF inputs only, not a.png"]
    tif = tmp_path / "b.tif"
    with rasterio.open(tif, "w", driver="GTiff", height=8, width=8, count=2, dtype="uint8") as dst:
        dst.write(np.zeros((2, 8, 8), np.uint8))
    base[1] = str(tif)
    assert main([*base, "--bands", "3"]) == 2
    (line,) = _err(capsys)
    assert line.startswith("frugalvl: error: b.tif has 2 band(s); --bands [3] do not exist")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_select_count_above_the_data_is_refused_before_the_first_stage(tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": str(i), "conversations": []} for i in range(3)]))
    work = tmp_path / "work"
    assert (
        main(
            ["select", "run", str(data), "-w", str(work), "-o", str(tmp_path / "s.json"), "--mllm", "x", "--count", "5"]
        )
        == 2
    )
    (line,) = _err(capsys)
    assert line.endswith(f"cannot pick 5 samples: {data} holds 3; lower --count")
    assert not work.exists()


@pytest.mark.parametrize("argv", [["--long-side", "foo"], ["--prob-thd", "x"]])
def test_a_bad_number_is_one_line_without_the_usage(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(["segment", "a.png", "-o", str(tmp_path), "--classes", "a", *argv])
    assert exit_.value.code == 2
    (line,) = _err(capsys)
    assert line.startswith("frugalvl segment: error: argument " + argv[0])


def test_a_symlink_leading_out_of_the_image_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    _png(outside / "x.png")
    _png(root / "in.png")
    (root / "escape").symlink_to(outside)
    (root / "alias").symlink_to(root / "in.png")  # a link that stays inside keeps working
    sample = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert "symbolic link" in sample_problem({**sample, "image": "escape/x.png"}, False, root)
    assert sample_problem({**sample, "image": "alias"}, False, root) is None
    assert sample_problem({**sample, "image": "escape/x.png"}, True, root) is None  # allowed when asked


class _NotWeights:
    pass


@pytest.mark.parametrize("damage", ["truncated_safetensors", "pickled_bin"])
def test_a_malformed_sam3_folder_is_one_line(tmp_path, damage):
    from frugalvl.models.sam3 import load_sam3
    from frugalvl.testing.sam3 import random_sam3

    bundle = random_sam3("tiny")
    folder = tmp_path / "sam3"
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    weights = folder / "model.safetensors"
    if damage == "truncated_safetensors":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_NotWeights()))
    with pytest.raises(UserError) as err:
        load_sam3(folder)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"cannot load SAM 3 from {folder}") and "save_pretrained" in text


def test_a_malformed_llava_folder_is_one_line(tmp_path):
    from frugalvl.models.llava import load_llava

    folder = tmp_path / "llava"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UserError) as err:
        load_llava(str(folder))
    assert "\n" not in str(err.value) and f"cannot load LLaVA from {folder}" in str(err.value)
