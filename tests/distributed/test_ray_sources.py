"""An area of interest on ``--engine ray``: the workers open the scene cut to the AOI like the driver,
so the outputs are the bytes of the single-process run."""

from __future__ import annotations

from pathlib import Path

from frugalvl.segment.pipeline import segment_files
from frugalvl.segment.scene_settings import SceneSettings, SegmentRunSettings
from frugalvl.testing.ray_workers import ColourFactory


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_bbox_on_ray_equals_the_local_run(ray_cluster, real_inputs, tmp_path, caplog):
    import logging

    from frugalvl.distributed.ray_segment import segment_files_ray

    _, vrt = real_inputs
    # columns 200..800, rows 200..700 of the 1200² scene (0.5 m, EPSG:32632): a 896×1200 cut, 6 tiles
    bbox = (500100.0, 5599650.0, 500400.0, 5599900.0)
    settings = SegmentRunSettings(scene=SceneSettings(bbox=bbox, bbox_crs="EPSG:32632"))
    local = segment_files(ColourFactory()(), [vrt], tmp_path / "local", settings, progress=False)
    caplog.set_level(logging.INFO, logger="frugalvl.distributed.ray_segment")
    ray = segment_files_ray(ColourFactory(), [vrt], tmp_path / "ray", settings, workers=2, progress=False, min_tiles=2)
    assert not local.failed and not ray.failed
    assert "scene: 6 of 6 tile(s) to segment" in caplog.text  # spread tile by tile over the workers
    ref, got = _outputs(tmp_path / "local"), _outputs(tmp_path / "ray")
    assert set(got) == set(ref) and "scene.tif" in got
    assert all(got[k] == ref[k] for k in ref), [k for k in ref if got[k] != ref[k]]
    import rasterio

    with rasterio.open(tmp_path / "ray" / "scene.tif") as out:
        assert out.shape == (896, 1200)
        labels = out.read(1)
    assert (labels[200:700, 200:800] != 255).all() and (labels[:190] == 255).all()
