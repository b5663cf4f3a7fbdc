"""SegEarth-OV's CPU window workers (frugalvl.cpu_pool) against one window at a time on intra-op threads.

The workers only change where each window runs; the plain path is the reference: class scores within
1e-5, labels equal, on real crops.
"""

import threading

import numpy as np
import pytest
import torch

from frugalvl.models.jbu import JBUOne
from frugalvl.segment.base import labels_from_scores
from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
from frugalvl.vocab import Vocabulary
from tests.conftest import landsat_rgb, shared_file

VOCAB = Vocabulary.parse("road,parking lot;building;low vegetation;tree;car;clutter,background", strip="newline")


def scores_with_threads(seg, rgb, threads):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return seg.class_scores(rgb)
    finally:
        torch.set_num_threads(saved)


def check_workers_match_plain(seg, rgb):
    names = []
    original = seg.window_logits
    seg.window_logits = lambda crops: names.append(threading.current_thread().name) or original(crops)
    try:
        plain = scores_with_threads(seg, rgb, 1)
        assert not any(n.startswith("frugalvl-cpu") for n in names)
        names.clear()
        workers = scores_with_threads(seg, rgb, 2)
    finally:
        del seg.window_logits
    assert names and all(n.startswith("frugalvl-cpu") for n in names)  # the windows ran on the workers
    assert torch.allclose(workers, plain, atol=1e-5), (workers - plain).abs().max()
    assert torch.equal(labels_from_scores(workers, 0.1, 5), labels_from_scores(plain, 0.1, 5))


@pytest.mark.parametrize("use_upsampler", [False, True])
def test_workers_match_one_window_at_a_time(tiny_clip_model, use_upsampler):
    rgb = landsat_rgb(512)[:300, :260]
    torch.manual_seed(0)
    upsampler = JBUOne(feat_dim=32, radius=2).eval() if use_upsampler else None
    check_workers_match_plain(SegEarthOV(tiny_clip_model, VOCAB, upsampler), np.ascontiguousarray(rgb))


@pytest.mark.shared_data
def test_workers_match_on_the_potsdam_crop(tiny_clip_model):
    from PIL import Image

    rgb = np.asarray(Image.open(shared_file("potsdam_2_10_0_0_512_512.png")).convert("RGB"))
    check_workers_match_plain(SegEarthOV(tiny_clip_model, VOCAB), rgb)


def test_progress_counts_windows_in_order(tiny_clip_model):
    seg = SegEarthOV(tiny_clip_model, VOCAB, settings=SegEarthOVSettings(window_batch=2))
    calls = []
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seg.class_scores(landsat_rgb(448), progress=lambda done, total: calls.append((done, total)))
    finally:
        torch.set_num_threads(saved)
    assert calls == [(2, 9), (4, 9), (6, 9), (8, 9), (9, 9)]  # 9 windows of 224 in 448², batches of 2


def test_token_cache_is_shared_by_the_workers(tiny_clip_model):
    class Cache:
        def __init__(self):
            self.store, self.puts = {}, 0

        def get(self, key):
            return self.store.get(key)

        def put(self, key, value):
            self.puts += 1
            self.store[key] = value

    cache = Cache()
    seg = SegEarthOV(tiny_clip_model, VOCAB, token_cache=cache)
    rgb = landsat_rgb(448)
    first = scores_with_threads(seg, rgb, 2)
    assert cache.puts == 9
    second = scores_with_threads(seg, rgb, 2)
    assert cache.puts == 9  # every window from the cache
    assert torch.equal(first, second)


def test_bf16_clip_runs_with_an_upsampler_and_stays_close(tiny_clip_file):
    """bf16 (an approximate CPU option, docs/benchmarks.md#segearth-ov-on-the-cpu): the CLIP in bf16, the
    upsampler in its own fp32, unchanged."""
    from frugalvl.models.clip import load_clip

    rgb = np.ascontiguousarray(landsat_rgb(224))
    torch.manual_seed(0)
    upsampler = JBUOne(feat_dim=32, radius=2).eval()
    fp32 = SegEarthOV(load_clip(str(tiny_clip_file)), VOCAB, upsampler).class_scores(rgb)
    seg16 = SegEarthOV(load_clip(str(tiny_clip_file), precision="bf16"), VOCAB, upsampler)
    bf16 = seg16.class_scores(rgb)
    assert upsampler.fixup_proj[1].weight.dtype == torch.float32
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (bf16 - fp32).abs().max() < 0.1
