"""Bad input to ``frugalvl select`` never costs finished work or gives a stale result
(docs/reliability.md#coido-stages).

The table holds the bad command lines as data: each must exit 2 with one line naming the problem,
and leave the work folder exactly as it was (no file deleted, changed or half-written).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.select import ClusterSettings, FeatureSettings, PrepareSettings, pipeline
from frugalvl.select.scorer import Scorer, save_scorer
from frugalvl.select.train_settings import TrainSettings, default_workers

FEATURES = FeatureSettings(workers=0, shard_size=64, batch_size=64, progress=False)
FEATURE_ARGS = ["--workers", "0", "--shard-size", "64", "--clip-batch-size", "64", "--no-progress"]
CLUSTERS = ClusterSettings(n_clusters=4, knn=10)


@pytest.fixture(scope="session")
def finished(tmp_path_factory, dataset, select_clip_file) -> Path:
    """A work folder with every stage done (a stand-in scorer for the training)."""
    data, root = dataset
    work = tmp_path_factory.mktemp("finished") / "work"
    pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
    pipeline.features(work, replace(FEATURES, clip=str(select_clip_file)))
    pipeline.cluster(work, CLUSTERS)
    clip, names, _ = pipeline.load_features(work)
    save_scorer(work / "train" / "scorer.pt", Scorer(clip.shape[1], names))
    pipeline.score(work)
    return work


@pytest.fixture()
def work(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "work"))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with a hash of its content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# (command line with {W} = a finished work folder, {T} = a temporary folder, {D} = the data; message fragment)
BAD_COMMANDS = [
    # 2: --force never deletes finished work on a typo
    ("features -w {W} --force --clip {T}/typo.pt", "does not exist"),
    ("features -w {W} --force --clip ViT-B-16:{T}/typo.pt", "does not exist"),
    ("train -w {W} --force --mllm {T}/typo-llava", "does not exist"),
    ("cluster -w {W} --force --clusters 0", "--clusters"),
    # 7: numbers checked at parse time
    ("cluster -w {W} --knn 0", "--knn"),
    ("cluster -w {W} --subset-ratio 1.5", "--subset-ratio"),
    ("cluster -w {W} --clusters foo", "--clusters"),
    ("train -w {W} --mllm {T} --lr -1", "--lr"),
    ("train -w {W} --mllm {T} --lr nan", "--lr"),
    ("train -w {W} --mllm {T} --num-workers -1", "--num-workers"),
    ("train -w {W} --mllm {T} --batch-size 0", "--batch-size"),
    ("train -w {W} --mllm {T} --epochs 0", "--epochs"),
    ("train -w {W} --mllm {T} --grad-accum 0", "--grad-accum"),
    ("train -w {W} --mllm {T} --max-length 0", "--max-length"),
    ("train -w {W} --mllm {T} --warmup-ratio 2", "--warmup-ratio"),
    ("train -w {W} --mllm {T} --save-minutes -1", "--save-minutes"),
    ("train -w {W} --mllm {T} --lora-r 0", "--lora-r"),
    ("train -w {W} --mllm {T} --max-grad-norm -1", "--max-grad-norm"),
    ("train -w {W} --mllm {T} --loss nonsense", "--loss"),
    ("features -w {W} --clip-batch-size 0", "--clip-batch-size"),
    ("features -w {W} --shard-size 0", "--shard-size"),
    ("features -w {W} --workers -1", "--workers"),
    ("features -w {W} --text-concurrency 0", "--text-concurrency"),
    ("score -w {W} --score-batch-size 0", "--score-batch-size"),
    ("pick -w {W} --ratio 0 -o {T}/out.json", "--ratio"),
    ("pick -w {W} --count 0 -o {T}/out.json", "--count"),
    # 10: --count -5 names --count (never "lower --ratio")
    ("pick -w {W} --count -5 -o {T}/out.json", "--count"),
    # 10: a mistyped local --mllm is a path that does not exist, not a network problem
    ("train -w {W} --mllm ./tiny-lava", "does not exist"),
    ("train -w {W} --mllm {T}/models/tiny-lava", "does not exist"),
    # 8: run checks every argument before the first stage
    ("run {D} -w {W} -o {T}/out.json --force", "--mllm"),
    ("run {D} -w {W} -o {T}/out.json --force --mllm {T}/typo-llava", "does not exist"),
    ("run {D} -w {W} -o {T}/out.json --clusters 0", "--clusters"),
]


@pytest.mark.parametrize("command,fragment", BAD_COMMANDS, ids=[c for c, _ in BAD_COMMANDS])
def test_bad_command_exits_2_with_one_line_and_leaves_the_work_alone(
    command, fragment, work, tmp_path, dataset, select_cli, capsys
):
    data, _ = dataset
    (tmp_path / "models").mkdir()
    before = snapshot(work)
    capsys.readouterr()
    argv = command.format(W=work, T=tmp_path, D=data).split()
    assert select_cli(*argv) == 2
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if ": error: " in line]
    assert len(message) == 1 and fragment in message[0], err
    assert "None" not in err and "no network" not in err
    if "--count -5" in command:
        assert "ratio" not in message[0]
    assert snapshot(work) == before
    assert not (tmp_path / "out.json").exists()


def test_fresh_run_without_mllm_runs_no_stage(dataset, tmp_path, select_cli, capsys):
    data, root = dataset
    assert select_cli("run", data, "--image-root", root, "-w", tmp_path / "w", "-o", tmp_path / "out.json") == 2
    assert "--mllm" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # prepare never started


def test_run_accepts_force(dataset):
    from frugalvl.cli import build_parser

    data, _ = dataset
    args = build_parser(["select"]).parse_args(
        ["select", "run", str(data), "-w", "w", "-o", "o.json", "--force", "--mllm", "m"]
    )
    assert args.force and args.mllm == "m"


# ---------------------------------------------------------------- 2: replace only when the new result is complete


class Killed(Exception):
    pass


def test_forced_features_killed_half_way_keep_the_old_result(work, select_clip_file):
    before = snapshot(work / "features")
    old_clip = np.load(work / "features" / "clip.npy")

    def kill(what, k):
        raise Killed

    with pytest.raises(Killed):
        pipeline.features(work, replace(FEATURES, clip=str(select_clip_file)), force=True, hook=kill)
    assert snapshot(work / "features") == before  # old result untouched
    assert (work / ".features.new").is_dir()  # the replacement in progress beside it
    pipeline.features(work, replace(FEATURES, clip=str(select_clip_file)), force=True)
    assert not (work / ".features.new").exists() and not (work / ".features.old").exists()
    np.testing.assert_array_equal(np.load(work / "features" / "clip.npy"), old_clip)  # same settings, same features
    assert json.loads((work / "features" / "meta.json").read_text())["stage"] == "features"


def test_forced_cluster_swaps_in_the_new_result(work):
    old = np.load(work / "subset" / "indices.npy")
    pipeline.cluster(work, replace(CLUSTERS, seed=7), force=True)
    assert not np.array_equal(np.load(work / "subset" / "indices.npy"), old)
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- 3: changed settings or models never reuse results


def _fake_training(monkeypatch, calls):
    from frugalvl.select import trainer

    def fake(work, settings, folder):
        calls.append(settings)
        clip, names, _ = pipeline.load_features(work)
        save_scorer(Path(folder) / "scorer.pt", Scorer(clip.shape[1], names))
        return Path(folder) / "scorer.pt"

    monkeypatch.setattr(trainer, "train", fake)


def test_train_with_other_settings_or_model_stops_naming_them(work, tmp_path, monkeypatch, select_log):
    calls: list = []
    _fake_training(monkeypatch, calls)
    mllm = tmp_path / "mllm"
    mllm.mkdir()
    (mllm / "model.safetensors").write_bytes(b"weights one")
    s = TrainSettings(mllm=str(mllm))
    shutil.rmtree(work / "train")
    pipeline.train(work, s)
    pipeline.train(work, replace(s, num_workers=0, save_minutes=1))  # no effect on the result: skipped
    assert len(calls) == 1 and "skipping" in select_log.text
    for changed, name in ((replace(s, loss="importance"), "loss"), (replace(s, lr=1e-4), "lr")):
        with pytest.raises(UserError, match=rf"\b{name}\b.*\bforce\b") as err:
            pipeline.train(work, changed)
        assert "recompute them with --force" in render_error(err.value)
    (mllm / "model.safetensors").write_bytes(b"weights two")  # another checkpoint, same path
    with pytest.raises(UserError, match=r"mllm_identity.*\bforce\b") as err:
        pipeline.train(work, s)
    assert "--force" in render_error(err.value)
    pipeline.train(work, s, force=True)
    assert len(calls) == 2 and not (work / ".train.new").exists()


def test_features_with_another_clip_at_the_same_path_stop(work, select_clip_file, tmp_path):
    clip = tmp_path / "clip.pt"
    shutil.copy(select_clip_file, clip)
    settings = replace(FEATURES, clip=str(clip))
    pipeline.features(work, settings, force=True)
    pipeline.features(work, settings)  # same file: skipped
    with open(clip, "ab") as f:
        f.write(b"\0")  # a different file now
    with pytest.raises(UserError, match=r"clip_identity.*\bforce\b") as err:
        pipeline.features(work, settings)
    assert "--force" in render_error(err.value)


def test_pick_records_its_settings_and_the_scores(work, tmp_path):
    pipeline.pick(work, tmp_path / "out.json")
    meta = json.loads((work / "pick" / "meta.json").read_text())
    assert meta["settings"]["ratio"] == 0.2 and meta["upstream"]["r"]


# ---------------------------------------------------------------- 8, 9, 10: samples checked by prepare


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def _sample(i, image=None, conversations=None):
    conv = (
        conversations
        if conversations is not None
        else [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    )
    return {"id": f"s{i}", **({"image": image} if image else {}), "conversations": conv}


def test_prepare_reports_and_excludes_invalid_samples(tmp_path):
    root = tmp_path / "images"
    for k in range(3):
        _image(root / "coco" / f"{k}.png")
    _image(tmp_path / "outside.png")
    records = [
        _sample(0, "coco/0.png"),
        _sample(1, "coco/1.png", []),
        _sample(2, "coco/2.png", [{"value": "<image>\nq"}, {"from": "gpt", "value": "a"}]),
        _sample(3, conversations=[{"from": "human", "value": "only a question"}]),
        _sample(4, "../outside.png"),
        _sample(5, str(tmp_path / "outside.png")),
        _sample(6, "coco/../../outside.png"),
        _sample(7, "coco/./1.png"),
    ]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    report = pipeline.prepare(data, tmp_path / "w", PrepareSettings(image_root=str(root)))
    assert set(report["invalid"]) == {"s1", "s2", "s3", "s4", "s5", "s6"}
    assert "empty" in report["invalid"]["s1"] and "'from'" in report["invalid"]["s2"]
    assert "outside" in report["invalid"]["s4"] and "outside" in report["invalid"]["s5"]
    samples = pipeline.load_samples(tmp_path / "w")
    assert [s["status"] for s in samples] == [
        "ok",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "ok",
    ]
    assert all(s["image_path"] is None for s in samples if s["status"] == "invalid")
    assert {s["dataset"] for s in samples if s["status"] == "ok"} == {"coco"}
    # fatal under the error policy, naming a sample and the report
    with pytest.raises(UserError, match="invalid .*s1"):
        pipeline.prepare(data, tmp_path / "w2", PrepareSettings(image_root=str(root), missing_images="error"))
    # absolute paths only when allowed explicitly
    allowed = pipeline.prepare(data, tmp_path / "w3", PrepareSettings(image_root=str(root), allow_absolute_images=True))
    assert set(allowed["invalid"]) == {"s1", "s2", "s3"}


def test_prepare_refuses_an_empty_list_and_names_no_none_root(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("[]")
    with pytest.raises(UserError, match="no sample"):
        pipeline.prepare(data, tmp_path / "w", PrepareSettings())
    data.write_text(json.dumps([_sample(0, "nowhere/0.png")]))
    with pytest.raises(UserError, match="none of the 1 images") as err:
        pipeline.prepare(data, tmp_path / "w", PrepareSettings())
    assert "None" not in str(err.value) and "image_root" in str(err.value)
    assert "(no --image-root was given)" in render_error(err.value)


# ---------------------------------------------------------------- training defaults


def test_default_workers_follow_the_cores(monkeypatch):
    import os

    for cores, workers in ((1, 0), (2, 1), (3, 2), (16, 4), (None, 0)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert default_workers() == workers
    s = TrainSettings()
    assert s.save_minutes == 10 and s.save_steps == 0  # time-based saving by default


def test_train_accepts_no_progress():
    import argparse

    from frugalvl.commands.select import _train_parser, train_settings

    parser = argparse.ArgumentParser()
    _train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "-w", "w", "--mllm", "m", "--no-progress", "--save-minutes", "2.5"])
    s = train_settings(args)
    assert not s.progress and s.save_minutes == 2.5
    assert train_settings(parser.parse_args(["train", "-w", "w", "--mllm", "m"])).progress
