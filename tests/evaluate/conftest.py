"""Shared fixtures of the evaluation tests (helpers live in eval_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import spacenet_labelled
from tests.evaluate.eval_fixtures import write_pair


@pytest.fixture
def potsdam_root(tmp_path: Path) -> Path:
    """A data root in the Potsdam layout holding a real labelled 512² crop as four 256² tiles.

    The crop is SpaceNet's (freely licensed, in tests/data), its labels in Potsdam's encoding: 2 for
    building, 1 (impervious surface) elsewhere, and 0 (ignored after reduce_zero_label) on a border.
    """
    rgb, mask = spacenet_labelled(512)
    label = np.where(mask > 0, 2, 1).astype(np.uint8)
    label[:, :3] = 0
    root = tmp_path / "data"
    for y in (0, 256):
        for x in (0, 256):
            write_pair(
                root,
                "potsdam",
                f"potsdam_{y}_{x}",
                rgb[y : y + 256, x : x + 256].copy(),
                label[y : y + 256, x : x + 256].copy(),
            )
    return root
