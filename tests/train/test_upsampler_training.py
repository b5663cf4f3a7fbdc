"""SimFeatUp training (docs/methods/simfeatup.md#training) on a tiny random CLIP and real, freely licensed
remote-sensing crops (the bundled CC0 Landsat scene and the CC BY-SA SpaceNet tile in tests/data).

Runs are tiny (32 px crops, radius-1 JBU, 2 views) where a test does not depend on those sizes.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from frugalvl.cli import main
from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.models.attention import MODES
from frugalvl.models.jbu import JBUOne
from frugalvl.models.upsampler import load_upsampler
from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
from frugalvl.train.checkpoints import read_train_checkpoint
from frugalvl.train.downsampler import AttentionDownsampler, gaussian_blur
from frugalvl.train.featurizer import ClipFeaturizer
from frugalvl.train.images import ImageStream, StreamPosition, list_training_images, random_crop
from frugalvl.train.jitter import Jitter, apply_jitter
from frugalvl.train.loop import train_upsampler
from frugalvl.train.losses import ImageReconstructor, ScaleNet, image_loss, random_projection, reconstruction_loss
from frugalvl.train.settings import LAST_BLOCKS, UpsamplerTrainSettings, check_settings
from frugalvl.train.trainer import UpsamplerTrainer
from frugalvl.vocab import Vocabulary
from tests.conftest import landsat_rgb, spacenet_labelled

FAST = UpsamplerTrainSettings(batch_size=2, crop_size=32, radius=1, n_jitters=2, checkpoint_every=2, workers=1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: one intra-op thread is several times faster than two (no sync
    overhead, no fight with other test processes for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rs_folder(tmp_path_factory) -> Path:
    """Three real remote-sensing crops (one smaller than a training crop) and one corrupt file."""
    folder = tmp_path_factory.mktemp("rs")
    Image.fromarray(landsat_rgb(96)).save(folder / "landsat.png")
    Image.fromarray(landsat_rgb(256)).crop((100, 60, 140, 84)).save(folder / "landsat_small.jpg")
    Image.fromarray(spacenet_labelled(512)[0][:64, :80]).save(folder / "spacenet.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    return folder


@pytest.fixture(scope="module")
def fixed_batch(rs_folder) -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = [np.array(Image.open(rs_folder / name).convert("RGB")) for name in ("landsat.png", "spacenet.png")]
    return np.stack([random_crop(x, 32, rng) for x in rgb])


# -- the loss terms and modules on hand-made cases ----------------------------------------------


def test_reconstruction_loss_by_hand():
    down = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 1, 2)
    scales = torch.full((1, 1, 1, 2), 2.0)
    # mean squared error 30/4 = 7.5, divided by 2·2² = 8, plus log 2
    assert reconstruction_loss(down, target, scales).item() == pytest.approx(7.5 / 8 + math.log(2), rel=1e-6)
    # per-location scales: location 0 (errors 1, 9) has s = 1, location 1 (errors 4, 16) has s = e
    scales = torch.tensor([1.0, math.e]).view(1, 1, 1, 2)
    expected = ((1 + 9) / 2 + (4 + 16) / (2 * math.e**2) + 2 * 1.0) / 4
    assert reconstruction_loss(down, target, scales).item() == pytest.approx(expected, rel=1e-6)


def test_scale_net_values():
    net = ScaleNet(4)
    with torch.no_grad():
        net.net.weight.zero_()
        net.net.bias.fill_(0.5)
    assert torch.allclose(net(torch.randn(2, 4, 3, 3)), torch.full((2, 1, 3, 3), math.exp(0.6)))
    with torch.no_grad():
        net.net.bias.fill_(-50.0)
    assert torch.all(net(torch.randn(1, 4, 2, 2)) == 1e-4)  # clamped


def test_image_loss_and_reconstructor():
    assert image_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 2.0)).item() == pytest.approx(4.0)
    assert image_loss(torch.tensor([[[[0.5, -0.5]]]]), torch.tensor([[[[0.0, 0.5]]]])).item() == pytest.approx(
        (0.25 + 1) / 2
    )
    out = ImageReconstructor(8)(torch.randn(2, 8, 5, 7))
    assert out.shape == (2, 3, 5, 7) and out.abs().max() <= 1


def test_gaussian_blur_is_the_normalised_5x5_gaussian():
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1
    g = torch.exp(-torch.tensor([4.0, 1.0, 0.0, 1.0, 4.0]) / 2)
    g = g / g.sum()
    assert torch.allclose(gaussian_blur(impulse)[0, 0, 2:7, 2:7], torch.outer(g, g), atol=1e-7)
    const = torch.full((1, 3, 6, 6), 0.7)
    assert torch.allclose(gaussian_blur(const), const)  # reflect borders keep constants


def test_downsampler_shape_normalisation_and_mean_case():
    torch.manual_seed(0)
    down = AttentionDownsampler(dim=8, patch_size=4)
    feats = torch.randn(2, 8, 12, 16)
    out = down(feats)
    assert out.shape == (2, 8, 3, 4)
    patches = down.patches(feats)
    weights = down.weights(patches)
    assert patches.shape == (2, 3, 4, 16, 8) and weights.shape == (2, 3, 4, 16)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 4), atol=1e-6) and (weights >= 0).all()
    # A constant map stays constant, whatever the attention
    assert torch.allclose(down(torch.full((1, 8, 8, 8), 3.0)), torch.full((1, 8, 2, 2), 3.0), atol=1e-5)
    # With no content logits and flat w, b: the mean of the blurred patch, i.e. average pooling
    down.eval()
    with torch.no_grad():
        down.attention_net[1].weight.zero_()
        down.attention_net[1].bias.zero_()
        down.b.zero_()
    assert torch.allclose(down(feats), F.avg_pool2d(gaussian_blur(feats), 4), atol=1e-6)


def test_downsampler_drops_a_fifth_of_the_patches_in_training():
    torch.manual_seed(1)
    down = AttentionDownsampler(dim=4, patch_size=2).train()
    with torch.no_grad():
        down.b.zero_()
        down.w.fill_(1.0)
        down.attention_net[1].bias.fill_(1.0)
    down.attention_net[0].p = 0.0
    patches = torch.randn(1, 50, 50, 4, 4)
    flat = (down.weights(patches) - 0.25).abs().amax(-1) < 1e-6  # dropped patches get uniform weights
    assert 0.15 < flat.float().mean().item() < 0.25


def test_jitter_identity_flip_and_zoom():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    assert torch.equal(apply_jitter(x, Jitter(flip=False, zoom=1.0, top=2, left=2), pad=2), x)
    assert torch.equal(apply_jitter(x, Jitter(flip=True, zoom=1.0, top=2, left=2), pad=2), x.flip(-1))
    assert apply_jitter(x, Jitter(flip=False, zoom=1.7, top=5, left=3), pad=2).shape == x.shape
    # the same view of an image and of a same-size feature map match channel by channel
    view = Jitter(flip=True, zoom=1.3, top=4, left=1)
    assert torch.equal(apply_jitter(x, view, 2)[:, :1], apply_jitter(x[:, :1], view, 2))


def test_random_projection_columns_are_unit_vectors():
    proj = random_projection(torch.Generator().manual_seed(0), 3, 32, 30)
    assert proj.shape == (3, 32, 30)
    assert torch.allclose(proj.norm(dim=1), torch.ones(3, 30), atol=1e-6)
    assert random_projection(torch.Generator(), 1, 8, None) is None


# -- the featurizer ------------------------------------------------------------------------------


def test_featurizer_skip_and_segearth_modes(tiny_clip_model):
    clip = tiny_clip_model
    x = torch.randn(2, 3, 224, 224)  # the native grid: open_clip's own embedding does not resize
    visual = clip.model.visual
    with torch.no_grad():  # reference: open_clip's own embedding, every block but the last
        tokens = visual._embeds(x)
        for block in visual.transformer.resblocks[:-1]:
            tokens = block(tokens)
        expected = (visual.ln_post(tokens[:, 1:]) @ visual.proj).transpose(1, 2).reshape(2, -1, 14, 14)
    feats = ClipFeaturizer(clip, "skip")(x)
    assert feats.shape == (2, clip.embed_dim, 14, 14) and feats.dtype == torch.float32
    assert torch.allclose(feats, expected, atol=1e-5)
    segmenter = SegEarthOV(clip, Vocabulary.parse("a;b"))
    with torch.no_grad():
        assert torch.allclose(ClipFeaturizer(clip, "segearth")(x), segmenter.encode_windows(x)[1].float(), atol=1e-5)
        y = x[:, :, :64, :48]  # another grid: positional embedding resized as the segmenter does
        assert torch.allclose(ClipFeaturizer(clip, "segearth")(y), segmenter.encode_windows(y)[1].float(), atol=1e-5)


# -- data ---------------------------------------------------------------------------------------


def test_image_lists_and_crops(tmp_path, rs_folder):
    listing = tmp_path / "train.txt"
    listing.write_text(f"# aerial crops\n{rs_folder / 'landsat.png'}\n\nmissing.png\n")
    paths = list_training_images([rs_folder, listing])
    assert [p.name for p in paths] == [
        "broken.png",
        "landsat.png",
        "landsat_small.jpg",
        "spacenet.png",
        "landsat.png",
        "missing.png",
    ]
    assert paths[-1] == tmp_path / "missing.png"  # relative to the list's folder
    small = np.arange(24 * 40 * 3, dtype=np.uint8).reshape(24, 40, 3)
    assert random_crop(small, 32, np.random.default_rng(0)).shape == (32, 32, 3)  # reflect-padded


def test_stream_skips_and_counts_unreadable_files(rs_folder, tmp_path):
    messages = []
    paths = list_training_images([rs_folder]) + [tmp_path / "missing.png"]
    stream = ImageStream(paths, 32, seed=0, workers=2, report=messages.append)
    batches = stream.batches(3, StreamPosition())
    for _ in range(4):  # more than an epoch of readable images
        batch, _ = next(batches)
        assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.uint8
    batches.close()
    assert sorted(Path(p).name for p in stream.skipped) == ["broken.png", "missing.png"]
    assert len(messages) == 2  # each reported once


def test_stream_logs_skips_when_no_report_is_given(rs_folder, caplog, capsys):
    stream = ImageStream([rs_folder / "broken.png", rs_folder / "landsat.png"], 32, workers=1)
    with caplog.at_level(logging.WARNING, logger="frugalvl.train"):
        batches = stream.batches(2, StreamPosition())
        next(batches)
        batches.close()
    skips = [r for r in caplog.records if "skipped unreadable image" in r.getMessage()]
    assert len(skips) == 1 and skips[0].levelno == logging.WARNING and "broken.png" in skips[0].getMessage()
    assert capsys.readouterr() == ("", "")  # logged, not printed


def test_stream_of_only_unreadable_files_stops_with_one_line(rs_folder):
    stream = ImageStream([rs_folder / "broken.png"] * 3, 32, report=lambda m: None)
    with pytest.raises(UserError, match="none of the 3 training images"):
        next(stream.batches(2, StreamPosition()))


# -- training -----------------------------------------------------------------------------------


def test_losses_decrease_on_a_fixed_batch(tiny_clip_model, fixed_batch):
    trainer = UpsamplerTrainer(tiny_clip_model, FAST)
    history = [trainer.train_step(fixed_batch) for _ in range(20)]
    first, last = history[:5], history[-5:]
    for term in ("rec", "img", "loss"):  # seeds 0-2 all end below 0.52× their start
        assert np.mean([h[term] for h in last]) < 0.7 * np.mean([h[term] for h in first]), term
    assert trainer.step == 20


def test_settings_are_checked(tiny_clip_model):
    with pytest.raises(UserError, match="multiple of the CLIP patch size"):
        check_settings(replace(FAST, crop_size=40), 16)
    with pytest.raises(UserError, match="too small for a radius-5"):
        check_settings(replace(FAST, crop_size=32, radius=None), 16)
    check_settings(replace(FAST, crop_size=48, radius=None), 16)
    with pytest.raises(UserError, match="^precision ") as err:  # the library names the field...
        check_settings(replace(FAST, precision="fp8"))
    assert render_error(err.value).startswith("--precision 'fp8'")  # ...the CLI its option
    with pytest.raises(UserError, match="^last_block ") as err:
        UpsamplerTrainer(tiny_clip_model, replace(FAST, last_block="nope"))
    assert render_error(err.value).startswith("--last-block 'nope'")
    with pytest.raises(UserError, match="^n_jitters ") as err:
        replace(FAST, n_jitters=0)
    assert render_error(err.value).startswith("--jitters 0")  # the field's own flag name


def _run(clip, folder, out, steps, resume=False, **changes):
    settings = replace(FAST, steps=steps, **changes)
    return train_upsampler(
        clip, list_training_images([folder]), out, settings, resume=resume, progress=False, report=lambda m: None
    )


def test_resume_equals_an_uninterrupted_run(tiny_clip_model, rs_folder, tmp_path):
    whole = _run(tiny_clip_model, rs_folder, tmp_path / "a" / "up.ckpt", steps=4)
    assert whole.steps == 4 and whole.crops_seen == 8
    assert list(whole.skipped) == [str(rs_folder / "broken.png")]

    first = _run(tiny_clip_model, rs_folder, tmp_path / "b" / "up.ckpt", steps=2)
    assert first.steps == 2
    second = _run(tiny_clip_model, rs_folder, tmp_path / "b" / "up.ckpt", steps=4, resume=True)
    assert second.start_step == 2 and second.steps == 4 and len(second.skipped) == 1

    a = read_train_checkpoint(tmp_path / "a" / "up_train" / "step_0000004.ckpt")
    b = read_train_checkpoint(tmp_path / "b" / "up_train" / "step_0000004.ckpt")
    _assert_same(a["state_dict"], b["state_dict"])
    _assert_same(a["optimizer_states"], b["optimizer_states"])
    _assert_same(a["rng"], b["rng"])
    assert a["frugalvl"]["position"] == b["frugalvl"]["position"] and a["frugalvl"]["crops_seen"] == 8
    _assert_same(
        torch.load(tmp_path / "a" / "up.ckpt")["state_dict"], torch.load(tmp_path / "b" / "up.ckpt")["state_dict"]
    )
    assert [h["loss"] for h in whole.losses[2:]] == [h["loss"] for h in second.losses]


def _assert_same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_checkpoints_load_in_the_segmenter(tiny_clip_model, rs_folder, tmp_path):
    out = tmp_path / "up.ckpt"
    _run(tiny_clip_model, rs_folder, out, steps=2)
    raw = torch.load(out, weights_only=True)
    assert raw["global_step"] == 2 and all(k.startswith("upsampler.") for k in raw["state_dict"])
    upsampler = load_upsampler(out)
    assert isinstance(upsampler, JBUOne) and upsampler.up.radius == 1
    # the periodic checkpoints are Lightning-like too: the segmenter reads their upsampler part
    periodic = load_upsampler(tmp_path / "up_train" / "step_0000002.ckpt")
    _assert_same(periodic.state_dict(), upsampler.state_dict())
    segmenter = SegEarthOV(
        tiny_clip_model,
        Vocabulary.parse("background;building;road"),
        upsampler,
        SegEarthOVSettings(long_side=64, slide_crop=64, slide_stride=64),
    )
    rgb = np.array(Image.open(rs_folder / "landsat.png").convert("RGB"))
    scores = segmenter.class_scores(rgb)
    assert scores.shape == (3, 96, 96) and torch.isfinite(scores).all()


def test_first_ctrl_c_saves_a_checkpoint_between_steps(tiny_clip_model, rs_folder, tmp_path, monkeypatch):
    real_step = UpsamplerTrainer.train_step

    def interrupted_step(self, batch):
        if self.step == 1:  # Ctrl-C arrives during the second step
            signal.raise_signal(signal.SIGINT)
        return real_step(self, batch)

    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(UpsamplerTrainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_clip_model, rs_folder, tmp_path / "up.ckpt", steps=5, n_jitters=1, checkpoint_every=10)
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    saved = read_train_checkpoint(tmp_path / "up_train" / "step_0000002.ckpt")  # the step finished, then saved
    assert saved["global_step"] == 2 and saved["frugalvl"]["crops_seen"] == 4
    assert not (tmp_path / "up.ckpt").exists()  # no final upsampler from an interrupted run
    monkeypatch.setattr(UpsamplerTrainer, "train_step", real_step)
    resumed = _run(
        tiny_clip_model, rs_folder, tmp_path / "up.ckpt", steps=3, resume=True, n_jitters=1, checkpoint_every=10
    )
    assert resumed.start_step == 2 and resumed.steps == 3


def test_package_exports_are_lazy_names_of_the_modules():
    import frugalvl.train

    assert frugalvl.train.train_upsampler is train_upsampler
    assert frugalvl.train.UpsamplerTrainSettings is UpsamplerTrainSettings
    with pytest.raises(AttributeError):
        frugalvl.train.nothing_here  # noqa: B018


def test_existing_checkpoints_need_resume(tiny_clip_model, rs_folder, tmp_path):
    _run(tiny_clip_model, rs_folder, tmp_path / "up.ckpt", steps=1, n_jitters=1)
    with pytest.raises(UserError, match="add resume") as err:
        _run(tiny_clip_model, rs_folder, tmp_path / "up.ckpt", steps=2, n_jitters=1)
    assert "add --resume" in render_error(err.value)
    with pytest.raises(UserError, match="n_jitters=1"):
        _run(tiny_clip_model, rs_folder, tmp_path / "up.ckpt", steps=2, resume=True)


# -- command line -------------------------------------------------------------------------------


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_trains_and_reports(capsys, tiny_clip_file, rs_folder, tmp_path):
    out = tmp_path / "my_up.ckpt"
    code, stdout, err = _cli(
        capsys,
        "train-upsampler",
        "--images",
        rs_folder,
        "--clip",
        tiny_clip_file,
        "-o",
        out,
        "--steps",
        1,
        "--batch-size",
        4,
        "--crop-size",
        32,
        "--radius",
        1,
        "--jitters",
        1,
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 0, err
    assert "1 unreadable skipped" in stdout and "broken.png" in err
    assert isinstance(load_upsampler(out), JBUOne)
    assert (tmp_path / "my_up_train" / "step_0000001.ckpt").exists() and (
        tmp_path / "my_up_train" / "log.jsonl"
    ).exists()


def test_settings_list_every_attention_mode_and_import_no_torch():
    assert LAST_BLOCKS == ("skip",) + MODES
    code = (
        "import sys, frugalvl.train, frugalvl.train.settings, frugalvl.commands.train_upsampler; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("case", ["missing folder", "no images", "bad clip", "bad crop", "sam3 folder as clip"])
def test_cli_user_errors_are_one_line(capsys, tiny_clip_file, rs_folder, tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    images, clip, extra = rs_folder, tiny_clip_file, []
    if case == "missing folder":
        images = tmp_path / "nowhere"
    elif case == "no images":
        images = empty
    elif case == "bad clip":
        clip = tmp_path / "no-such-clip.pt"
    elif case == "sam3 folder as clip":
        clip = tmp_path / "sam3"
        clip.mkdir()
        (clip / "config.json").write_text('{"model_type": "sam3"}')
    else:
        extra = ["--crop-size", 40]
    code, _, err = _cli(
        capsys,
        "train-upsampler",
        "--images",
        images,
        "--clip",
        clip,
        "-o",
        tmp_path / "u.ckpt",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("frugalvl: error: "), err
    if case == "sam3 folder as clip":
        assert "is not a CLIP checkpoint" in err


def test_cli_options_are_the_settings_fields():
    from frugalvl.cli import build_parser
    from frugalvl.commands.train_upsampler import settings_from_args

    def settings(*options):
        return settings_from_args(
            build_parser().parse_args(["train-upsampler", "--images", "x", "-o", "u.ckpt", *options])
        )

    assert settings() == UpsamplerTrainSettings()  # defaults are written once, in the dataclass
    assert settings("--jitters", "3", "--upsampler-type", "jbu_stack", "--lr", "0.01", "--steps", "7") == replace(
        UpsamplerTrainSettings(), n_jitters=3, upsampler="jbu_stack", lr=0.01, steps=7
    )
    assert settings("--projection-dim", "0").projection_dim is None  # 0 compares all channels
    assert settings("--precision", "bf16", "--workers", "1").precision == "bf16"
