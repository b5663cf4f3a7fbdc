"""SegEarth-OV exemplars (docs/methods/exemplars.md#segearth-ov): visual prototypes as extra CLIP queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shapely.geometry import box

from frugalvl.errors import UserError
from frugalvl.segment.exemplars import Exemplar, Exemplars
from frugalvl.segment.exemplars_clip import Prototypes, region_means
from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings, _pad_to_patch
from frugalvl.vocab import Vocabulary
from frugalvl.windows import WindowAccumulator, plan_windows

VOCAB = Vocabulary.parse("background;building;road", strip="newline")
RGB = np.random.default_rng(0).integers(0, 256, size=(90, 130, 3), dtype=np.uint8)


def exemplars(*items, h: int = 90, w: int = 130) -> Exemplars:
    return Exemplars(tuple(Exemplar(n, p, box(*b)) for n, p, b in items), h, w, {"file": "test"})


def feature_map(seg: SegEarthOV, rgb: np.ndarray) -> torch.Tensor:
    """The pixel features ``[D, H, W]`` the logits are computed from, built the long way (independent of
    region_means): every window's features at its pixels, averaged, resized to the image."""
    s = seg.settings
    image = seg.preprocess(rgb)
    _, _, h, w = image.shape
    acc = WindowAccumulator(seg.clip.embed_dim, h, w)
    for win in plan_windows(h, w, s.slide_crop, s.slide_stride):
        crop, back = _pad_to_patch(image[:, :, win.y0 : win.y1, win.x0 : win.x1], seg.clip.patch_size)
        feats = seg.window_features(crop).float()
        feats = F.interpolate(feats, size=crop.shape[-2:], mode="bilinear", align_corners=False)
        acc.add(win, back(feats)[0])
    return F.interpolate(acc.result()[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("long_side", [448, None])
def test_region_means_equal_the_long_way(tiny_clip_model, long_side):
    seg = SegEarthOV(tiny_clip_model, VOCAB, None, SegEarthOVSettings(long_side=long_side))
    masks = torch.zeros(2, 90, 130, dtype=torch.bool)
    masks[0, 10:30, 20:60] = True
    masks[1, 50:52, 100:129] = True
    full = feature_map(seg, RGB)
    expected = torch.stack([full[:, m].mean(1) for m in masks])
    assert torch.allclose(region_means(seg, RGB, masks), expected, atol=1e-5)


class ConstantFeatures(SegEarthOV):
    """Hand-built features: one unit vector ``f`` everywhere, so a prototype of any region is ``f``."""

    def _encode_windows(self, x):
        b, _, h, w = x.shape
        f = torch.zeros(self.clip.embed_dim)
        f[3], f[7] = 0.6, 0.8
        patches = f[None, :, None, None].expand(b, -1, h // 16, w // 16).to(x.dtype)
        return torch.zeros(b, self.clip.embed_dim), patches


def test_exact_region_feature_scores_one(tiny_clip_model):
    seg = ConstantFeatures(tiny_clip_model, VOCAB, None, SegEarthOVSettings(cls_lambda=0.0))
    ex = exemplars(("building", True, (20, 10, 60, 30)))
    with_proto = seg.with_exemplars(ex, RGB)
    assert isinstance(with_proto, ConstantFeatures)
    logits = with_proto.query_logits(RGB)
    row = [i for i, c in enumerate(with_proto.query_to_class) if c == 1][-1]  # the prototype (after the text)
    assert torch.allclose(logits[row], torch.ones(90, 130), atol=1e-5)
    assert bool((logits[row] >= logits.amax(0) - 1e-6).all())


def test_max_over_queries_rule(tiny_clip_model):
    seg = SegEarthOV(tiny_clip_model, VOCAB).with_exemplars(exemplars(("road", True, (5, 40, 50, 80))), RGB)
    assert seg.query_to_class == [0, 1, 2, 2]
    logits = seg.query_logits(RGB)
    probs = (logits * seg.settings.logit_scale).softmax(0)
    expected = torch.stack([probs[0], probs[1], torch.maximum(probs[2], probs[3])])
    assert torch.allclose(seg.class_scores(RGB), expected, atol=1e-6)
    # the prototype row is the region's mean feature, normalised: its logits are cosines with it
    plain = SegEarthOV(tiny_clip_model, VOCAB, settings=SegEarthOVSettings(cls_lambda=0.0))
    mask = torch.zeros(1, 90, 130, dtype=torch.bool)
    mask[0, 40:80, 5:50] = True
    proto = region_means(plain, RGB, mask)[0]
    assert torch.allclose(seg.query_features[3], proto / proto.norm(), atol=1e-5)


def test_prototype_only_class_and_negatives(tiny_clip_model):
    ex = exemplars(("solar panel", True, (60, 10, 90, 40)), ("building", False, (0, 60, 40, 89)))
    seg = SegEarthOV(tiny_clip_model, VOCAB).with_exemplars(ex, RGB)
    assert seg.vocabulary.names == ["background", "building", "road", "solar panel"]
    assert seg.identity()["queries"] == ["background", "building", "road"]  # no text for the new class
    assert seg.query_to_class == [0, 0, 1, 2, 3]  # the negative prototype is a background query
    scores = seg.class_scores(RGB)
    assert scores.shape == (4, 90, 130)
    logits = seg.query_logits(RGB)
    probs = (logits * 50).softmax(0)
    assert torch.allclose(scores[3], probs[4], atol=1e-6)
    assert torch.allclose(scores[0], torch.maximum(probs[0], probs[1]), atol=1e-6)
    with pytest.raises(UserError, match="only negative"):
        SegEarthOV(tiny_clip_model, VOCAB).with_exemplars(exemplars(("pond", False, (0, 0, 9, 9))), RGB)


def test_saved_prototypes_reload_to_the_same_scores(tiny_clip_model, tmp_path):
    ex = exemplars(("solar panel", True, (60, 10, 90, 40)), ("road", True, (5, 40, 50, 80)))
    seg = SegEarthOV(tiny_clip_model, VOCAB).with_exemplars(ex, RGB)
    path = seg.prototypes.save(tmp_path / "protos.npz")
    other_image = np.random.default_rng(5).integers(0, 256, size=(70, 70, 3), dtype=np.uint8)
    loaded = SegEarthOV(tiny_clip_model, VOCAB).with_prototypes(Prototypes.load(path))
    assert loaded.vocabulary == seg.vocabulary
    assert torch.equal(loaded.class_scores(other_image), seg.class_scores(other_image))
    assert loaded.identity()["prototypes"]["vectors"] == seg.identity()["prototypes"]["vectors"]
    with pytest.raises(UserError, match="another model"):
        SegEarthOV(tiny_clip_model, VOCAB, settings=SegEarthOVSettings(long_side=224)).with_prototypes(
            Prototypes.load(path)
        )
    # a later run that names the class in its vocabulary keeps its text as well
    named = Vocabulary.parse("background;building;road;solar panel", strip="newline")
    with_text = SegEarthOV(tiny_clip_model, named).with_prototypes(Prototypes.load(path))
    assert with_text.vocabulary == named and with_text.identity()["queries"] == named.queries
    assert with_text.query_to_class == [0, 1, 2, 2, 3, 3]
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(UserError, match="not a prototype file"):
        Prototypes.load(tmp_path / "bad.npz")


def test_identity_changes_with_exemplars(tiny_clip_model):
    plain = SegEarthOV(tiny_clip_model, VOCAB)
    assert "prototypes" not in plain.identity()
    a = plain.with_exemplars(exemplars(("road", True, (5, 40, 50, 80))), RGB).identity()
    b = plain.with_exemplars(exemplars(("road", True, (5, 41, 50, 80))), RGB).identity()
    assert a["prototypes"] != b["prototypes"]
