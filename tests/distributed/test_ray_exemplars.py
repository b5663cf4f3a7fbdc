"""``segment --engine ray --exemplars``: the exemplars are read and placed once by one Ray task, and the
workers' outputs are the bytes of the single-process run: SegEarth-OV on a scene spread tile by tile
(prototypes computed once), SegEarth-OV3 on several images (file rows, each input prompted with its own
boxes, the tokens reused on the other)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from frugalvl import cli
from tests.distributed.test_ray_segment import _outputs


def _exemplars(folder: Path) -> Path:
    """Pixel boxes: a new class in crop1 only (128 px), a negative example in every crop."""
    path = folder / "ex.gpkg"
    gpd.GeoDataFrame(
        {"class": ["pond", "land"], "positive": [True, False]}, geometry=[box(100, 100, 120, 122), box(8, 10, 30, 28)]
    ).to_file(path)
    return path


def _same_on_ray(common: list, tmp_path: Path, capsys) -> str:
    assert cli.main(["segment", *common, "-o", str(tmp_path / "local")]) == 0, capsys.readouterr().err
    local_out = capsys.readouterr().out
    code = cli.main(["segment", *common, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out == local_out  # the same class table
    got, ref = _outputs(tmp_path / "ray"), _outputs(tmp_path / "local")
    assert set(got) == set(ref)
    for name in ref:
        if name.endswith("_probs.npy"):  # float scores: the workers' one-thread sums may differ in the last bits
            a, b = (np.load(tmp_path / run / name) for run in ("ray", "local"))
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)
        else:
            assert got[name] == ref[name], name
    return local_out


def test_clip_exemplars_on_ray_equal_the_local_run(ray_cluster, real_inputs, tiny_clip_file, tmp_path, capsys):
    """The 1200² VRT scene goes tile by tile (9 tile rows); exemplars in its map coordinates."""
    import rasterio

    _, vrt = real_inputs
    with rasterio.open(vrt) as src:
        t, crs = src.transform, src.crs
    corners = [(100, 100, 300, 260), (700, 650, 820, 800)]
    boxes = [box(*(t * (c0, r1)), *(t * (c1, r0))) for c0, r0, c1, r1 in corners]
    ex = tmp_path / "ex.gpkg"
    gpd.GeoDataFrame({"class": ["pond", "land"], "positive": [True, False]}, geometry=boxes, crs=crs).to_file(ex)
    common = [str(vrt), "--classes", "water;land", "--clip", str(tiny_clip_file), "--no-progress"]
    common += ["--exemplars", str(ex), "--save-probs"]
    out = _same_on_ray(common, tmp_path, capsys)
    assert "pond" in out and "1 segmented" in out


def test_sam3_exemplars_on_ray_equal_the_local_run(ray_cluster, real_inputs, tmp_path, tmp_path_factory, capsys):
    pytest.importorskip("transformers")
    from tests.segment.test_segearth_ov3 import informative_sam3

    sam3 = informative_sam3()
    folder = tmp_path_factory.mktemp("sam3-ray")
    sam3.model.save_pretrained(folder)
    sam3.processor.save_pretrained(folder)
    crops, _ = real_inputs
    ex = _exemplars(tmp_path)
    common = [*map(str, crops[:2]), "--method", "segearth-ov3", "--sam3", str(folder), "--classes", "water;land"]
    common += ["--exemplars", str(ex), "--save-probs", "--no-progress", "--exemplar-tokens-everywhere"]
    out = _same_on_ray(common, tmp_path, capsys)
    assert "pond" in out and "2 segmented" in out
