"""Tiny random CLIP models written in the real checkpoint formats (no downloads).

``write_tiny_openai_clip`` saves an OpenAI-layout state dict (what ``ViT-B-16.pt`` holds once
unpacked); ``write_tiny_torchscript_clip`` saves a TorchScript archive like OpenAI's release
files. Head width 64 everywhere, so OpenAI's shape-based loader re-infers the architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_clip(embed_dim: int = 32, image_size: int = 224, patch_size: int = 16, width: int = 128, layers: int = 2,
              seed: int = 0):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(embed_dim=embed_dim,
                 vision_cfg=CLIPVisionCfg(layers=layers, width=width, patch_size=patch_size, image_size=image_size),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
                 quick_gelu=True)
    # Random init leaves some tensors at exact zeros/ones; perturb so every path is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def write_tiny_openai_clip(path: str | Path, **kwargs) -> Path:
    path = Path(path)
    torch.save(tiny_clip(**kwargs).state_dict(), path)
    return path


def write_tiny_torchscript_clip(path: str | Path, **kwargs) -> Path:
    path = Path(path)
    model = tiny_clip(**kwargs)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    traced = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, size, size)}, check_trace=False)
    traced.save(str(path))
    return path
