"""Fixtures for the select tests: a tiny CLIP at 32 px."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugalvl.testing.clip import write_tiny_openai_clip


@pytest.fixture(scope="session")
def select_clip_file(tmp_path_factory) -> Path:
    return write_tiny_openai_clip(tmp_path_factory.mktemp("select_clip") / "tiny-openai-clip.pt",
                                  image_size=32, patch_size=8, width=64)


@pytest.fixture(scope="session")
def select_clip(select_clip_file):
    from frugalvl.models.clip import load_clip

    return load_clip(str(select_clip_file))
