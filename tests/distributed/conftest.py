"""One local Ray cluster for all of tests/distributed (2 CPUs on 127.0.0.1, started once, shut down after),
real inputs for ``segment``, and a prepared easy-vqa work folder with a tiny CLIP for ``select``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING", log_to_driver=False
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def real_inputs(tmp_path_factory):
    """Three real PNG crops of the bundled Landsat scene and one 1200² VRT scene made of real pixels
    (a VRT always goes to the tiled path: 9 tiles of 512 px, spread tile by tile)."""
    import cv2
    from rasterio.shutil import copy as rio_copy

    from frugalvl.testing.segmenters import write_test_scene
    from tests.conftest import landsat_rgb

    folder = tmp_path_factory.mktemp("ray_inputs")
    rgb = landsat_rgb(512)
    crops = []
    for i, (y, x, s) in enumerate([(0, 0, 96), (200, 150, 128), (380, 300, 80)]):
        path = folder / f"crop{i}.png"
        cv2.imwrite(str(path), rgb[y : y + s, x : x + s, ::-1])
        crops.append(path)
    tif = folder / "scene_data.tif"
    write_test_scene(tif, 1200, 1200, dtype="uint16", source=crops[1])
    vrt = folder / "scene.vrt"
    rio_copy(str(tif), str(vrt), driver="VRT")
    return crops, vrt


@pytest.fixture(scope="session")
def select_clip_file(tmp_path_factory):
    """The tiny 32 px CLIP of the select tests."""
    from frugalvl.testing.clip import write_tiny_openai_clip

    return write_tiny_openai_clip(
        tmp_path_factory.mktemp("select_clip") / "tiny-openai-clip.pt", image_size=32, patch_size=8, width=64
    )


@pytest.fixture(scope="session")
def easyvqa_work(tmp_path_factory):
    """A prepared CoIDO work folder of easy-vqa (image and text-only samples)."""
    from frugalvl.select import PrepareSettings, pipeline
    from frugalvl.testing.easyvqa import write_easyvqa_llava

    data, root = write_easyvqa_llava(tmp_path_factory.mktemp("evqa"))
    work = tmp_path_factory.mktemp("evqa_work") / "prepared"
    pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
    return work
