"""SegEarth-OV3 change detection on the tiny random SAM 3 against a plain restatement of the official steps.

The restatement (``official_change``) is written from docs/methods/segearth_ov3_change.md, independent of
frugalvl.change: the one-hot class merge, torch's max-pool dilation, scipy's 8-connected labels with a loop
over blobs, the energies class by class and the loop-based Otsu of test_steps. Its inputs are the per-prompt
scores of the official schedule (one prompt at a time through transformers' full forward) and
``fpn_hidden_states[-2]`` of transformers' own vision pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from frugalvl.change import ChangeDetector, ChangeSettings
from frugalvl.errors import UserError
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from frugalvl.testing.segearth_ov3_reference import official_style_view_scores
from frugalvl.vocab import Vocabulary
from tests.change.conftest import pair
from tests.change.test_steps import plain_otsu

LEVIR = SegEarthOV3Settings(confidence_threshold=0.5, prob_thd=0.4)


@torch.no_grad()
def official_date(sam3, rgb: np.ndarray, queries, settings: SegEarthOV3Settings):
    from PIL import Image

    scores = official_style_view_scores(sam3, rgb, queries, settings)
    pixels = sam3.processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    fpn = sam3.model.get_vision_features(pixel_values=pixels).fpn_hidden_states[-2][0]
    return scores, fpn


def official_change(f1, fpn1, f2, fpn2, vocab: Vocabulary, seg: SegEarthOV3Settings, iou_thr: float, min_area: int):
    """The official steps, stated plainly. ``f*``: [Q, H, W]; ``fpn*``: [D, h, w]."""
    q2c = vocab.query_to_class
    n_classes = max(q2c) + 1
    h, w = f1.shape[-2:]
    onehot = torch.zeros(n_classes, len(q2c))
    for q, c in enumerate(q2c):
        onehot[c, q] = 1

    def labels(f):
        cls = (onehot[:, :, None, None] * f[None]).amax(1)
        lab = cls.argmax(0)
        lab[f.amax(0) < seg.prob_thd] = seg.bg_idx
        return lab

    fg1, fg2 = labels(f1) > 0, labels(f2) > 0

    def dilated(fg):
        return F.max_pool2d(fg.float()[None, None], 5, 1, 2)[0, 0] > 0

    def one_way(src, other):
        lab, n = ndimage.label(src.numpy(), structure=np.ones((3, 3)))
        out = np.zeros((h, w), bool)
        for i in range(1, n + 1):
            comp = lab == i
            ratio = other.numpy()[comp].sum() / comp.sum()
            if ratio < iou_thr and comp.sum() >= min_area:
                out |= comp
        return out

    instance = one_way(fg1, dilated(fg2)) | one_way(fg2, dilated(fg1))

    a = F.interpolate(fpn1[None], size=(h, w), mode="bilinear", align_corners=False)
    b = F.interpolate(fpn2[None], size=(h, w), mode="bilinear", align_corners=False)
    d = 1 - (0.5 * F.cosine_similarity(a, b, dim=1, eps=1e-8)[0] + 0.5)
    semantic = np.full((h, w), seg.bg_idx)
    for c in range(n_classes):
        prompts = [q for q, k in enumerate(q2c) if k == c]
        if c == seg.bg_idx or not prompts:
            continue
        delta = torch.stack([(f1[q] - f2[q]).abs() for q in prompts]).amax(0)
        peak = torch.stack([torch.maximum(f1[q], f2[q]) for q in prompts]).amax(0)
        energy = (peak * delta * d).numpy()
        t = plain_otsu(energy) if energy.max() - energy.min() > 1e-4 else 0
        semantic[energy > max(t, 0.01)] = c
    return (instance & (semantic != seg.bg_idx)).astype(np.uint8)


CASES = {
    "levir-default": ("background;building", LEVIR, ChangeSettings()),
    "s2looking": ("background;building", dataclasses.replace(LEVIR, prob_thd=0.6), ChangeSettings(0.1, 0)),
    "synonyms-area": (
        "background;building,house;road",
        SegEarthOV3Settings(confidence_threshold=0.1, prob_thd=0.1),
        ChangeSettings(0.5, 20),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_change_map_equals_the_plain_restatement(sam3_bundle, case):
    classes, seg, change = CASES[case]
    vocab = Vocabulary.parse(classes)
    detector = ChangeDetector(SegEarthOV3(sam3_bundle, vocab, seg), change)
    before, after = pair()
    result = detector.detect(before, after)
    f1, p1 = official_date(sam3_bundle, before, vocab.queries, seg)
    f2, p2 = official_date(sam3_bundle, after, vocab.queries, seg)
    # the per-date inputs: the segmenter's batched scores equal the official schedule's up to fp32 noise,
    # the feature map is transformers' fpn_hidden_states[-2]
    s1, q1 = detector.date(before)
    assert torch.allclose(s1, f1, atol=1e-5) and torch.equal(q1, p1)
    # from the same inputs, every later step gives the same bits
    same = official_change(s1, q1, *detector.date(after), vocab, seg, *dataclasses.astuple(change))
    assert np.array_equal(result.change, same)
    # from the official schedule's scores: equal (near-tie pixels could differ; none here)
    expected = official_change(f1, p1, f2, p2, vocab, seg, *dataclasses.astuple(change))
    assert np.array_equal(result.change, expected)
    assert result.change.dtype == np.uint8 and set(np.unique(result.change)) <= {0, 1}
    assert result.change.any() or case != "levir-default", "the test pair should show some change"


def test_same_image_twice_is_no_change_and_swapping_dates_changes_nothing(sam3_bundle):
    detector = ChangeDetector(SegEarthOV3(sam3_bundle, Vocabulary.parse("background;building"), LEVIR))
    before, after = pair()
    assert not detector.detect(before, before).change.any()
    forward, backward = detector.detect(before, after), detector.detect(after, before)
    assert forward.change.any()
    assert np.array_equal(forward.change, backward.change)


def test_after_image_of_another_size_is_resized_to_the_before_image(sam3_bundle):
    detector = ChangeDetector(SegEarthOV3(sam3_bundle, Vocabulary.parse("background;building"), LEVIR))
    before, after = pair()
    result = detector.detect(before, np.ascontiguousarray(np.repeat(np.repeat(after, 2, 0), 2, 1)))
    assert result.change.shape == before.shape[:2]


def test_presence_pruning_and_a_single_class_are_refused(sam3_bundle):
    pruned = dataclasses.replace(LEVIR, presence_pruning=True)
    with pytest.raises(UserError, match="presence_pruning"):
        ChangeDetector(SegEarthOV3(sam3_bundle, Vocabulary.parse("background;building"), pruned))
    with pytest.raises(UserError, match="background class and at least one other"):
        ChangeDetector(SegEarthOV3(sam3_bundle, Vocabulary.parse("building"), LEVIR))


def test_change_settings_check_their_ranges():
    with pytest.raises(ValueError, match="instance_iou_threshold"):
        ChangeSettings(instance_iou_threshold=1.5)
    with pytest.raises(ValueError, match="min_instance_area"):
        ChangeSettings(min_instance_area=-1)


def test_defaults_are_the_levir_cd_config():
    from frugalvl.change.detector import default_segmentation_settings

    seg = default_segmentation_settings()
    assert (seg.confidence_threshold, seg.prob_thd, seg.bg_idx, seg.slide_crop) == (0.5, 0.4, 0, 0)
    assert not seg.presence_pruning
    assert ChangeSettings() == ChangeSettings(instance_iou_threshold=0.3, min_instance_area=0)


def test_from_pretrained_loads_a_folder_with_the_levir_cd_defaults(sam3_dir):
    detector = ChangeDetector.from_pretrained("background;building", str(sam3_dir))
    seg = detector.segmenter.settings
    assert (seg.confidence_threshold, seg.prob_thd) == (0.5, 0.4) and detector.settings == ChangeSettings()
    before, after = pair()
    reference = ChangeDetector(SegEarthOV3(detector.segmenter.sam3, Vocabulary.parse("background;building"), LEVIR))
    assert np.array_equal(detector.detect(before, after).change, reference.detect(before, after).change)


def test_features_from_the_scoring_pass_equal_a_second_pass(sam3_bundle):
    """One image-encoder pass per date instead of the official two: the same feature map, bit for bit."""
    vocab = Vocabulary.parse("background;building")
    detector = ChangeDetector(SegEarthOV3(sam3_bundle, vocab, LEVIR))
    before, _ = pair()
    calls = []
    original = sam3_bundle.model.get_vision_features

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    sam3_bundle.model.get_vision_features = counted
    try:
        scores, features = detector.date(before)
        assert len(calls) == 1
        assert torch.equal(features, detector.features(before)) and len(calls) == 2
        # with sliding windows the whole image is no view: a second pass gives its features
        windowed = ChangeDetector(SegEarthOV3(sam3_bundle, vocab, dataclasses.replace(LEVIR, slide_crop=32)))
        calls.clear()
        _, features2 = windowed.date(before)
        assert len(calls) == 4 + 1 and torch.equal(features2, features)
    finally:
        del sam3_bundle.model.get_vision_features
