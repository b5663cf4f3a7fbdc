"""The stages end to end through ``frugalvl select``: skip-if-done, resume after a kill, same seed
same selection, and one-line user errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frugalvl.select import ClusterSettings, FeatureSettings, PrepareSettings, pipeline

FEATURE_ARGS = ["--workers", "0", "--shard-size", "32", "--clip-batch-size", "32", "--no-progress"]
CLUSTER_ARGS = ["--clusters", "4", "--knn", "10"]


def _stand_in_scorer(work, seed=0):
    from frugalvl.select.scorer import Scorer, save_scorer

    clip, names, _ = pipeline.load_features(work)
    torch.manual_seed(seed)
    save_scorer(work / "train" / "scorer.pt", Scorer(clip.shape[1], names))


def test_stages_through_the_cli(select_cli, dataset, select_clip_file, tmp_path, capsys, select_log):
    data, root = dataset
    work, out = tmp_path / "work", tmp_path / "sel.json"
    assert select_cli("prepare", data, "--image-root", root, "-w", work) == 0
    assert select_cli("features", "-w", work, "--clip", select_clip_file, *FEATURE_ARGS) == 0
    report = json.loads((work / "features" / "report.json").read_text())
    assert report["scores"] == ["clipscore"] and "CLIP score alone" in report["note"]
    scaled = np.array(json.loads((work / "features" / "scores.json").read_text())["scaled"]["clipscore"])
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    assert select_cli("cluster", "-w", work, *CLUSTER_ARGS) == 0
    idx, labels = np.load(work / "subset" / "indices.npy"), np.load(work / "subset" / "clusters.npy")
    assert len(idx) == len(labels) == 30 and set(labels.tolist()) == {0, 1, 2, 3}
    _stand_in_scorer(work)
    assert select_cli("score", "-w", work) == 0
    r = np.load(work / "score" / "r.npy")
    difficulty = json.loads((work / "score" / "difficulty.json").read_text())
    assert difficulty["7"] == pytest.approx(-float(r[7]))
    assert select_cli("pick", "-w", work, "--ratio", "0.2", "-o", out) == 0
    inputs = json.loads(data.read_text())
    picked = json.loads(out.read_text())
    assert len(picked) == 30 and all(p in inputs for p in picked)
    rep = json.loads((work / "pick" / "report.json").read_text())
    assert sum(rep["selected_per_cluster"].values()) == 30
    # every stage is skipped on a second run; `run` without --mllm reuses the scorer
    select_log.messages.clear()
    assert (
        select_cli(
            "run",
            data,
            "--image-root",
            root,
            "-w",
            work,
            "--clip",
            select_clip_file,
            *FEATURE_ARGS,
            *CLUSTER_ARGS,
            "-o",
            tmp_path / "again.json",
        )
        == 0
    )
    assert select_log.text.count("skipping") == 4  # prepare, features, cluster, score
    assert json.loads((tmp_path / "again.json").read_text()) == picked
    # changed settings need --force
    assert select_cli("cluster", "-w", work, "--clusters", "3") == 2
    assert "--force" in capsys.readouterr().err


def test_user_errors_exit_2_with_one_line(select_cli, dataset, tmp_path, capsys):
    data, root = dataset
    assert select_cli("prepare", tmp_path / "none.json", "-w", tmp_path / "w") == 2
    assert "does not exist" in capsys.readouterr().err
    assert select_cli("prepare", data, "--image-root", tmp_path, "-w", tmp_path / "w") == 2
    assert "none of the" in capsys.readouterr().err
    assert select_cli("prepare", data, "--image-root", root, "-w", tmp_path / "w") == 0
    capsys.readouterr()  # progress lines are logged to stderr too
    assert select_cli("features", "-w", tmp_path / "w", "--clip", "No-Such-CLIP", *FEATURE_ARGS) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown CLIP" in err and len(err.splitlines()) == 1
    assert select_cli("score", "-w", tmp_path / "w") == 2
    assert "select features" in capsys.readouterr().err
    assert select_cli("features", "-w", tmp_path / "w", "--text-quality", "endpoint", *FEATURE_ARGS) == 2
    assert "base URL" in capsys.readouterr().err


class Killed(Exception):
    pass


def test_killed_features_stage_resumes_to_the_same_result(dataset, select_clip_file, tmp_path):
    data, root = dataset
    settings = FeatureSettings(clip=str(select_clip_file), workers=0, shard_size=32, batch_size=32, progress=False)
    full, cut = tmp_path / "full", tmp_path / "cut"
    for work in (full, cut):
        pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
    pipeline.features(full, settings)

    def kill_after_two(what, k):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        pipeline.features(cut, settings, hook=kill_after_two)
    assert len(list((cut / "features" / "clip_shards").glob("shard-*.npz"))) == 2
    assert not (cut / "features" / "clip.npy").exists()
    computed = []
    pipeline.features(cut, settings, hook=lambda what, k: computed.append(k))
    assert computed == [2, 3, 4]  # only the shards the kill left undone
    np.testing.assert_array_equal(np.load(cut / "features" / "clip.npy"), np.load(full / "features" / "clip.npy"))
    assert (cut / "features" / "scores.json").read_text() == (full / "features" / "scores.json").read_text()
    # clip.npy is the shards' features in row order, assembled shard by shard (never concatenated in memory)
    shards = sorted((full / "features" / "clip_shards").glob("shard-*.npz"), key=lambda p: int(p.name.split("-")[2]))
    stacked = np.concatenate([np.load(p)["feature"] for p in shards])
    np.testing.assert_array_equal(np.load(full / "features" / "clip.npy"), stacked)


def test_run_sharded_keeps_only_what_is_asked(tmp_path):
    from frugalvl.select.features import run_sharded

    def compute(lo, hi):
        return {"big": np.arange(lo, hi)[:, None] * np.ones((1, 4)), "small": np.arange(lo, hi)}

    out = run_sharded(10, 3, tmp_path, "x", compute, progress=False, keep=("small",))
    assert set(out) == {"small"} and out["small"].tolist() == list(range(10))
    assert set(run_sharded(10, 3, tmp_path, "x", compute, progress=False)) == {"big", "small"}


def test_same_seed_same_selection(dataset, select_clip_file, tmp_path):
    data, root = dataset
    fs = FeatureSettings(clip=str(select_clip_file), workers=0, shard_size=64, batch_size=64, progress=False)
    picks = []
    for name, seed in (("a", 42), ("b", 42), ("c", 7)):
        work = tmp_path / name
        pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
        pipeline.features(work, fs)
        pipeline.cluster(work, ClusterSettings(seed=seed, n_clusters=4, knn=10))
        _stand_in_scorer(work)
        pipeline.score(work)
        pipeline.pick(work, work / "out.json")
        picks.append(
            (
                np.load(work / "subset" / "indices.npy"),
                np.load(work / "subset" / "clusters.npy"),
                (work / "out.json").read_text(),
            )
        )
    for x, y in zip(picks[0], picks[1]):
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
    assert not np.array_equal(picks[0][0], picks[2][0])


def test_run_end_to_end_with_tiny_llava(select_cli, dataset, select_clip_file, tmp_path):
    """`select run` with every stage real: easy-vqa data, tiny CLIP, tiny LLaVA trained with the scorer."""
    from frugalvl.testing.llava import build_tiny_llava

    data, root = dataset
    texts = [t["value"] for r in json.loads(data.read_text()) for t in r["conversations"]]
    mllm = build_tiny_llava(tmp_path / "tiny-llava", extra_text=texts)
    work, out = tmp_path / "work", tmp_path / "sel.json"
    argv = [
        "run",
        data,
        "--image-root",
        root,
        "-w",
        work,
        "--clip",
        select_clip_file,
        *FEATURE_ARGS,
        *CLUSTER_ARGS,
        "--mllm",
        mllm,
        "--batch-size",
        "8",
        "--num-workers",
        "0",
        "--no-gradient-checkpointing",
        "-o",
        out,
    ]
    assert select_cli(*argv) == 0
    assert (work / "train" / "scorer.pt").is_file()
    inputs = json.loads(data.read_text())
    picked = json.loads(out.read_text())
    assert len(picked) == len(inputs) // 5 and all(p in inputs for p in picked)
    r = np.load(work / "score" / "r.npy")
    ids = np.load(work / "pick" / "selected_ids.npy")
    assert np.all(np.diff(r[ids]) >= 0)  # lowest r first


def test_cluster_solver_option_reaches_the_settings():
    from frugalvl.cli import build_parser
    from frugalvl.commands.select import cluster_settings

    parser = build_parser(["select"])
    assert cluster_settings(parser.parse_args(["select", "cluster", "-w", "w"])).solver == "auto"
    args = parser.parse_args(["select", "cluster", "-w", "w", "--cluster-solver", "exact"])
    assert cluster_settings(args).solver == "exact"
