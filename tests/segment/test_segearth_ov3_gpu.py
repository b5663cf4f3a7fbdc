"""SegEarth-OV3 on CUDA (run on a GPU machine): batched views and prompts agree with the fp32 CPU path,
also when the image-sized accumulators live in host memory; bf16 stays close."""

import copy

import numpy as np
import pytest
import torch

import frugalvl.segment.segearth_ov3 as module
from frugalvl.models.sam3 import Sam3Bundle
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings
from frugalvl.testing.sam3 import random_sam3
from frugalvl.testing.segearth_ov3_reference import official_style_view_scores
from frugalvl.vocab import Vocabulary

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

VOCAB = Vocabulary.parse("road,parking lot;building;low vegetation;tree;car;clutter")
IMAGE = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)


def on_cuda(bundle: Sam3Bundle) -> Sam3Bundle:
    """The same weights on the GPU (a model initialised there would draw other random numbers)."""
    return Sam3Bundle(copy.deepcopy(bundle.model).to("cuda"), bundle.processor, bundle.source)


@pytest.mark.parametrize("crop, stride", [(0, 0), (64, 64), (64, 32)])  # whole; no overlap; overlap
def test_cuda_fp32_matches_the_cpu(crop, stride, monkeypatch):
    settings = SegEarthOV3Settings(slide_crop=crop, slide_stride=stride, precision="fp32", confidence_threshold=0.0)
    bundle = random_sam3("tiny")
    cpu = SegEarthOV3(bundle, VOCAB, settings).class_scores(IMAGE)
    gpu = SegEarthOV3(on_cuda(bundle), VOCAB, settings)
    assert gpu.view_batch == 4
    on_device = gpu.class_scores(IMAGE)
    assert torch.allclose(on_device, cpu, atol=1e-4)
    monkeypatch.setattr(module, "_DEVICE_OUTPUT_BUDGET", 0)  # accumulators in host memory
    assert torch.allclose(gpu.class_scores(IMAGE), on_device, atol=1e-6)
    assert torch.allclose(gpu.query_scores(IMAGE).amax(0), on_device.amax(0), atol=1e-6)


def test_cuda_bf16_stays_close_to_the_official_schedule():
    cpu_bundle = random_sam3("tiny")
    bundle = on_cuda(cpu_bundle)
    settings = SegEarthOV3Settings()  # auto: bf16 autocast, as the official code
    ours = SegEarthOV3(bundle, VOCAB, settings).query_scores(IMAGE)
    official = official_style_view_scores(bundle, IMAGE, VOCAB.queries, settings).cpu()
    fp32 = SegEarthOV3(cpu_bundle, VOCAB, SegEarthOV3Settings(precision="fp32")).query_scores(IMAGE)
    assert (ours - official).abs().max() < 2e-2
    assert (ours - fp32).abs().max() < 2e-2
