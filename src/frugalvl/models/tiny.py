"""Tiny random CLIP models written in the real checkpoint formats (no downloads): for a first try of a
pipeline end to end in seconds (``frugalvl select demo``), for tests and benchmarks. Their outputs are
meaningless (random weights); the files and the code paths are the real ones.

``write_tiny_openai_clip`` saves an OpenAI-layout state dict (what ``ViT-B-16.pt`` holds once
unpacked, with its three extra scalars); ``write_tiny_torchscript_clip`` saves a TorchScript archive
like OpenAI's release files. Widths are multiples of 64: OpenAI's shape-based loader infers head
counts as ``width // 64``.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB_SIZE = 49408  # the CLIP BPE tokenizer's vocabulary
CONTEXT_LENGTH = 77


def tiny_clip(
    embed_dim: int = 32,
    image_size: int = 224,
    patch_size: int = 16,
    width: int = 128,
    text_width: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> torch.nn.Module:
    """An ``open_clip.model.CLIP`` with QuickGELU, as OpenAI's checkpoints, and seeded random weights."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(
            layers=layers, width=width, head_width=64, patch_size=patch_size, image_size=image_size
        ),
        text_cfg=CLIPTextCfg(
            context_length=CONTEXT_LENGTH,
            vocab_size=VOCAB_SIZE,
            width=text_width,
            heads=text_width // 64,
            layers=max(1, layers - 1),
        ),
        quick_gelu=True,
    )
    # Random init leaves some tensors at exact zeros/ones; perturb so every path is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def write_tiny_openai_clip(path: str | Path, **kwargs) -> Path:
    """Write a tiny CLIP's state dict in the OpenAI key layout; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = tiny_clip(**kwargs)
    state = dict(model.state_dict())
    # OpenAI's files carry these three scalars; the loader drops them.
    state.update(
        input_resolution=torch.tensor(kwargs.get("image_size", 224)),
        context_length=torch.tensor(CONTEXT_LENGTH),
        vocab_size=torch.tensor(VOCAB_SIZE),
    )
    torch.save(state, path)
    return path


def write_tiny_torchscript_clip(path: str | Path, **kwargs) -> Path:
    """Write a tiny CLIP as a TorchScript archive, the format of OpenAI's own release files."""
    path = Path(path)
    model = tiny_clip(**kwargs)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    traced = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, size, size)}, check_trace=False)
    traced.save(str(path))
    return path
