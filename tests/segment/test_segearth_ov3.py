"""SegEarth-OV3 (docs/methods/segearth_ov3.md) on a tiny random SAM 3 saved with save_pretrained.

The fusion rules are checked against values worked out by hand; the batched schedule against the
official one-prompt-at-a-time loop on transformers' own ``Sam3Model.forward``; pruning against no
pruning; the CLI end to end on a real crop from ../shared.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.models.sam3 import detect, encode_image, load_sam3, pixel_values, segmentation_head
from frugalvl.segment.base import labels_from_scores, merge_synonyms
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings, fuse_view
from frugalvl.testing.sam3 import random_sam3
from frugalvl.testing.segearth_ov3_reference import official_style_view_scores
from frugalvl.vocab import Vocabulary
from frugalvl.windows import plan_windows
from tests.conftest import landsat_rgb

VOCAB = Vocabulary.parse("road,parking lot;building;low vegetation;tree;car;clutter")  # 7 prompts, 6 classes


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: on a busy machine, thread hand-offs cost 20× the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def informative_sam3():
    """The tiny random SAM 3 with every weight matrix redrawn at unit gain (std 1/sqrt(fan_in)): with
    the default 0.02 init the prompts barely change presence or masks, and the tests would see nothing."""
    bundle = random_sam3("tiny", seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in bundle.model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p[0].numel()))
    return bundle


@pytest.fixture(scope="module")
def sam3_folder(tmp_path_factory):
    bundle = informative_sam3()
    folder = tmp_path_factory.mktemp("sam3-tiny")
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sam3(sam3_folder):
    return load_sam3(sam3_folder)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(72, 96, 3), dtype=np.uint8)


def with_bias(bundle, semantic: float | None = None, instances: float | None = None):
    """A copy of a random SAM 3 whose heads are pushed so that one term dominates the fusion."""
    copy = random_sam3("tiny", seed=0)
    copy.model.load_state_dict(bundle.model.state_dict())
    with torch.no_grad():
        if semantic is not None:
            copy.model.mask_decoder.semantic_projection.bias.fill_(semantic)
        if instances is not None:
            copy.model.mask_decoder.instance_projection.bias.fill_(instances)
    return copy


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


def test_folder_round_trip_gives_the_same_model(sam3_folder, sam3, image):
    original = informative_sam3()
    assert sam3.model.config.model_type == "sam3"
    pixels = sam3.processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        a = original.model.get_vision_features(pixel_values=pixels).fpn_hidden_states[0]
        b = sam3.model.get_vision_features(pixel_values=pixels).fpn_hidden_states[0]
    assert torch.equal(a, b)


def test_loader_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_sam3(tmp_path / "missing")
    with pytest.raises(UserError, match="no config.json"):
        load_sam3(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(UserError, match="not SAM 3"):
        load_sam3(tmp_path)

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="hf auth login") as info:
        load_sam3("frugalvl-tests/not-a-cached-model")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Fusion rules on hand-made logits (docs/methods/segearth_ov3.md#fusion-of-one-view)
# ---------------------------------------------------------------------------------------------


def hand_made(presence_logit: float = 1.0):
    """One prompt, three instances with constant mask logits (a constant map resizes to itself)."""
    masks = torch.tensor([2.0, 0.0, -1.0])[:, None, None].expand(3, 2, 2)[None]  # [1, 3, 2, 2]
    classes = torch.tensor([[3.0, 0.0, -3.0]])
    presence = torch.tensor([presence_logit])
    semantic = torch.zeros(1, 1, 2, 2)
    return masks, classes, presence, semantic


def test_fusion_matches_hand_computation():
    p = sigmoid(1.0)
    s = [sigmoid(3.0) * p, sigmoid(0.0) * p, sigmoid(-3.0) * p]  # 0.696, 0.366, 0.035: only the first > 0.5
    instance = sigmoid(2.0) * s[0]
    semantic = sigmoid(0.0)
    cases = {
        (True, True, True): max(instance, semantic) * p,
        (False, True, True): semantic * p,
        (True, False, True): instance * p,
        (True, True, False): max(instance, semantic),
        (False, False, True): 0.0,
    }
    for (inst, sem, pres), expected in cases.items():
        fused = fuse_view(*hand_made()[:3], hand_made()[3], (4, 5), 0.5, inst, sem, pres)
        assert fused.shape == (1, 4, 5)
        assert torch.allclose(fused, torch.full((1, 4, 5), expected), atol=1e-6), (inst, sem, pres)
    # a lower threshold keeps the second instance too, but it does not beat the first (σ(0)·0.366 < 0.613)
    low = fuse_view(*hand_made()[:3], hand_made()[3], (4, 5), 0.3, True, False, False)
    assert torch.allclose(low, torch.full((1, 4, 5), instance), atol=1e-6)


def test_instances_are_kept_only_strictly_above_the_threshold():
    masks, classes, _, semantic = hand_made()
    presence = torch.tensor([100.0])  # σ = 1.0 exactly in fp32, so s_1 = σ(0) = 0.5 exactly
    only_second = fuse_view(
        masks, torch.tensor([[-30.0, 0.0, -30.0]]), presence, semantic, (3, 3), 0.5, True, False, True
    )
    assert torch.count_nonzero(only_second) == 0  # s = 0.5 is not > 0.5
    kept = fuse_view(masks, torch.tensor([[-30.0, 0.0, -30.0]]), presence, semantic, (3, 3), 0.49, True, False, True)
    assert torch.allclose(kept, torch.full((1, 3, 3), 0.5 * sigmoid(0.0)))


def test_logits_are_resized_before_the_sigmoid():
    checker = torch.tensor([[-8.0, 8.0], [8.0, -8.0]])
    semantic = checker[None, None]
    fused = fuse_view(None, torch.zeros(1, 1), torch.tensor([100.0]), semantic, (4, 4), 0.5, False, True, True)
    # bilinear (align_corners=False) at output pixel (1, 1) samples input (0.25, 0.25), weights 0.75/0.25:
    # 0.5625·(-8) + 0.1875·8 + 0.1875·8 + 0.0625·(-8) = -2, so σ(-2) = 0.119, not the mix of σ(±8) (0.375)
    assert fused[0, 1, 1].item() == pytest.approx(sigmoid(-2.0), abs=1e-6)
    # corners copy the nearest input value
    assert fused[0, 0, 0].item() == pytest.approx(sigmoid(-8.0), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# The model path: staged calls, batching, caching, pruning, sliding windows
# ---------------------------------------------------------------------------------------------


def test_staged_calls_equal_transformers_forward(sam3, image):
    model = sam3.model
    tokens = sam3.processor(text=VOCAB.queries, return_tensors="pt")
    pixels = sam3.processor(images=image, return_tensors="pt")["pixel_values"]
    k = len(VOCAB.queries)
    with torch.no_grad():
        reference = model(pixel_values=pixels.expand(k, -1, -1, -1), **tokens)
        vision = encode_image(model, pixels).expand(k)
        text = model.get_text_features(**tokens).pooler_output
        mask = tokens["attention_mask"].bool()
        det = detect(model, vision, text, mask)
        masks, semantic = segmentation_head(model, vision, det, text, mask)
    for ours, theirs in [
        (det.class_logits, reference.pred_logits),
        (det.presence_logits, reference.presence_logits[:, 0]),
        (masks, reference.pred_masks),
        (semantic, reference.semantic_seg),
    ]:
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        SegEarthOV3Settings(prompt_chunk=16),  # the official defaults, one call
        SegEarthOV3Settings(prompt_chunk=1),
        SegEarthOV3Settings(
            confidence_threshold=0.0, use_semantic=False, prompt_chunk=3
        ),  # every instance kept, decisive
        SegEarthOV3Settings(confidence_threshold=0.0, use_presence=False, prompt_chunk=2),
    ],
)
def test_batched_prompts_equal_the_official_sequential_loop(sam3, image, settings):
    bundle = with_bias(sam3, instances=2.0)  # instance masks large enough to matter
    batched = SegEarthOV3(bundle, VOCAB, settings).query_scores(image)
    sequential = official_style_view_scores(bundle, image, VOCAB.queries, settings)
    assert batched.shape == (7, 72, 96) and batched.dtype == torch.float32
    assert torch.allclose(batched, sequential, atol=1e-5)
    assert batched.std(0).max() > 0  # prompts do differ from one another


def test_each_stage_runs_once_where_it_should(sam3, image, monkeypatch):
    segmenter = SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(prompt_chunk=4, slide_crop=48, slide_stride=48))
    calls = {"text": 0, "vision": 0}
    for name, key in (("get_text_features", "text"), ("get_vision_features", "vision")):
        original = getattr(sam3.model, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(sam3.model, name, counted)
    segmenter.class_scores(image)
    segmenter.class_scores(image)
    assert calls["text"] == 2  # 7 prompts in chunks of 4, for the first image only
    assert calls["vision"] == 2 * 4  # one image-encoder pass per view: a 2×2 grid, two images


def test_class_scores_merge_synonyms_by_max(sam3, image):
    segmenter = SegEarthOV3(sam3, VOCAB)
    queries = segmenter.query_scores(image)
    classes = segmenter.class_scores(image)
    assert classes.shape == (6, 72, 96)
    assert torch.equal(classes[0], torch.maximum(queries[0], queries[1]))  # road, parking lot
    assert torch.equal(classes[1:], queries[2:])


def test_sliding_window_averages_the_official_views(sam3, image):
    segmenter = SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(slide_crop=64, slide_stride=40))
    scores = segmenter.query_scores(image)
    total, count = torch.zeros(7, 72, 96), torch.zeros(72, 96)
    for y0 in (0, 8):  # rows: [0,64) and [8,72); columns: [0,64) and [32,96)
        for x0 in (0, 32):
            crop = np.ascontiguousarray(image[y0 : y0 + 64, x0 : x0 + 64])
            total[:, y0 : y0 + 64, x0 : x0 + 64] += official_style_view_scores(
                sam3, crop, VOCAB.queries, segmenter.settings
            )
            count[y0 : y0 + 64, x0 : x0 + 64] += 1
    assert torch.allclose(scores, total / count, atol=1e-5)


def averaged_official_views(bundle, image: np.ndarray, crop: int, stride: int, settings) -> torch.Tensor:
    """``[Q, H, W]`` as the official code: each window scored alone (one prompt at a time), then averaged."""
    total, count = torch.zeros(len(VOCAB.queries), *image.shape[:2]), torch.zeros(image.shape[:2])
    for w in plan_windows(image.shape[0], image.shape[1], crop, stride):
        crop_rgb = np.ascontiguousarray(image[w.y0 : w.y1, w.x0 : w.x1])
        total[:, w.y0 : w.y1, w.x0 : w.x1] += official_style_view_scores(bundle, crop_rgb, VOCAB.queries, settings)
        count[w.y0 : w.y1, w.x0 : w.x1] += 1
    return total / count


@pytest.mark.parametrize(
    "width, crop, stride, view_batch, prompt_chunk",
    [
        (96, 64, 40, 3, 2),  # 2×2 overlapping windows; a batch of 3 views then 1; chunks straddle views
        (40, 40, 24, 2, 3),  # 3×1 overlapping windows: three rows of windows, so the band of rows moves twice
        (72, 36, 36, 4, 3),  # 2×2 windows that do not overlap, all four through the image encoder at once
        (48, 24, 24, 4, 16),  # 3×2 windows that do not overlap; batches of 4 and 2 views, all their prompts at once
    ],
)
def test_batched_views_equal_the_official_per_view_loop(sam3, image, width, crop, stride, view_batch, prompt_chunk):
    bundle = with_bias(sam3, instances=2.0)
    image = np.ascontiguousarray(image[:, :width])
    settings = SegEarthOV3Settings(
        confidence_threshold=0.0, slide_crop=crop, slide_stride=stride, view_batch=view_batch, prompt_chunk=prompt_chunk
    )
    segmenter = SegEarthOV3(bundle, VOCAB, settings)
    expected = averaged_official_views(bundle, image, crop, stride, settings)
    queries = segmenter.query_scores(image)
    classes = segmenter.class_scores(image)
    assert torch.allclose(queries, expected, atol=1e-5)
    assert torch.allclose(classes, merge_synonyms(expected, VOCAB.query_to_class), atol=1e-5)
    # the class path (running max, or a band of per-prompt rows) adds and divides in the same order
    assert torch.equal(classes, merge_synonyms(queries, VOCAB.query_to_class))
    assert queries.std(0).max() > 0


def test_view_batches_run_the_image_encoder_once_per_view(sam3, image, monkeypatch):
    segmenter = SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(slide_crop=48, slide_stride=24, view_batch=3))
    batches = []
    original = sam3.model.get_vision_features

    def counted(*args, **kwargs):
        batches.append(len(kwargs["pixel_values"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(sam3.model, "get_vision_features", counted)
    segmenter.class_scores(image)
    assert batches == [3, 3]  # 2×3 windows (rows at 0, 24; columns at 0, 24, 48), three per pass


def test_class_scores_never_hold_every_prompt_at_full_size(sam3, image, monkeypatch):
    from frugalvl import windows

    def refuse(*args, **kwargs):
        raise AssertionError("class_scores allocated [Q, H, W] accumulators")

    rows = []
    original_begin = windows.BandAverage.begin_window

    def spy(band, window):
        original_begin(band, window)
        rows.append(band.total.shape[1])

    monkeypatch.setattr(windows.ChannelAverage, "__init__", refuse)
    monkeypatch.setattr(windows.BandAverage, "begin_window", spy)
    SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(slide_crop=36)).class_scores(np.ascontiguousarray(image[:, :72]))
    assert rows == []  # 2×2 windows, no overlap: a running class max, no per-prompt buffer at all
    SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(slide_crop=40, slide_stride=24)).class_scores(image)
    assert len(rows) == 12 and max(rows) == 40 < image.shape[0]  # 3×4 windows; per-prompt rows: one window's height


def test_bf16_stays_close_to_fp32(sam3):
    """bf16 autocast on the CPU against fp32 on a real crop (measured: max |Δ| 0.006, see
    docs/methods/segearth_ov3_batching.md); labels can only differ where fp32's top-two margin is
    within twice the largest score difference."""
    rgb = np.ascontiguousarray(landsat_rgb(512)[100:196, 200:296])
    fp32, bf16 = (
        SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(precision=p, slide_crop=48)).class_scores(rgb)
        for p in ("fp32", "bf16")
    )
    difference = (fp32 - bf16).abs().max().item()
    assert 0 < difference < 0.02  # bf16 did run, and stayed close
    top2 = fp32.topk(2, dim=0).values
    safe = (top2[0] - top2[1]) > 2 * difference
    assert torch.equal(labels_from_scores(fp32)[safe], labels_from_scores(bf16)[safe])


def presences(bundle, view: np.ndarray) -> list[float]:
    segmenter = SegEarthOV3(bundle, VOCAB)
    text, mask = segmenter.text_embeddings()
    with torch.no_grad():
        vision = encode_image(bundle.model, pixel_values(bundle, view)).expand(len(text))
        return detect(bundle.model, vision, text, mask).presence_logits.sigmoid().tolist()


@pytest.mark.parametrize("crop", [0, 48])  # the whole image; a non-overlapping 2×2 grid
def test_presence_pruning_keeps_every_label(sam3, crop):
    image = np.random.default_rng(1).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    bundle = with_bias(sam3, semantic=4.0)  # F_q close to p_q, so the threshold bites on both sides
    views = [image] if crop == 0 else [image[y : y + 48, x : x + 48] for y in (0, 48) for x in (0, 48)]
    p = sorted(v for view in views for v in presences(bundle, np.ascontiguousarray(view)))
    prob_thd = (p[len(p) // 2 - 1] + p[len(p) // 2]) / 2  # about half the prompt×view pairs fall below it
    base = dict(prob_thd=prob_thd, slide_crop=crop, slide_stride=crop, prompt_chunk=3)
    plain = SegEarthOV3(bundle, VOCAB, SegEarthOV3Settings(**base))
    pruned = SegEarthOV3(bundle, VOCAB, SegEarthOV3Settings(**base, presence_pruning=True))
    # bg_idx -1 marks the thresholded pixels apart from class 0
    expected = labels_from_scores(plain.class_scores(image), prob_thd, -1)
    got = labels_from_scores(pruned.class_scores(image), prob_thd, -1)
    assert pruned.pruned_prompts > 0 and plain.pruned_prompts == 0
    assert len(torch.unique(expected)) > 1  # not a trivial map: some pixels pass the threshold, some do not
    assert torch.equal(got, expected)


def test_presence_pruning_is_off_where_views_overlap(sam3, image):
    settings = SegEarthOV3Settings(prob_thd=0.99, slide_crop=64, slide_stride=32, presence_pruning=True)
    segmenter = SegEarthOV3(sam3, VOCAB, settings)
    segmenter.class_scores(image)
    assert segmenter.pruned_prompts == 0


def test_bg_idx_outside_the_vocabulary_is_a_user_error(sam3):
    with pytest.raises(UserError, match="bg_idx"):
        SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(bg_idx=6))


# ---------------------------------------------------------------------------------------------
# Presets and command line
# ---------------------------------------------------------------------------------------------


def test_presets_carry_the_official_settings():
    from frugalvl.presets import list_presets, preset_vocabulary

    assert SegEarthOV3Settings.from_preset("loveda") == SegEarthOV3Settings(confidence_threshold=0.5, prob_thd=0.5)
    oem = SegEarthOV3Settings.from_preset("openearthmap")
    assert (oem.confidence_threshold, oem.prob_thd, oem.slide_crop, oem.slide_stride) == (0.1, 0.1, 512, 512)
    potsdam = SegEarthOV3Settings.from_preset("potsdam", confidence_threshold=0.3)
    assert (potsdam.confidence_threshold, potsdam.prob_thd, potsdam.bg_idx) == (0.3, 0.1, 5)
    assert preset_vocabulary("potsdam", "segearth_ov3").names[potsdam.bg_idx] == "clutter"
    assert preset_vocabulary("loveda", "segearth_ov3").classes[4] == ("barren", "bareland", "soil")
    for name in list_presets():  # every preset has a usable table
        settings = SegEarthOV3Settings.from_preset(name)
        assert settings.bg_idx < len(preset_vocabulary(name, "segearth_ov3"))


def run_cli(*args: str) -> int:
    from frugalvl.cli import main

    return main(["segment", *args])


def test_cli_writes_the_segearth_ov_outputs(sam3_folder, tmp_path, capsys):
    from PIL import Image

    crop = tmp_path / "potsdam_crop.png"
    Image.fromarray(landsat_rgb(512)[100:196, 200:328]).save(crop)
    out = tmp_path / "out"
    code = run_cli(
        str(crop),
        "-o",
        str(out),
        "--method",
        "segearth-ov3",
        "--sam3",
        str(sam3_folder),
        "--preset",
        "potsdam",
        "--save-probs",
        "--no-progress",
        "--prompt-chunk",
        "4",
    )
    assert code == 0, capsys.readouterr().err
    probs = np.load(out / "potsdam_crop_probs.npy")
    assert probs.shape == (6, 96, 128) and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    labels = np.asarray(Image.open(out / "potsdam_crop.png"))
    assert labels.shape == (96, 128)
    assert Image.open(out / "potsdam_crop_overlay.png").size[0] >= 128


def test_cli_bad_sam3_path_exits_2_with_one_line(tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code = run_cli(
        str(image),
        "-o",
        str(tmp_path / "out"),
        "--method",
        "segearth-ov3",
        "--sam3",
        str(tmp_path / "no-such-folder"),
        "--classes",
        "background;building",
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_cli_options_reach_the_settings():
    from frugalvl.cli import build_parser
    from frugalvl.commands.methods import method_module

    settings_from_cli = method_module("segearth-ov3").settings_from_cli

    args = build_parser().parse_args(
        [
            "segment",
            "x.png",
            "-o",
            "o",
            "--method",
            "segearth-ov3",
            "--preset",
            "loveda",
            "--no-instances",
            "--no-presence",
            "--confidence-threshold",
            "0.25",
            "--presence-pruning",
            "--slide-crop",
            "256",
            "--view-batch",
            "2",
        ]
    )
    settings = settings_from_cli(args)
    assert (settings.use_instances, settings.use_semantic, settings.use_presence) == (False, True, False)
    assert (settings.confidence_threshold, settings.prob_thd, settings.slide_crop) == (0.25, 0.5, 256)
    assert settings.presence_pruning and settings.view_batch == 2
    with pytest.raises(ValueError, match="view_batch"):
        SegEarthOV3Settings(view_batch=0)
