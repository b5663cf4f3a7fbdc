"""``select features|score --engine ray`` write what the single-process stages write (docs/ray.md)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from frugalvl import cli
from frugalvl.select import FeatureSettings, pipeline

FEATURE_ARGS = ["--workers", "0", "--shard-size", "32", "--clip-batch-size", "16", "--no-progress"]


def _shards(folder):
    out = {}
    for path in sorted((folder / "features" / "clip_shards").glob("shard-*.npz")):
        with np.load(path) as z:
            out[path.name] = {k: z[k] for k in z.files}
    return out


def test_features_and_score_on_ray_equal_the_local_stages(ray_cluster, easyvqa_work, select_clip_file, tmp_path):
    from frugalvl.distributed.ray_select import score_ray
    from frugalvl.select.scorer import Scorer, save_scorer

    local, ray_work = tmp_path / "local", tmp_path / "ray"
    for work in (local, ray_work):
        shutil.copytree(easyvqa_work, work)
    settings = FeatureSettings(clip=str(select_clip_file), workers=0, shard_size=32, batch_size=16, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each Ray actor (num_cpus=1): CPU float sums depend on the thread count
    try:
        pipeline.features(local, settings)
    finally:
        torch.set_num_threads(threads)
    argv = [
        "select",
        "features",
        "-w",
        str(ray_work),
        "--clip",
        str(select_clip_file),
        *FEATURE_ARGS,
        "--engine",
        "ray",
        "--ray-workers",
        "2",
    ]
    assert cli.main(argv) == 0
    ref, got = _shards(local), _shards(ray_work)
    n = len(json.loads((local / "prepare" / "samples.json").read_text()))
    assert len(ref) == -(-n // 32) >= 3 and list(got) == list(ref)
    for name in ref:
        assert ref[name].keys() == got[name].keys()
        for key in ref[name]:
            assert ref[name][key].dtype == got[name][key].dtype
            np.testing.assert_array_equal(ref[name][key], got[name][key], err_msg=f"{name}:{key}")
    for name in ("clip.npy", "image_ok.npy", "scores.json", "report.json"):
        assert (ray_work / "features" / name).read_bytes() == (local / "features" / name).read_bytes(), name
    # score: the same scorer in both folders; rows of 2 batches of 16 spread over the 2 workers
    clip, names, _ = pipeline.load_features(local)
    for work in (local, ray_work):
        torch.manual_seed(0)
        save_scorer(work / "train" / "scorer.pt", Scorer(clip.shape[1], names))
    torch.set_num_threads(1)
    try:
        r_local = pipeline.score(local, batch_size=16)
    finally:
        torch.set_num_threads(threads)
    r_ray = score_ray(ray_work, batch_size=16, workers=2, progress=False, chunk_batches=2)
    assert r_ray.dtype == np.float32 and len(r_ray) == n
    np.testing.assert_array_equal(r_ray, r_local)
    for name in ("r.npy", "difficulty.json"):
        assert (ray_work / "score" / name).read_bytes() == (local / "score" / name).read_bytes(), name
    # both stages are done now: a second --engine ray run skips them without starting Ray work
    assert cli.main(argv) == 0
    assert json.loads((ray_work / "features" / "report.json").read_text())["scores"] == ["clipscore"]
