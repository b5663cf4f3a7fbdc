"""A tiny open_clip ViT CLIP with random weights, saved as an OpenAI-format state dict.

``frugalvl.models.clip.load_clip(path)`` rebuilds it with open_clip's
``build_model_from_openai_state_dict``, which infers the architecture from tensor shapes: head
counts come from ``width // 64``, so every width here is a multiple of 64.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB_SIZE = 49408      # the CLIP BPE tokenizer's vocabulary
CONTEXT_LENGTH = 77


def tiny_openai_clip(embed_dim: int = 32, image_size: int = 32, patch_size: int = 8, width: int = 64,
                     layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """An ``open_clip.model.CLIP`` with QuickGELU, as OpenAI's checkpoints, and seeded random weights."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=layers, width=width, head_width=64, patch_size=patch_size, image_size=image_size)
    text = CLIPTextCfg(context_length=CONTEXT_LENGTH, vocab_size=VOCAB_SIZE, width=width, heads=width // 64, layers=layers)
    model = CLIP(embed_dim, vision, text, quick_gelu=True)
    with torch.no_grad():  # open_clip leaves some projections at their init; make them informative
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.05)
    return model.eval()


def write_tiny_openai_clip(path: str | Path, embed_dim: int = 32, image_size: int = 32, patch_size: int = 8,
                           width: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write the tiny CLIP's state dict in the OpenAI key layout; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = tiny_openai_clip(embed_dim, image_size, patch_size, width, layers, seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # OpenAI's files carry these three scalars; build_model_from_openai_state_dict drops them.
    state.update(input_resolution=torch.tensor(image_size), context_length=torch.tensor(CONTEXT_LENGTH),
                 vocab_size=torch.tensor(VOCAB_SIZE))
    torch.save(state, path)
    return path



# Fixtures for the select tests (import them into a test module to use them).
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def select_clip_file(tmp_path_factory) -> Path:
    return write_tiny_openai_clip(tmp_path_factory.mktemp("select_clip") / "tiny-openai-clip.pt")


@pytest.fixture(scope="session")
def select_clip(select_clip_file):
    from frugalvl.models.clip import load_clip

    return load_clip(str(select_clip_file))
