"""Shared fixtures of the evaluation tests (helpers live in eval_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluate.eval_fixtures import real_tiles, write_pair


@pytest.fixture
def potsdam_root(tmp_path: Path) -> Path:
    """A data root holding Potsdam: the real 512² crop as four 256² tiles."""
    root = tmp_path / "data"
    for sample_id, rgb, label in real_tiles("potsdam", 256):
        write_pair(root, "potsdam", sample_id, rgb, label)
    return root
