"""What a segmenter is, and the post-processing every segmenter shares.

A segmenter is built once (model, vocabulary, settings) and then called per image:
``class_scores(rgb)`` takes an ``H×W×3`` uint8 RGB array and returns ``[C, H, W]`` float32
per-class scores at the image size, synonyms already merged. Labels come from
:func:`labels_from_scores` with the segmenter's ``prob_thd`` and ``bg_idx``.
A segmenter never opens files and never knows about GeoTIFFs (see :mod:`frugalvl.raster`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from ..vocab import Vocabulary

Progress = Callable[[int, int], None]  # progress(done, total) over the windows or views of one image


class Segmenter(Protocol):
    vocabulary: Vocabulary
    prob_thd: float
    bg_idx: int

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        """``[C, H, W]`` float32 class scores (CPU) for an ``H×W×3`` uint8 RGB image. Segmenters may also
        take ``progress=`` (a :data:`Progress` callback over the image's windows); see :func:`scores_of`."""
        ...


def merge_synonyms(query_scores: torch.Tensor, query_to_class: Sequence[int]) -> torch.Tensor:
    """Each class takes the max over its queries: ``[Q, H, W] -> [C, H, W]``.

    The official codes multiply by a one-hot ``[C, Q, 1, 1]`` mask and take the max over Q, which
    allocates ``C×Q×H×W``. For non-negative scores (probabilities) that equals this per-class max,
    which needs no more memory than the output.
    """
    index = torch.as_tensor(list(query_to_class), device=query_scores.device)
    n_classes = int(index.max()) + 1
    if n_classes == len(query_to_class):
        return query_scores
    return torch.stack([query_scores[index == c].amax(0) for c in range(n_classes)])


def labels_from_scores(scores: torch.Tensor, prob_thd: float = 0.0, bg_idx: int = 0) -> torch.Tensor:
    """Argmax over classes; pixels whose best score is below ``prob_thd`` become ``bg_idx``."""
    labels = scores.argmax(0)  # the first maximal index on ties, as the official argmax
    labels[scores.amax(0) < prob_thd] = bg_idx
    return labels


def scores_in_window(
    segmenter: Segmenter, rgb: np.ndarray, window: object, valid: np.ndarray | None = None
) -> torch.Tensor:
    """Class scores of ``rgb``, the part ``window`` of a larger image: segmenters whose prompts depend on
    where they look (exemplars, :mod:`frugalvl.segment.exemplars`) give ``in_window(window)`` a copy for it.
    ``valid``: see :func:`scores_of`."""
    at = getattr(segmenter, "in_window", None)
    return scores_of(at(window) if at is not None else segmenter, rgb, valid=valid)


def scores_of(
    segmenter: Segmenter, rgb: np.ndarray, progress: Progress | None = None, valid: np.ndarray | None = None
) -> torch.Tensor:
    """``segmenter.class_scores(rgb)``, reporting progress inside the image where the segmenter can.

    ``valid`` (``[H, W]`` bool): the only pixels whose scores the caller keeps (where the input has
    data, inside a scene tile's core). Segmenters that take it skip the work that cannot change those
    pixels, whose scores stay exactly the same; the other pixels' scores are then meaningless.
    """
    accepted = inspect.signature(segmenter.class_scores).parameters
    extra: dict[str, object] = {}
    if progress is not None and "progress" in accepted:
        extra["progress"] = progress
    if valid is not None and "valid" in accepted and not bool(np.all(valid)):
        extra["valid"] = valid
    return segmenter.class_scores(rgb, **extra)  # type: ignore[call-arg]
