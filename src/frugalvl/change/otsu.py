"""Otsu's threshold exactly as the official change detector computes it
(docs/methods/segearth_ov3_change.md#otsu-threshold).

The official code calls scikit-image's ``threshold_otsu`` (256 bins); this is the same computation with
numpy alone, in the same float32 arithmetic, so the threshold is the same bits:

* a histogram of the float32 values in 256 equal bins from their minimum to their maximum
  (``numpy.histogram``: float32 edges, the last bin closed on the right);
* bin centres = the mean of two neighbouring edges, in float32; counts cast to float32;
* for every split after bin k: w₁ = the count up to k, w₂ = the count after it, μ₁, μ₂ their mean
  centres (float32 cumulative sums); the threshold is the centre of the first bin k maximising
  w₁·w₂·(μ₁ − μ₂)².

A constant array has no split: its value is returned (the detector never asks, it tests the range first).
"""

from __future__ import annotations

import numpy as np

BINS = 256


def otsu_threshold(values: np.ndarray, bins: int = BINS) -> np.float32:
    """Otsu's threshold of ``values`` (any shape, converted to float32)."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    if flat.size == 0:
        raise ValueError("Otsu's threshold of an empty array is undefined")
    if bool((flat == flat[0]).all()):
        return np.float32(flat[0])
    counts, edges = np.histogram(flat, bins=bins)
    centres = (edges[:-1] + edges[1:]) / np.float32(2)
    counts = counts.astype(np.float32)
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    weighted = counts * centres
    mean1 = np.cumsum(weighted) / weight1
    mean2 = (np.cumsum(weighted[::-1]) / weight2[::-1])[::-1]
    variance = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return np.float32(centres[int(np.argmax(variance))])
