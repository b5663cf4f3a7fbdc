"""SegEarth-OV against an official-style reference, written from docs/methods/segearth_ov.md independently.

The reference follows the official code's structure: one window at a time at batch 1, the
sequence-first custom attention, padding every window's logits to full size, a one-hot synonym
merge. The segmenter under test batches windows, index-adds and scatter-maxes instead; both must
give the same probabilities (1e-5 in float32) and the same labels.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from frugalvl.errors import UserError
from frugalvl.models.jbu import JBUOne
from frugalvl.segment.base import labels_from_scores, merge_synonyms
from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
from frugalvl.vocab import Vocabulary, imagenet_templates
from tests.conftest import landsat_rgb

MEAN = torch.tensor([122.771, 116.746, 104.094]).view(1, 3, 1, 1)
STD = torch.tensor([68.501, 66.632, 70.323]).view(1, 3, 1, 1)


def ref_text(clip, queries):
    feats = []
    for q in queries:
        tokens = clip.tokenizer([t(q) for t in imagenet_templates()])
        f = clip.model.encode_text(tokens)
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(0)
        feats.append(f / f.norm())
    return torch.stack(feats)


def ref_encode(clip, img, lam_needed=True):
    v = clip.model.visual
    x = v.conv1(img)
    gh, gw = x.shape[-2:]
    x = x.reshape(1, x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.view(1, 1, -1), x], 1)
    n = v.positional_embedding.shape[0] - 1
    if gh * gw == n and img.shape[-1] == img.shape[-2]:
        pos = v.positional_embedding
    else:
        side = int(math.sqrt(n))
        p = v.positional_embedding[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        p = F.interpolate(p, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
        pos = torch.cat([v.positional_embedding[:1], p.permute(0, 2, 3, 1).reshape(gh * gw, -1)])
    x = v.ln_pre(x + pos)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    blk = v.transformer.resblocks[-1]
    # the official custom_attn, sequence first (LND)
    y = blk.ln_1(x).permute(1, 0, 2)
    nt, bsz, dim = y.shape
    heads = blk.attn.num_heads
    hd = dim // heads
    q, k, val = F.linear(y, blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
    q, k, val = (t.contiguous().view(-1, bsz * heads, hd).transpose(0, 1) for t in (q, k, val))
    s = hd**-0.5
    w = sum(F.softmax(torch.bmm(a, a.transpose(1, 2)) * s, dim=-1) for a in (q, k, val))
    out = torch.bmm(w, val).transpose(0, 1).contiguous().view(-1, bsz, dim)
    x = blk.attn.out_proj(out).permute(1, 0, 2)
    x = v.ln_post(x) @ v.proj
    return x[:, 0], x[:, 1:], (gh, gw)


def ref_forward_feature(clip, upsampler, text, img, lam):
    cls, patches, (gh, gw) = ref_encode(clip, img)
    cls = cls / cls.norm(dim=-1, keepdim=True)
    cls_logits = cls @ text.T
    h, w = img.shape[-2:]
    if upsampler is not None:
        feats = patches.permute(0, 2, 1).reshape(1, -1, gh, gw)
        feats = upsampler(feats, img).reshape(1, -1, h * w).permute(0, 2, 1)
        lh, lw = h, w
    else:
        feats, lh, lw = patches, gh, gw
    feats = feats / feats.norm(dim=-1, keepdim=True)
    logits = feats @ text.T + cls_logits * lam
    logits = logits.permute(0, 2, 1).reshape(1, -1, lh, lw)
    return F.interpolate(logits, size=(h, w), mode="bilinear")


def ref_probs(clip, upsampler, rgb, vocab, lam=-0.3):
    import cv2

    h0, w0 = rgb.shape[:2]
    s = 448 / max(h0, w0)
    img = cv2.resize(rgb, (int(w0 * s + 0.5), int(h0 * s + 0.5)), interpolation=cv2.INTER_LINEAR)
    img = (torch.from_numpy(img).permute(2, 0, 1)[None].float() - MEAN) / STD
    text = ref_text(clip, vocab.queries)
    H, W = img.shape[-2:]
    preds = torch.zeros(1, len(vocab.queries), H, W)
    count = torch.zeros(1, 1, H, W)
    for hi in range(max(H - 224 + 111, 0) // 112 + 1):
        for wi in range(max(W - 224 + 111, 0) // 112 + 1):
            y1, x1 = hi * 112, wi * 112
            y2, x2 = min(y1 + 224, H), min(x1 + 224, W)
            y1, x1 = max(y2 - 224, 0), max(x2 - 224, 0)
            crop = img[:, :, y1:y2, x1:x2]
            ch, cw = crop.shape[2:]
            left = ((16 - cw % 16) // 2) if cw % 16 else 0
            r = (16 - cw % 16 - left) if cw % 16 else 0
            t = ((16 - ch % 16) // 2) if ch % 16 else 0
            b = (16 - ch % 16 - t) if ch % 16 else 0
            if any((left, r, t, b)):
                crop = F.pad(crop, (left, r, t, b))
            logit = ref_forward_feature(clip, upsampler, text, crop, lam)
            logit = logit[:, :, t : t + ch, left : left + cw]
            preds += F.pad(logit, (x1, W - x2, y1, H - y2))
            count[:, :, y1:y2, x1:x2] += 1
    logits = F.interpolate(preds / count, size=(h0, w0), mode="bilinear")[0]
    probs = (logits * 50).softmax(0)
    onehot = F.one_hot(torch.tensor(vocab.query_to_class)).T.view(len(vocab), len(vocab.queries), 1, 1)
    return (probs[None] * onehot).max(1)[0]


@pytest.fixture(scope="module")
def aerial():
    """A real image: the interior of the bundled CC0 Landsat scene."""
    return landsat_rgb(512)


VOCAB = Vocabulary.parse("road,parking lot;building;low vegetation;tree;car;clutter,background", strip="newline")


@pytest.mark.parametrize("shape,use_upsampler", [((300, 200), True), ((60, 270), False)])
def test_matches_official_style_reference(tiny_clip_model, aerial, shape, use_upsampler):
    rgb = np.ascontiguousarray(aerial[: shape[0], : shape[1]])
    torch.manual_seed(0)
    upsampler = JBUOne(feat_dim=32, radius=2).eval() if use_upsampler else None  # 5×5: same code, faster
    seg = SegEarthOV(tiny_clip_model, VOCAB, upsampler, SegEarthOVSettings(window_batch=4))
    ours = seg.class_scores(rgb)
    with torch.no_grad():
        ref = ref_probs(tiny_clip_model, upsampler, rgb, VOCAB)
    assert ours.shape == (len(VOCAB), *shape)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    assert torch.equal(labels_from_scores(ours, 0.1, 5), labels_from_scores(ref, 0.1, 5))


def test_window_batch_size_does_not_change_results(tiny_clip_model, aerial):
    rgb = np.ascontiguousarray(aerial[:200, :260])
    one = SegEarthOV(tiny_clip_model, VOCAB, None, SegEarthOVSettings(window_batch=1)).class_scores(rgb)
    many = SegEarthOV(tiny_clip_model, VOCAB, None, SegEarthOVSettings(window_batch=16)).class_scores(rgb)
    assert torch.allclose(one, many, atol=1e-6)


def test_synonym_max_and_thresholds_hand_case():
    probs = torch.tensor([[0.1, 0.5], [0.6, 0.2], [0.3, 0.3]]).view(3, 1, 2)  # queries: a, b1, b2
    merged = merge_synonyms(probs, [0, 1, 1])
    assert torch.equal(merged.view(2, 2), torch.tensor([[0.1, 0.5], [0.6, 0.3]]))
    assert labels_from_scores(merged).view(-1).tolist() == [1, 0]
    # the best score at pixel 2 is 0.5 < 0.55 -> background index 1
    assert labels_from_scores(merged, prob_thd=0.55, bg_idx=1).view(-1).tolist() == [1, 1]


def test_text_embeddings_cached_per_vocabulary(tiny_clip_model):
    calls = []
    original = tiny_clip_model.encode_text
    tiny_clip_model.encode_text = lambda texts, **k: calls.append(len(texts)) or original(texts, **k)
    try:
        vocab = Vocabulary.parse("pond;dune")
        SegEarthOV(tiny_clip_model, vocab)
        SegEarthOV(tiny_clip_model, vocab)
    finally:
        del tiny_clip_model.encode_text
    assert calls == [160]


def test_upsampler_for_another_feature_width_is_refused(tiny_clip_model):
    with pytest.raises(UserError, match="512-d features"):
        SegEarthOV(tiny_clip_model, VOCAB, JBUOne(feat_dim=512))


def test_from_pretrained_and_package_exports(tiny_clip_file, aerial):
    import frugalvl.segment as segment

    seg = segment.SegEarthOV.from_pretrained("background;building,roof;road", clip=str(tiny_clip_file))
    assert seg.vocabulary.names == ["background", "building", "road"]
    assert seg.upsampler is None
    rgb = np.ascontiguousarray(aerial[:64, :96])
    labels = segment.labels_from_scores(seg.class_scores(rgb), seg.prob_thd, seg.bg_idx)
    assert labels.shape == (64, 96) and int(labels.max()) < 3
    assert seg.identity()["clip"] == seg.clip.identity


def test_bg_idx_is_checked_by_the_library(tiny_clip_model):
    from frugalvl.errors import UserError

    with pytest.raises(UserError, match="bg_idx 3 is not a class index"):
        SegEarthOV(tiny_clip_model, Vocabulary.parse("a;b;c"), settings=SegEarthOVSettings(bg_idx=3))


def test_jbu_kernel_setting_reaches_the_upsampler(tiny_clip_model):
    from frugalvl.cli import build_parser
    from frugalvl.commands.methods import method_module

    settings_from_cli = method_module("segearth-ov").settings_from_cli

    args = build_parser(["segment"]).parse_args(
        ["segment", "x.png", "-o", "o", "--classes", "a;b", "--jbu-kernel", "torch"]
    )
    assert settings_from_cli(args).jbu_kernel == "torch"
    args = build_parser(["segment"]).parse_args(["segment", "x.png", "-o", "o", "--jbu-kernel", "compiled"])
    assert settings_from_cli(args).jbu_kernel == "compiled"
    torch.manual_seed(0)
    up = JBUOne(feat_dim=tiny_clip_model.embed_dim)
    seg = SegEarthOV(tiny_clip_model, Vocabulary.parse("a;b"), up, SegEarthOVSettings(jbu_kernel="torch"))
    assert {stage.kernel_backend for stage in seg.upsampler.stages()} == {"torch"}
    seg = SegEarthOV(tiny_clip_model, Vocabulary.parse("a;b"), up, SegEarthOVSettings(jbu_kernel="compiled"))
    assert {stage.kernel_backend for stage in seg.upsampler.stages()} == {"compiled"}
    # no CUDA here: one clear line when the segmenter is built, before any image, not a Triton traceback
    with pytest.raises(UserError, match="riton"):
        SegEarthOV(tiny_clip_model, Vocabulary.parse("a;b"), up, SegEarthOVSettings(jbu_kernel="triton"))


def test_progress_is_reported_inside_an_image(tiny_clip_model, aerial):
    from frugalvl.segment.base import scores_of

    seg = SegEarthOV(tiny_clip_model, Vocabulary.parse("a;b"), settings=SegEarthOVSettings(long_side=None))
    rgb = np.ascontiguousarray(aerial[:224, :448])  # native size: 1 × 3 windows of 224 at stride 112
    calls: list[tuple[int, int]] = []
    with_progress = scores_of(seg, rgb, lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(with_progress, seg.class_scores(rgb))

    class Plain:  # a segmenter without the option still works through scores_of
        vocabulary, prob_thd, bg_idx = seg.vocabulary, 0.0, 0

        def class_scores(self, rgb):
            return torch.zeros(2, *rgb.shape[:2])

    assert scores_of(Plain(), rgb, lambda done, total: calls.append((-1, -1))).shape == (2, 224, 448)
    assert calls[-1] == (3, 3)


def scores_and_windows(seg, rgb, valid=None):
    """Class scores on one intra-op thread (no window workers: bit-comparable) and the windows run."""
    totals: list[int] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = seg.class_scores(rgb, progress=lambda done, total: totals.append(total), valid=valid)
    finally:
        torch.set_num_threads(threads)
    return scores, (totals[-1] if totals else 0)


@pytest.mark.parametrize("long_side,use_upsampler", [(None, False), (448, False), (336, True)])
def test_windows_that_cannot_change_a_valid_pixel_are_skipped(tiny_clip_model, aerial, long_side, use_upsampler):
    rgb = np.ascontiguousarray(aerial[:480, :400])
    torch.manual_seed(0)
    upsampler = JBUOne(feat_dim=32, radius=2).eval() if use_upsampler else None
    seg = SegEarthOV(tiny_clip_model, VOCAB, upsampler, SegEarthOVSettings(long_side=long_side))
    full, n_full = scores_and_windows(seg, rgb)
    valid = np.zeros(rgb.shape[:2], bool)
    valid[:100, :90] = True  # data (or the area of interest) in one corner only
    valid[300:310, 395:] = True  # and a sliver on the right edge
    part, n_part = scores_and_windows(seg, rgb, valid)
    assert 0 < n_part < n_full
    assert torch.equal(part[:, valid], full[:, valid])  # the very same numbers where they are kept
    assert torch.equal(labels_from_scores(part, 0.1, 5)[valid], labels_from_scores(full, 0.1, 5)[valid])
    assert torch.isfinite(part).all()  # the skipped pixels hold finite (meaningless) scores
    if long_side is None:  # no resize: rows start at 0, 112, 224, 256 and columns at 0, 112, 176, so
        assert n_part == 1 + 3  # the corner is in the first window only, the sliver in 3 rows × 1 column
    nothing, n_none = scores_and_windows(seg, rgb, np.zeros(rgb.shape[:2], bool))
    assert n_none == 0 and nothing.shape == full.shape and torch.isfinite(nothing).all()


def test_scores_of_passes_valid_only_to_segmenters_that_take_it(tiny_clip_model, aerial):
    from frugalvl.segment.base import scores_of

    seg = SegEarthOV(tiny_clip_model, Vocabulary.parse("a;b"), settings=SegEarthOVSettings(long_side=None))
    rgb = np.ascontiguousarray(aerial[:224, :448])
    seen: list[object] = []
    original = seg.class_scores
    seg.class_scores = lambda rgb, progress=None, valid=None: seen.append(valid) or original(rgb, progress, valid)
    try:
        corner = np.zeros((224, 448), bool)
        corner[:10, :10] = True
        scores_of(seg, rgb, valid=corner)
        scores_of(seg, rgb, valid=np.ones((224, 448), bool))  # all valid: the plain call
    finally:
        del seg.class_scores
    assert seen[0] is corner and seen[1] is None

    class Plain:  # a segmenter without the option gets the plain call
        vocabulary, prob_thd, bg_idx = seg.vocabulary, 0.0, 0

        def class_scores(self, rgb):
            return torch.zeros(2, *rgb.shape[:2])

    assert scores_of(Plain(), rgb, valid=corner).shape == (2, 224, 448)
