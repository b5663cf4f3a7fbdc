"""Fixtures of the change-detection tests: the informative tiny SAM 3, saved as a folder, and image pairs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import landsat_rgb
from tests.segment.test_segearth_ov3 import informative_sam3, one_thread  # noqa: F401 (one_thread: autouse)


@pytest.fixture(scope="session")
def sam3_bundle():
    return informative_sam3()


@pytest.fixture(scope="session")
def sam3_dir(tmp_path_factory, sam3_bundle):
    folder = tmp_path_factory.mktemp("sam3-tiny-change")
    sam3_bundle.model.save_pretrained(folder)
    sam3_bundle.processor.save_pretrained(folder)
    return folder


def pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A real crop and a changed copy: its bottom half replaced by another part of the scene."""
    scene = landsat_rgb(256)
    before = np.ascontiguousarray(scene[:size, :size])
    after = before.copy()
    after[size // 2 :] = scene[200 : 200 + size - size // 2, :size]
    return before, after
