"""SegEarth-OV on CUDA: the official fp16 path agrees with the fp32 CPU path (run on a GPU machine)."""

import numpy as np
import pytest
import torch

from frugalvl.models.jbu import JBUOne
from frugalvl.segment.segearth_ov import SegEarthOV, SegEarthOVSettings
from frugalvl.vocab import Vocabulary

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_fp16_cuda_matches_fp32_cpu(tiny_clip_file):
    from frugalvl.models.clip import load_clip

    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    vocab = Vocabulary.parse("a;b,c;d;e")
    torch.manual_seed(0)
    up = JBUOne(feat_dim=32).eval()
    cpu = SegEarthOV(load_clip(str(tiny_clip_file)), vocab, up).class_scores(rgb)
    gpu32 = SegEarthOV(load_clip(str(tiny_clip_file), device="cuda", precision="fp32"), vocab, up).class_scores(rgb)
    gpu16 = SegEarthOV(load_clip(str(tiny_clip_file), device="cuda"), vocab, up).class_scores(rgb)
    assert torch.allclose(gpu32, cpu, atol=1e-4)
    assert (gpu16 - cpu).abs().max() < 2e-2
    assert (gpu16.argmax(0) == cpu.argmax(0)).float().mean() > 0.97


def test_commuted_upsampler_on_cuda(tiny_clip_file):
    from frugalvl.models.clip import load_clip

    rgb = np.random.default_rng(1).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    clip = load_clip(str(tiny_clip_file), device="cuda", precision="fp32")
    torch.manual_seed(0)
    up = JBUOne(feat_dim=32).eval()
    vocab = Vocabulary.parse("a;b;c")
    plain = SegEarthOV(clip, vocab, up).class_scores(rgb)
    commuted = SegEarthOV(clip, vocab, up, SegEarthOVSettings(commute_upsampler=True)).class_scores(rgb)
    assert torch.allclose(plain, commuted, atol=1e-4)
