"""Data-parallel upsampler training (docs/ray.md#training-across-gpus-accelerate-not-ray-train): the image stream's
per-process shares, and 2 CPU processes (accelerate launch, gloo) against single-process references
computed here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvl.errors import UserError
from frugalvl.models.jbu import JBUOne
from frugalvl.models.upsampler import load_upsampler
from frugalvl.train.checkpoints import read_train_checkpoint
from frugalvl.train.images import ImageStream, StreamPosition, list_training_images
from frugalvl.train.settings import UpsamplerTrainSettings
from frugalvl.train.trainer import UpsamplerTrainer
from tests.conftest import landsat_rgb, spacenet_labelled

REPO = Path(__file__).resolve().parents[2]
SMALL = UpsamplerTrainSettings(batch_size=2, crop_size=32, radius=1, n_jitters=2, workers=1)
CLI_OPTIONS = "--batch-size 2 --crop-size 32 --radius 1 --jitters 2 --workers 1 --no-progress --device cpu".split()


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
    """Four readable real remote-sensing images (two smaller than a crop side), no broken file."""
    folder = tmp_path_factory.mktemp("clean")
    Image.fromarray(landsat_rgb(96)).save(folder / "a.png")
    Image.fromarray(landsat_rgb(256)[100:164, 40:120]).save(folder / "b.png")
    Image.fromarray(spacenet_labelled(512)[0][:64, :80]).save(folder / "c.png")
    Image.fromarray(landsat_rgb(256)[:24, :48]).save(folder / "d.jpg")
    return folder


def _take(stream: ImageStream, batch: int, start: StreamPosition, n: int) -> list[tuple[np.ndarray, StreamPosition]]:
    gen = stream.batches(batch, start)
    try:
        return [next(gen) for _ in range(n)]
    finally:
        gen.close()


def test_process_shares_interleave_the_single_process_order(clean_folder):
    paths = list_training_images([clean_folder])
    one = _take(ImageStream(paths, 32, seed=3, workers=1), 2, StreamPosition(), 3)  # crosses two epochs
    crops = np.concatenate([b for b, _ in one])  # visits 0-3 of epoch 0, then 0-1 of epoch 1
    shares = [_take(ImageStream(paths, 32, seed=3, workers=1, rank=r, world=2), 1, StreamPosition(), 3) for r in (0, 1)]
    for step in range(3):
        assert np.array_equal(shares[0][step][0][0], crops[2 * step])  # rank 0: visits 0, 2, (next epoch) 0
        assert np.array_equal(shares[1][step][0][0], crops[2 * step + 1])
    # each share resumes from its own position
    for rank, share in enumerate(shares):
        stream = ImageStream(paths, 32, seed=3, workers=1, rank=rank, world=2)
        again = _take(stream, 1, share[0][1], 2)
        assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(again, share[1:]))
    with pytest.raises(UserError, match="at least one image per process"):
        ImageStream(paths[:1], 32, world=2)


def _reference_step(clip, paths: list[Path], settings: UpsamplerTrainSettings) -> UpsamplerTrainer:
    """Single process: the first global batch (4 crops); rank r's half is rows r::2; average the
    two halves' gradients by hand, then one optimiser step. On one intra-op thread, as the launched
    processes (OMP_NUM_THREADS=1): matrix products split over threads sum in another order, and the
    moments compared below are tiny (the comparison is of the averaging, not of float reassociation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reference_step_one_thread(clip, paths, settings)
    finally:
        torch.set_num_threads(threads)


def _reference_step_one_thread(clip, paths: list[Path], settings: UpsamplerTrainSettings) -> UpsamplerTrainer:
    gen = ImageStream(paths, settings.crop_size, settings.seed, 1).batches(4, StreamPosition())
    batch, _ = next(gen)
    gen.close()
    first = UpsamplerTrainer(clip, settings)
    first.backward(batch[0::2])
    second = UpsamplerTrainer(clip, settings)
    second.backward(batch[1::2])
    for p, q in zip(first.parts.parameters(), second.parts.parameters()):
        p.grad = (p.grad + q.grad) / 2
    first.apply_gradients()
    return first


LAUNCHED = """
import sys
from dataclasses import replace
from pathlib import Path

from frugalvl.cli import main
from frugalvl.models.clip import load_clip
from frugalvl.train.distributed import init_ranks
from frugalvl.train.images import list_training_images
from frugalvl.train.loop import train_upsampler
from frugalvl.train.settings import UpsamplerTrainSettings

images, clip, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
options = {OPTIONS}
common = ["train-upsampler", "--images", images, "--clip", clip, "--checkpoint-every", "1", *options]
assert main([*common, "-o", str(work / "a/up.ckpt"), "--steps", "3", "--keep-checkpoints", "0"]) == 0
assert main([*common, "-o", str(work / "b/up.ckpt"), "--steps", "2"]) == 0
assert main([*common, "-o", str(work / "b/up.ckpt"), "--steps", "3", "--resume"]) == 0
# no gradient clipping: the optimiser's first moment then shows the averaged gradient's scale
ranks = init_ranks("cpu")
settings = replace(UpsamplerTrainSettings(**{SETTINGS}), steps=1, early_clip_steps=0)
train_upsampler(load_clip(clip), list_training_images([images]), work / "c/up.ckpt", settings, progress=False, ranks=ranks)
"""


def test_two_processes_average_gradients_and_resume_bit_for_bit(
    tiny_clip_file, tiny_clip_model, clean_folder, tmp_path
):
    """2 CPU processes under accelerate launch (gloo), 4 short runs in one launch: about 20 s."""
    from dataclasses import asdict

    script = tmp_path / "launched.py"
    script.write_text(
        textwrap.dedent(LAUNCHED).replace("{OPTIONS}", repr(CLI_OPTIONS)).replace("{SETTINGS}", repr(asdict(SMALL)))
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--num_processes",
        "2",
        "--multi_gpu",  # on a machine without CUDA: 2 CPU processes joined by gloo
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(29700 + os.getpid() % 500),
        str(script),
        str(clean_folder),
        str(tiny_clip_file),
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the main process alone prints, logs and writes
    assert proc.stdout.count("wrote ") == 3 and "12 crops seen" in proc.stdout, proc.stdout
    a = tmp_path / "a" / "up_train"
    assert [json.loads(line)["step"] for line in (a / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert isinstance(load_upsampler(tmp_path / "a" / "up.ckpt"), JBUOne)
    last = read_train_checkpoint(a / "step_0000003.ckpt")
    assert last["frugalvl"]["crops_seen"] == 12 and len(last["frugalvl"]["positions"]) == 2
    assert not list(tmp_path.rglob("*.tmp*"))

    # step 1 of 2 processes × 2 crops == one process averaging the two halves of the same 4 crops
    paths = list_training_images([clean_folder])
    want = _reference_step(tiny_clip_model, paths, SMALL)
    got = read_train_checkpoint(a / "step_0000001.ckpt")
    _close(got["state_dict"], want.parts.state_dict())
    # without clipping, NAdam's first moment after step 1 is (1 - β1) × the averaged gradient: its scale too
    unclipped = replace(SMALL, early_clip_steps=0)
    want = _reference_step(tiny_clip_model, paths, unclipped)
    got = read_train_checkpoint(tmp_path / "c" / "up_train" / "step_0000001.ckpt")
    _close(got["state_dict"], want.parts.state_dict())
    moments = [s["exp_avg"] for s in got["optimizer_states"][0]["state"].values()]
    grads = [0.1 * p.grad for p in want.parts.parameters()]
    assert len(moments) == len(grads) and all(
        torch.allclose(m, g, rtol=1e-5, atol=1e-12) for m, g in zip(moments, grads)
    )

    # resumed at step 2 by both processes == uninterrupted, bit for bit
    b = read_train_checkpoint(tmp_path / "b" / "up_train" / "step_0000003.ckpt")
    for key in ("state_dict", "optimizer_states", "rng", "global_step"):
        _same(last[key], b[key])
    assert last["frugalvl"]["positions"] == b["frugalvl"]["positions"]
    _same(torch.load(tmp_path / "a" / "up.ckpt")["state_dict"], torch.load(tmp_path / "b" / "up.ckpt")["state_dict"])


def _close(got: dict, want: dict) -> None:
    """Measured on CPU (2 × gloo, one thread): identical; the tolerance allows other summation orders."""
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst <= 1e-6, worst


def _same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b
