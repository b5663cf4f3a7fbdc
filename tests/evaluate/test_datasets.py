"""Readers: every benchmark's layout and label encoding, on real and generated fixtures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.errors import UserError
from frugalvl.evaluate.datasets import (
    GROUPS,
    dataset_present,
    dataset_spec,
    find_prediction,
    find_samples,
    list_datasets,
    read_label,
    read_prediction,
)
from frugalvl.presets import load_preset, method_settings
from tests.conftest import shared_file
from tests.evaluate.eval_fixtures import real_tiles, write_pair

ALL = [
    "openearthmap",
    "loveda",
    "isaid",
    "potsdam",
    "vaihingen",
    "uavid",
    "udd5",
    "vdd",
    "whu_aerial",
    "whu_sat_ii",
    "inria",
    "xbd_pre",
    "chn6_cug",
    "deepglobe",
    "massachusetts",
    "spacenet",
    "wbs_si",
]
# SegEarth-OV3 v2: three segmentation benchmarks (SegEarth-OV3 settings only) and three change benchmarks
V2 = ["gid", "gf_road", "gf7_building"]
CHANGE = ["levir_cd", "whu_cd", "s2looking"]


def test_all_seventeen_benchmarks_are_described():
    assert sorted(list_datasets()) == sorted(ALL + V2 + CHANGE)
    for name in ALL:
        spec = dataset_spec(name)
        assert spec.group in GROUPS
        # The label names line up with each method's classes, class for class.
        assert spec.num_classes == len(method_settings(name, "segearth_ov")["classes"])
        if "segearth_ov3" in load_preset(name):
            assert spec.num_classes == len(method_settings(name, "segearth_ov3")["classes"])
        assert spec.binary == (spec.group != "multiclass")
        assert spec.encoding.ignore_index == 255
    assert dataset_spec("wbs_si").split and len(dataset_spec("wbs_si").split) == 499
    assert [n for n in ALL if dataset_spec(n).encoding.reduce_zero_label] == ["loveda", "potsdam", "vaihingen"]


def test_the_v2_benchmarks_are_described():
    for name in V2 + CHANGE:
        spec = dataset_spec(name)
        assert "segearth_ov" not in load_preset(name)  # the official SegEarth-OV code has no config for them
        assert spec.num_classes == len(method_settings(name, "segearth_ov3")["classes"])
        assert spec.change == (name in CHANGE) and spec.change == (spec.group == "change")
        assert spec.binary == (name != "gid") and not spec.encoding.reduce_zero_label
    assert dataset_spec("levir_cd").img2_dir == "LEVIR-CD/test_512/B"
    assert dataset_spec("s2looking").img2_dir == "S2Looking/test/Image2"
    assert dataset_spec("gf_road").encoding.binary_threshold == 129  # its converter: > 128
    assert dataset_spec("gf7_building").img_suffix == ".tif"


def _rgb(h: int = 8, w: int = 8) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ALL)
def test_each_layout_is_found_and_paired(tmp_path: Path, name: str):
    spec = dataset_spec(name)
    if spec.split:  # a listed subset (WBS-SI's 499 ids): keep two of them for a small fixture
        spec = replace(spec, split=spec.split[:2])
    ids = list(spec.split) if spec.split else ["b_img", "a_img"]
    raw = np.zeros((8, 8), dtype=np.uint8)
    raw[:, 4:] = 255 if spec.binary else 1
    for sample_id in ids:
        write_pair(tmp_path, name, sample_id, _rgb(), raw)
    if spec.split:
        write_pair(tmp_path, name, "not_in_the_split", _rgb(), raw)
    samples = find_samples(spec, tmp_path)
    assert [s.id for s in samples] == (ids if spec.split else sorted(ids))
    assert dataset_present(spec, tmp_path)
    labels = read_label(samples[0].label, spec.encoding)
    assert labels.shape == (8, 8)
    if spec.binary:
        assert set(np.unique(labels)) <= {0, 1} and labels[:, 4:].mean() > 0.9
    elif spec.encoding.reduce_zero_label:
        assert set(np.unique(labels)) == {0, 255}  # 1 -> 0, 0 -> ignored
    else:
        assert set(np.unique(labels)) == {0, 1}


def test_missing_and_empty_folders_name_the_expected_layout(tmp_path: Path):
    spec = dataset_spec("potsdam")
    with pytest.raises(UserError) as err:
        find_samples(spec, tmp_path)
    message = str(err.value)
    assert "\n" not in message and "potsdam/img_dir/val" in message and "potsdam/ann_dir/val" in message
    (tmp_path / spec.img_dir).mkdir(parents=True)
    (tmp_path / spec.ann_dir).mkdir(parents=True)
    with pytest.raises(UserError, match=r"no \*\.png images"):
        find_samples(spec, tmp_path)


def test_missing_label_is_reported(tmp_path: Path):
    write_pair(tmp_path, "loveda", "0", _rgb(), np.ones((8, 8), np.uint8))
    write_pair(tmp_path, "loveda", "1", _rgb(), np.ones((8, 8), np.uint8))
    (tmp_path / dataset_spec("loveda").ann_dir / "1.png").unlink()
    with pytest.raises(UserError, match="1 of 2 images have no label"):
        find_samples(dataset_spec("loveda"), tmp_path)


def test_binary_masks_raw_and_converted(tmp_path: Path):
    spec = dataset_spec("whu_aerial")
    raw = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    write_pair(tmp_path, "whu_aerial", "raw", _rgb(1, 4), raw)
    write_pair(tmp_path, "whu_aerial", "cvt", _rgb(1, 4), np.array([[0, 1, 1, 0]], dtype=np.uint8))
    raw_s, cvt_s = sorted(find_samples(spec, tmp_path), key=lambda s: s.id, reverse=True)
    np.testing.assert_array_equal(read_label(raw_s.label, spec.encoding), [[0, 0, 1, 1]])  # 0/255 at 128
    np.testing.assert_array_equal(read_label(cvt_s.label, spec.encoding), [[0, 1, 1, 0]])  # already 0/1


def test_xbd_any_nonzero_is_building(tmp_path: Path):
    spec = dataset_spec("xbd_pre")
    write_pair(tmp_path, "xbd_pre", "t", _rgb(1, 5), np.array([[0, 1, 2, 4, 255]], dtype=np.uint8))
    np.testing.assert_array_equal(read_label(find_samples(spec, tmp_path)[0].label, spec.encoding), [[0, 1, 1, 1, 1]])


def test_listed_images_must_all_be_there(tmp_path: Path):
    spec = dataset_spec("wbs_si")
    write_pair(tmp_path, "wbs_si", spec.split[0], _rgb(), np.zeros((8, 8), np.uint8))
    with pytest.raises(UserError, match="498 of 499 listed images are missing"):
        find_samples(spec, tmp_path)


def test_wbs_si_jpeg_masks_are_rethresholded(tmp_path: Path):
    spec = dataset_spec("wbs_si")
    spec = replace(spec, split=spec.split[:2])
    truth = np.zeros((64, 64), dtype=np.uint8)
    truth[16:48, 10:40] = 1
    sid_raw, sid_cvt = spec.split[:2]
    write_pair(tmp_path, "wbs_si", sid_raw, _rgb(64, 64), truth * 255)  # the original 0/255 masks
    write_pair(tmp_path, "wbs_si", sid_cvt, _rgb(64, 64), truth)  # the converter's 0/1 masks, re-saved as JPEG
    for s in find_samples(spec, tmp_path):
        stored = np.asarray(Image.open(s.label))
        labels = read_label(s.label, spec.encoding)
        assert set(np.unique(labels)) <= {0, 1}
        assert (labels == truth).mean() > 0.97, (s.id, np.unique(stored))


def test_colour_coded_labels_are_converted(tmp_path: Path):
    # UAVid ships RGB labels; moving cars (64,0,128) count as (static) cars, class 3.
    colours = np.array([[[0, 0, 0], [128, 0, 0], [192, 0, 192], [64, 0, 128], [1, 2, 3]]], dtype=np.uint8)
    write_pair(tmp_path, "uavid", "seq1_000", _rgb(1, 5), colours)
    spec = dataset_spec("uavid")
    np.testing.assert_array_equal(read_label(find_samples(spec, tmp_path)[0].label, spec.encoding), [[0, 1, 3, 3, 0]])
    # ISPRS colours map to the mmseg values 0..6, then reduce_zero_label (black boundary -> ignored).
    isprs = np.array(
        [[[0, 0, 0], [255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]]],
        dtype=np.uint8,
    )
    write_pair(tmp_path, "potsdam", "tile", _rgb(1, 7), isprs)
    spec = dataset_spec("potsdam")
    np.testing.assert_array_equal(
        read_label(find_samples(spec, tmp_path)[0].label, spec.encoding), [[255, 0, 1, 2, 3, 4, 5]]
    )


def test_colour_labels_without_palette_are_refused(tmp_path: Path):
    write_pair(tmp_path, "vdd", "x", _rgb(2, 2), _rgb(2, 2))
    spec = dataset_spec("vdd")
    with pytest.raises(UserError, match="colour-coded"):
        read_label(find_samples(spec, tmp_path)[0].label, spec.encoding)


def test_palette_png_gives_indices(tmp_path: Path):
    # UDD5 and VDD labels are palette PNGs: the stored indices count, not the colours.
    index = np.array([[0, 1], [4, 3]], dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette([107, 142, 35, 102, 102, 156, 128, 64, 128, 0, 0, 142, 0, 0, 0] + [0] * 753)
    spec = dataset_spec("udd5")
    write_pair(tmp_path, "udd5", "DJI_0001", _rgb(2, 2), index)
    img.save(tmp_path / spec.ann_dir / "DJI_0001.png")
    np.testing.assert_array_equal(read_label(find_samples(spec, tmp_path)[0].label, spec.encoding), index)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["potsdam", "vaihingen", "loveda"])
def test_real_crops_decode_with_reduce_zero_label(tmp_path: Path, name: str):
    ((sample_id, rgb, raw),) = real_tiles(name, 1024)
    write_pair(tmp_path, name, sample_id, rgb, raw)
    spec = dataset_spec(name)
    labels = read_label(find_samples(spec, tmp_path)[0].label, spec.encoding)
    np.testing.assert_array_equal(labels == 255, raw == 0)
    np.testing.assert_array_equal(labels[raw > 0], raw[raw > 0].astype(np.int64) - 1)
    assert labels[labels != 255].max() < spec.num_classes


def test_predictions_are_found_by_stem(tmp_path: Path):
    write_pair(tmp_path, "loveda", "42", _rgb(), np.ones((8, 8), np.uint8))
    sample = find_samples(dataset_spec("loveda"), tmp_path)[0]
    preds = tmp_path / "preds"
    preds.mkdir()
    assert find_prediction(preds, sample) is None
    Image.fromarray(np.full((8, 8), 3, np.uint8)).save(preds / "42.png")
    assert find_prediction(preds, sample) == preds / "42.png"
    assert (read_prediction(preds / "42.png") == 3).all()


@pytest.mark.shared_data
def test_shared_crops_folder_is_where_the_tests_expect_it():
    assert shared_file("potsdam_2_10_0_0_512_512_label.png").is_file()
