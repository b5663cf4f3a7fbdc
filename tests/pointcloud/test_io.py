"""Round trips: PLY -> labels -> PLY keeps every input property; LAS/LAZ likewise."""

from __future__ import annotations

import numpy as np
import pytest

from frugalvl.pointcloud import Label3DSettings, label_cloud
from frugalvl.pointcloud.io import open_cloud, output_path, write_labelled
from frugalvl.testing.pointcloud import LabelColourSegmenter

from .conftest import read_ply


def test_ply_round_trip_keeps_every_input_property(synthetic, tmp_path):
    src = read_ply(synthetic["cloud"])
    seg = LabelColourSegmenter.for_classes()
    result = label_cloud(seg, synthetic["photos"], synthetic["block"], synthetic["cloud"], tmp_path)
    out = read_ply(result.output)
    assert out.dtype.names == (
        "x", "y", "z", "input_red", "input_green", "input_blue", "intensity", "class", "red", "green", "blue", "pred_label"
    )  # fmt: skip
    for name in src.dtype.names:
        kept = f"input_{name}" if name in ("red", "green", "blue") else name
        assert out[kept].dtype == src[name].dtype
        np.testing.assert_array_equal(out[kept], src[name])
    assert out["pred_label"].dtype == np.int16
    from frugalvl.raster import palette

    colours = np.concatenate([[[51, 51, 51]], palette(["ground", "building"])])[out["pred_label"] + 1]
    np.testing.assert_array_equal(np.stack([out["red"], out["green"], out["blue"]], 1), colours)
    # relabelling the output keeps the original colours and replaces the prediction
    again = label_cloud(seg, synthetic["photos"], synthetic["block"], result.output, tmp_path / "again")
    twice = read_ply(again.output)
    assert twice.dtype.names == out.dtype.names
    np.testing.assert_array_equal(twice["input_red"], src["red"])


def test_drop_gives_the_official_layout_and_ascii_ply_reads(synthetic, tmp_path):
    from frugalvl.testing.pointcloud import write_ply

    ascii_cloud = write_ply(tmp_path / "ascii.ply", synthetic["xyz"][:500], synthetic["truth"][:500], text=True)
    seg = LabelColourSegmenter.for_classes()
    result = label_cloud(
        seg, synthetic["photos"], synthetic["block"], ascii_cloud, tmp_path / "o", Label3DSettings(input_colours="drop")
    )
    out = read_ply(result.output)
    assert out.dtype.names == ("x", "y", "z", "intensity", "class", "red", "green", "blue", "pred_label")
    assert result.output.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert len(out) == 500


def _las(path, xyz, fmt=3, offsets=(500000.0, 5600000.0, 0.0)):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=fmt, version="1.2")
    header.offsets, header.scales = list(offsets), [0.001, 0.001, 0.001]
    header.add_extra_dims([laspy.ExtraBytesParams("confidence", np.float32)])
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0] + offsets[0], xyz[:, 1] + offsets[1], xyz[:, 2]
    las.intensity = np.arange(len(xyz)) % 65535
    las.classification = np.arange(len(xyz)) % 20
    las.confidence = np.linspace(0, 1, len(xyz)).astype(np.float32)
    if "red" in las.point_format.dimension_names:
        las.red, las.green, las.blue = (np.arange(len(xyz)) * k % 65535 for k in (3, 5, 7))
    las.write(path)
    return path


@pytest.mark.parametrize("fmt,suffix", [(3, ".las"), (1, ".laz")])
def test_las_round_trip_keeps_every_dimension(tmp_path, fmt, suffix):
    laspy = pytest.importorskip("laspy")
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 100, (1000, 3))
    src_path = _las(tmp_path / f"c{suffix}", xyz, fmt)
    cloud = open_cloud(src_path)
    labels = rng.integers(-1, 3, len(xyz)).astype(np.int16)
    colours = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    out = write_labelled(cloud, output_path(cloud, tmp_path), labels, colours, size=300)
    assert out.name == f"c_labels{suffix}"
    src, dst = laspy.read(src_path), laspy.read(out)
    for name in src.point_format.dimension_names:
        kept = f"input_{name}" if name in ("red", "green", "blue") else name
        np.testing.assert_array_equal(np.asarray(dst[kept]), np.asarray(src[name]))
    np.testing.assert_array_equal(dst.x, src.x)
    np.testing.assert_array_equal(dst.pred_label, labels)
    table = np.concatenate([[[51, 51, 51]], colours]).astype(np.uint16) * 257
    np.testing.assert_array_equal(np.stack([dst.red, dst.green, dst.blue], 1), table[labels + 1])
    assert dst.header.point_format.id == 3  # format 1 gains colours as format 3


def test_las_cloud_through_the_pipeline_matches_the_ply_one(synthetic, tmp_path):
    pytest.importorskip("laspy")
    import laspy

    src = _las(tmp_path / "cloud.las", synthetic["xyz"], offsets=(0.0, 0.0, 0.0))
    seg = LabelColourSegmenter.for_classes()
    ply = label_cloud(seg, synthetic["photos"], synthetic["block"], synthetic["cloud"], tmp_path / "p")
    las = label_cloud(seg, synthetic["photos"], synthetic["block"], src, tmp_path / "l")
    ply_labels = read_ply(ply.output)["pred_label"]
    las_labels = np.asarray(laspy.read(las.output).pred_label)
    # the PLY holds float32 coordinates, the LAS millimetres: the few points that differ sit on a pixel edge
    assert (ply_labels == las_labels).mean() > 0.995


def test_a_las_cloud_can_be_written_as_ply(tmp_path):
    pytest.importorskip("laspy")
    import laspy

    xyz = np.random.default_rng(0).uniform(0, 100, (50, 3))
    src = laspy.read(_las(tmp_path / "c.las", xyz))
    cloud = open_cloud(tmp_path / "c.las")
    out = write_labelled(cloud, output_path(cloud, tmp_path, "ply"), np.zeros(50, np.int16), np.zeros((1, 3)))
    assert out.name == "c_labels.ply"
    data = read_ply(out)
    assert data.dtype.names[:4] == ("x", "y", "z", "intensity") and data.dtype.names[-4:] == (
        "red", "green", "blue", "pred_label"
    )  # fmt: skip
    np.testing.assert_array_equal(data["x"], src.x)  # float64: the scaled coordinates
    np.testing.assert_array_equal(data["input_green"], src.green)
    np.testing.assert_array_equal(data["confidence"], src.confidence)
