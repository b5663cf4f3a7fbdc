"""The object verdict ("instance-level verification", docs/methods/segearth_ov3_change.md#object-verdict).

Each date's foreground (label > 0, whatever the class) is split into 8-connected blobs. A blob is
changed when less than ``instance_iou_threshold`` of its pixels lie in the *other* date's foreground
dilated by a 5×5 square, and it has at least ``min_instance_area`` pixels. Both directions are tested
and their changed blobs united. Only coverage is tested, so blobs that split or merge between the dates
are not changes, and drift of up to the dilation radius is absorbed.
"""

from __future__ import annotations

import numpy as np

from .settings import DILATION_RADIUS


def dilate(mask: np.ndarray, radius: int = DILATION_RADIUS) -> np.ndarray:
    """``mask`` dilated by a (2·radius+1)² square; pixels outside the image count as background.

    The same as the official max-pool (kernel 2r+1, stride 1, padding r), done as two 1-D maxima.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or mask.size == 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.zeros((height + 2 * radius, width), dtype=bool)
    padded[radius : radius + height] = mask
    rows = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        rows |= padded[dy : dy + height]
    padded = np.zeros((height, width + 2 * radius), dtype=bool)
    padded[:, radius : radius + width] = rows
    out = np.zeros_like(mask)
    for dx in range(2 * radius + 1):
        out |= padded[:, dx : dx + width]
    return out


def components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """8-connected blobs of ``mask``: ``(count + 1, H×W int32 labels)``, 0 = background."""
    import cv2

    n, labels = cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return int(n), labels


def changed_blobs(
    source: np.ndarray, other_dilated: np.ndarray, instance_iou_threshold: float, min_instance_area: int
) -> np.ndarray:
    """One direction: the pixels of ``source``'s blobs that ``other_dilated`` covers too little."""
    n, labels = components(source)
    if n <= 1:
        return np.zeros(source.shape, dtype=bool)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n)
    cover = np.bincount(flat, weights=np.asarray(other_dilated, dtype=np.float64).ravel(), minlength=n)
    ratio = cover[1:] / area[1:]  # float64, as the official count ratio
    changed = np.zeros(n, dtype=bool)
    changed[1:] = (ratio < instance_iou_threshold) & (area[1:] >= min_instance_area)
    return changed[labels]


def object_verdict(
    before: np.ndarray, after: np.ndarray, instance_iou_threshold: float, min_instance_area: int
) -> np.ndarray:
    """Changed blobs of either date (H×W bool) from the two foreground masks (H×W bool)."""
    before, after = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if before.shape != after.shape:
        raise ValueError(f"the two foreground masks differ in size: {before.shape} and {after.shape}")
    forward = changed_blobs(before, dilate(after), instance_iou_threshold, min_instance_area)
    backward = changed_blobs(after, dilate(before), instance_iou_threshold, min_instance_area)
    return forward | backward
