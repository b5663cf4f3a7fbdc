"""``change --engine ray`` on the local 2-CPU Ray cluster: pairs and scene tiles give the local run's bytes."""

from __future__ import annotations

import pytest

from frugalvl.cli import main
from tests.change.conftest import pair
from tests.change.test_cli import png
from tests.change.test_scene import outputs


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    from tests.segment.test_segearth_ov3 import informative_sam3

    bundle = informative_sam3()
    folder = tmp_path_factory.mktemp("sam3-tiny-ray-change")
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    return folder


def test_pairs_on_ray_equal_the_local_run(ray_cluster, sam3_dir, tmp_path):
    before, after = pair()
    for folder, image in (("A", before), ("B", after)):
        (tmp_path / folder).mkdir()
        png(tmp_path / folder / "p1.png", image)
        png(tmp_path / folder / "p2.png", image[::-1].copy())
    common = [str(tmp_path / "A"), str(tmp_path / "B"), "--sam3", str(sam3_dir), "--semantic", "--no-progress"]
    assert main(["change", *common, "-o", str(tmp_path / "local")]) == 0
    assert main(["change", *common, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    local, ray = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert len(local) == 2 * 6 and local == ray  # change, overlay, 2 label maps, from-to, table per pair
    assert main(["change", *common, "-o", str(tmp_path / "ray"), "--engine", "ray"]) == 0  # all done: skipped
    with pytest.raises(SystemExit):
        main(["change", *common, "-o", str(tmp_path / "x"), "--engine", "spark"])


def test_scene_tiles_on_ray_equal_the_local_run(ray_cluster, sam3_dir, tmp_path):
    from tests.change.test_scene import CLASSES, scene_pair

    a, b, _, _ = scene_pair(tmp_path)  # 32×64: eight 16² tiles, spread over two actors
    common = [str(a), str(b), "--sam3", str(sam3_dir), "--classes", CLASSES, "--tile", "16", "--semantic"]
    assert main(["change", *common, "--no-progress", "-o", str(tmp_path / "local")]) == 0
    ray_args = ["--engine", "ray", "--workers", "2", "--no-progress"]
    assert main(["change", *common, *ray_args, "-o", str(tmp_path / "ray")]) == 0
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert not (tmp_path / "ray" / ".s_change.parts").exists()
