"""End to end on a synthetic scene whose truth comes from the geometry (ray casting), not from the code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugalvl.pointcloud import Label3DSettings, label_cloud
from frugalvl.testing.pointcloud import GROUND, LabelColourSegmenter

from .conftest import read_ply, visibility


def run(s, out, **settings):
    seg = LabelColourSegmenter.for_classes()
    result = label_cloud(seg, s["photos"], s["block"], s["cloud"], out, Label3DSettings(**settings))
    return result, read_ply(result.output)["pred_label"], seg


def test_votes_equal_the_truth_for_every_visible_point(synthetic, tmp_path):
    result, labels, seg = run(synthetic, tmp_path)
    in_some, clear, _ = visibility(synthetic)
    surface, truth = synthetic["surface"], synthetic["truth"]
    checked = in_some & clear & (surface < 2)  # ground and roofs seen unhidden by every photo they fall in
    assert checked.sum() > 0.5 * len(truth)
    np.testing.assert_array_equal(labels[checked], truth[checked])
    assert (labels[~in_some] == -1).all() and (~in_some).any()
    assert (labels[in_some] >= 0).all()
    assert seg.calls == 4 and len(result.photos_used) == 4
    assert result.counts == {v: int((labels == v).sum()) for v in (-1, 0, 1)}
    csv = (tmp_path / "cloud_labels.csv").read_text().splitlines()
    assert csv[0] == "label,class,points" and csv[1] == f"0,ground,{result.counts[0]}"
    record = json.loads((tmp_path / "cloud_labels_run.json").read_text())
    assert record["settings"]["visibility"] == "none" and record["photos"] == result.photos_used


def test_a_second_run_segments_nothing_again(synthetic, tmp_path):
    first = run(synthetic, tmp_path)[1]
    result, labels, seg = run(synthetic, tmp_path)
    assert seg.calls == 0 and result.segmented == 0
    np.testing.assert_array_equal(labels, first)


def test_zbuffer_fixes_the_votes_a_hidden_point_gets_wrong(synthetic, tmp_path):
    """Buildings weigh 4: a ground point hidden behind a box from one photo is outvoted by default
    (the official behaviour), and gets its truth when hidden points do not vote."""
    in_some, clear, hidden = visibility(synthetic)
    truth, surface = synthetic["truth"], synthetic["surface"]
    hidden_ground = hidden & (surface == 0)
    assert hidden_ground.sum() > 100
    _, default, _ = run(synthetic, tmp_path / "a", class_weights=(1, 4))
    _, zbuffer, _ = run(synthetic, tmp_path / "b", class_weights=(1, 4), visibility="zbuffer")
    wrong = default[hidden_ground] != GROUND
    assert wrong.mean() > 0.5  # the official projection has no occlusion test
    np.testing.assert_array_equal(zbuffer[hidden_ground], truth[hidden_ground])
    checked = in_some & clear & (surface < 2)
    np.testing.assert_array_equal(zbuffer[checked], truth[checked])
    np.testing.assert_array_equal(default[checked], truth[checked])


def test_chunking_and_score_votes_give_the_same_labels(synthetic, tmp_path):
    _, whole, _ = run(synthetic, tmp_path / "a")
    _, chunked, _ = run(synthetic, tmp_path / "b", chunk_points=997)
    _, scored, _ = run(synthetic, tmp_path / "c", votes="score")  # one-hot scores: same sums as counts
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(whole, scored)
    assert sorted(p.name for p in (tmp_path / "c" / "masks").glob("*_probs.npy"))[0] == "photo_0_probs.npy"


def test_every_and_max_images_choose_cameras_in_block_order(synthetic, tmp_path):
    result, _, seg = run(synthetic, tmp_path, every=2, max_images=1)
    assert result.photos_used == ["photo_0.png"] and seg.calls == 1


def test_class_weights_must_match_the_classes(synthetic, tmp_path):
    from frugalvl.errors import UserError

    with pytest.raises(UserError, match="class_weights has 3 values for 2 classes"):
        run(synthetic, tmp_path, class_weights=(1, 2, 3))


@pytest.mark.parametrize(
    "bad",
    [
        dict(every=0),
        dict(max_images=0),
        dict(class_weights=(1, -1)),
        dict(class_weights=(1, float("nan"))),
        dict(min_depth=-1),
        dict(zbuffer_scale=0),
        dict(zbuffer_scale=1.5),
        dict(zbuffer_tolerance=-0.1),
        dict(chunk_points=0),
        dict(visibility="raycast"),
        dict(votes="soft"),
    ],
)
def test_settings_refuse_out_of_range_values_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Label3DSettings(**bad)


def test_defaults_are_the_official_ones():
    s = Label3DSettings()
    assert (s.every, s.max_images, s.min_depth, s.visibility, s.votes) == (1, None, 0.1, "none", "count")
    from frugalvl.presets.points import load_points_preset

    preset = load_points_preset("stpls3d")
    assert preset["class_weights"] == [1, 1, 2, 2, 3, 1]
    assert preset["segearth_ov3"] == dict(
        prob_thd=0.1, confidence_threshold=0.1, bg_idx=5, slide_crop=0, slide_stride=0
    )
    assert sum(len(c.split(",")) for c in preset["classes"]) == 13
