"""Picklable segmenter factories for the Ray tests and bench (docs/ray.md): no model, known worker PIDs."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .segmenters import ColourSegmenter, SlowColourSegmenter


@dataclass(frozen=True)
class ColourFactory:
    """Builds a :class:`ColourSegmenter` (``delay`` > 0: the slow one) in each Ray worker.

    ``pid_dir``: every process that segments an image writes an empty file named by its PID there,
    so a test can kill a worker mid-run, and one file per call under ``calls/`` (what a run computed).
    """

    names: str = "dark;red;green;blue;bright"
    delay: float = 0.0
    pid_dir: str | None = None
    fail_on: str | None = None  # a file name whose segmentation raises (a worker bug on one scene)

    def __call__(self) -> Any:
        from ..vocab import Vocabulary

        vocab = Vocabulary.parse(self.names)
        seg = SlowColourSegmenter(vocab, delay=self.delay) if self.delay else ColourSegmenter(vocab)
        return _Hooked(seg, self.pid_dir, self.fail_on) if self.pid_dir or self.fail_on else seg


class _Hooked:
    """Wraps a segmenter: records the PID of each process that segments, and raises a RuntimeError on
    images of one size ``HxW`` (how a test marks its bad scene)."""

    def __init__(self, inner: Any, pid_dir: str | None, fail_on: str | None) -> None:
        self.inner, self.pid_dir, self.fail_on = inner, pid_dir, fail_on
        self.vocabulary, self.prob_thd, self.bg_idx = inner.vocabulary, inner.prob_thd, inner.bg_idx

    def identity(self) -> dict:
        return self.inner.identity()

    def class_scores(self, rgb: Any) -> Any:
        if self.pid_dir is not None:
            Path(self.pid_dir, str(os.getpid())).touch()
            calls = Path(self.pid_dir, "calls")
            calls.mkdir(exist_ok=True)
            (calls / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
        h, w = rgb.shape[:2]
        if f"{h}x{w}" == self.fail_on:
            raise RuntimeError(f"simulated worker bug on a {h}x{w} image")
        return self.inner.class_scores(rgb)
