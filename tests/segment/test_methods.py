"""The method registry (frugalvl.segment.methods) and the segmenters' cache arguments.

The caches must never change a result: every score computed through them is compared bit for bit
with a segmenter built without them.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.segment.methods import METHODS, SegmenterRecipe, method, model_options
from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from frugalvl.vocab import Vocabulary

VOCAB = Vocabulary.parse("background;water,river,lake;forest,tree")
CHANGED = Vocabulary.parse("background;water,river,pond;forest,tree")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(100, 120, 3), dtype=np.uint8)


class CountingCache:
    """A token cache that keeps everything and counts hits and misses."""

    def __init__(self) -> None:
        self.items: dict = {}
        self.hits = self.misses = 0

    def get(self, key):
        if key in self.items:
            self.hits += 1
            return self.items[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        self.items[key] = value


def test_the_registry_knows_both_methods_and_their_models():
    assert list(METHODS) == ["segearth-ov", "segearth-ov3"]
    assert method("segearth-ov").settings_class() is SegEarthOVSettings
    assert method("segearth-ov3").segmenter_class() is SegEarthOV3
    assert {name: o.default for name, o in model_options().items()} == {
        "clip": "ViT-B-16",
        "upsampler": None,
        "sam3": "facebook/sam3",
    }
    with pytest.raises(UserError, match="unknown method 'nope': choose one of segearth-ov, segearth-ov3"):
        method("nope")


def test_preset_merge_defaults_then_preset_then_overrides():
    """Potsdam's official thresholds (prob_thd 0.1, bg_idx 5 = "clutter", λ -0.3; loveda's SegEarth-OV3
    table its own), then the overrides; None overrides are not given."""
    ov, ov3 = method("segearth-ov"), method("segearth-ov3")
    assert ov.settings("potsdam") == SegEarthOVSettings(prob_thd=0.1, bg_idx=5, cls_lambda=-0.3)
    assert ov.settings("potsdam", prob_thd=0.7, cls_lambda=None) == SegEarthOVSettings(prob_thd=0.7, bg_idx=5)
    assert ov.settings(None, attention="vanilla", prob_thd=None) == SegEarthOVSettings(attention="vanilla")
    assert ov3.settings("loveda") == SegEarthOV3Settings(confidence_threshold=0.5, prob_thd=0.5)
    # the user's own classes: the preset's bg_idx (5, "clutter") does not name their class 5
    assert ov.settings("potsdam", Vocabulary.parse("a;b;c;d;e;f")).bg_idx == 0
    with pytest.raises(ValueError, match="prob_thd"):
        ov.settings("potsdam", prob_thd=2.0)


def test_preset_vocabularies_are_read_as_the_official_class_files():
    from frugalvl.presets import list_presets, load_preset, preset_vocabulary

    for name in list_presets():
        for entry in METHODS.values():
            if entry.preset_table in load_preset(name):
                assert entry.vocabulary(name) == preset_vocabulary(name, entry.preset_table), (name, entry.name)


def test_model_identity_names_the_defaults():
    assert method("segearth-ov").model_identity({}) == {"clip": "name:ViT-B-16", "upsampler": None}
    assert method("segearth-ov3").model_identity({"sam3": None}) == {"sam3": "name:facebook/sam3"}


def test_segearth_ov_caches_give_the_same_scores(tiny_clip_model, image):
    # 64 px windows at stride 48 on the 100×120 image: 6 windows in 3 batches, quick on the CPU
    native = SegEarthOVSettings(long_side=None, window_batch=2, slide_crop=64, slide_stride=48)
    plain = SegEarthOV(tiny_clip_model, VOCAB, settings=native).class_scores(image)
    text_cache: dict = {}
    tokens = CountingCache()
    first = SegEarthOV(tiny_clip_model, VOCAB, settings=native, text_cache=text_cache, token_cache=tokens)
    assert torch.equal(first.query_features, SegEarthOV(tiny_clip_model, VOCAB).query_features)
    assert torch.equal(first.class_scores(image), plain)
    assert len(text_cache) == len(VOCAB.queries) and (tokens.hits, tokens.misses) == (0, 3)

    # one query changed: one new text feature, every window's tokens from the cache, same scores as fresh
    second = SegEarthOV(tiny_clip_model, CHANGED, settings=native, text_cache=text_cache, token_cache=tokens)
    assert len(text_cache) == len(VOCAB.queries) + 1
    expected = SegEarthOV(tiny_clip_model, CHANGED, settings=native).class_scores(image)
    assert torch.equal(second.class_scores(image), expected)
    assert (tokens.hits, tokens.misses) == (3, 3)
    # another attention mode gives other tokens: no stale hit
    vanilla = dataclasses.replace(native, attention="vanilla")
    other = SegEarthOV(tiny_clip_model, VOCAB, settings=vanilla, text_cache=text_cache, token_cache=tokens)
    assert torch.equal(
        other.class_scores(image), SegEarthOV(tiny_clip_model, VOCAB, settings=vanilla).class_scores(image)
    )
    assert (tokens.hits, tokens.misses) == (3, 6)


def test_segearth_ov3_text_cache_gives_the_same_scores(image):
    from frugalvl.testing.sam3 import random_sam3

    bundle = random_sam3("tiny", seed=0)
    vocab = Vocabulary.parse("water;forest,tree;city")
    changed = Vocabulary.parse("water;forest,wood;city")
    text_cache: dict = {}
    cached = SegEarthOV3(bundle, vocab, text_cache=text_cache)
    assert torch.equal(cached.class_scores(image), SegEarthOV3(bundle, vocab).class_scores(image))
    assert len(text_cache) == 4
    second = SegEarthOV3(bundle, changed, text_cache=text_cache)
    feats, mask = second.text_embeddings()
    fresh_feats, fresh_mask = SegEarthOV3(bundle, changed).text_embeddings()
    assert len(text_cache) == 5  # "wood" only
    assert torch.equal(feats, fresh_feats) and torch.equal(mask, fresh_mask)
    assert torch.equal(second.class_scores(image), SegEarthOV3(bundle, changed).class_scores(image))


def test_build_passes_only_the_caches_a_segmenter_takes(tiny_clip_model):
    from frugalvl.testing.sam3 import random_sam3

    tokens = CountingCache()
    ov = method("segearth-ov").build(
        {"clip": tiny_clip_model, "upsampler": None}, VOCAB, SegEarthOVSettings(), text_cache={}, token_cache=tokens
    )
    assert isinstance(ov, SegEarthOV) and ov.token_cache is tokens
    ov3 = method("segearth-ov3").build(
        {"sam3": random_sam3("tiny", seed=0)}, VOCAB, SegEarthOV3Settings(), text_cache={}, token_cache=tokens
    )
    assert isinstance(ov3, SegEarthOV3)


def test_a_recipe_pickles_and_builds_the_same_segmenter(tiny_clip_file, tiny_clip_model, image):
    settings = SegEarthOVSettings(cls_lambda=-0.1, long_side=None)
    recipe = SegmenterRecipe("segearth-ov", VOCAB, settings, {"clip": str(tiny_clip_file)})
    segmenter = pickle.loads(pickle.dumps(recipe))()
    expected = SegEarthOV(tiny_clip_model, VOCAB, settings=settings).class_scores(image)
    assert torch.equal(segmenter.class_scores(image), expected)
