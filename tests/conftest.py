"""Shared fixtures: real sample data from ../shared when present, tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_RS = REPO.parent / "shared" / "data" / "rs"
SHARED_WEIGHTS = REPO.parent / "shared" / "data" / "weights"
EXAMPLES = REPO / "examples" / "data"


def shared_file(name: str, folder: Path = SHARED_RS) -> Path:
    """A file of the project's shared test data, or skip: it lives beside the repo in ../shared."""
    path = folder / name
    if not path.exists():
        pytest.skip(f"shared test data {path} is not present (it ships beside the repository in ../shared)")
    return path


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory) -> Path:
    from frugalvl.testing.clip import write_tiny_openai_clip

    return write_tiny_openai_clip(tmp_path_factory.mktemp("clip") / "tiny-ViT.pt")


@pytest.fixture(scope="session")
def tiny_clip_model(tiny_clip_file):
    from frugalvl.models.clip import load_clip

    return load_clip(str(tiny_clip_file))
