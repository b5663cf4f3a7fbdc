"""The change steps alone, on hand-made arrays: Otsu's threshold, the energy threshold, the object verdict.

Expectations are worked out by hand or restated plainly from docs/methods/segearth_ov3_change.md (a
histogram filled by comparing with the edges, Python loops for the sums), never by calling the code under
test twice.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from frugalvl.change.energy import threshold
from frugalvl.change.otsu import otsu_threshold
from frugalvl.change.verify import components, dilate, object_verdict


def plain_otsu(values: np.ndarray) -> np.float32:
    """Otsu as documented: 256 equal float32 bins from min to max, float32 running sums, first best split."""
    v = np.asarray(values, dtype=np.float32).ravel()
    lo, hi = v.min(), v.max()
    edges = np.linspace(lo, hi, 257, dtype=np.float32)
    counts = [0] * 256
    for x in v:
        k = 255
        for j in range(256):
            if x < edges[j + 1]:
                k = j
                break
        counts[k] += 1
    centres = [np.float32((edges[k] + edges[k + 1]) / np.float32(2)) for k in range(256)]
    f32 = np.float32
    best, best_k = None, 0
    for k in range(255):
        w1 = w2 = s1 = s2 = f32(0)
        for j in range(k + 1):
            w1 = f32(w1 + f32(counts[j]))
            s1 = f32(s1 + f32(f32(counts[j]) * centres[j]))
        for j in range(255, k, -1):  # the official sums run from the top bin down
            w2 = f32(w2 + f32(counts[j]))
            s2 = f32(s2 + f32(f32(counts[j]) * centres[j]))
        variance = f32(f32(w1 * w2) * f32(f32(s1 / w1) - f32(s2 / w2)) ** 2)
        if best is None or variance > best:
            best, best_k = variance, k
    return centres[best_k]


def test_two_levels_tie_everywhere_and_the_first_split_wins():
    values = np.array([0, 0, 0, 1, 1, 1], dtype=np.float32)
    # every split between the two full bins has the same variance: the first bin's centre, (0 + 1/256) / 2
    assert otsu_threshold(values) == np.float32(1 / 512)


def test_constant_values_return_the_value():
    assert otsu_threshold(np.full((4, 4), 0.25, dtype=np.float32)) == np.float32(0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_equals_the_plain_restatement(seed):
    rng = np.random.default_rng(seed)
    # a realistic energy map: mostly near zero, a few high values, float32
    values = np.concatenate([rng.exponential(0.01, 300), rng.uniform(0.2, 0.6, 40)]).astype(np.float32)
    assert otsu_threshold(values) == plain_otsu(values)


def test_energy_threshold_floor_and_range_guard():
    # no spread: no Otsu, the 0.01 floor
    assert threshold(np.zeros((3, 3), np.float32)) == np.float32(0.01)
    # a spread of 5e-5 (≤ 1e-4): no Otsu either, so every pixel above 0.01 is on (all change)
    flat = np.full((3, 3), 0.5, np.float32)
    flat[0, 0] = 0.50005
    assert threshold(flat) == np.float32(0.01)
    assert bool((flat > threshold(flat)).all())
    # spread but every value below the floor: nothing is on
    low = np.linspace(0, 0.009, 50, dtype=np.float32)
    assert threshold(low) == np.float32(0.01) and not (low > threshold(low)).any()
    # a clear two-level map: Otsu (the first bin's centre, 0.1 + 0.4/512) decides, above the floor
    two = np.array([0.1] * 20 + [0.5] * 5, np.float32)
    assert threshold(two) == plain_otsu(two) > np.float32(0.1) and (two > threshold(two)).sum() == 5
    # the same map from 0: Otsu's 0.5/512 is under the floor, which decides
    two[:20] = 0
    assert plain_otsu(two) < 0.01 and threshold(two) == np.float32(0.01)


def test_dilation_is_a_five_by_five_square_clipped_at_the_border():
    mask = np.zeros((7, 7), bool)
    mask[0, 0] = True
    out = dilate(mask)
    assert out[:3, :3].all() and out.sum() == 9
    rng = np.random.default_rng(0)
    random = rng.random((30, 40)) < 0.05
    assert np.array_equal(dilate(random), ndimage.binary_dilation(random, np.ones((5, 5), bool)))


def test_diagonal_pixels_are_one_blob():
    mask = np.eye(5, dtype=bool)
    assert components(mask)[0] == 2


def blob(shape, rows, cols):
    m = np.zeros(shape, bool)
    m[rows, cols] = True
    return m


def test_empty_masks_and_identical_masks_give_no_change():
    empty = np.zeros((20, 20), bool)
    assert not object_verdict(empty, empty, 0.3, 0).any()
    b = blob((20, 20), slice(3, 9), slice(4, 12))
    assert not object_verdict(b, b, 0.3, 0).any()


def test_a_vanished_blob_is_changed_and_all_change_is_everything():
    b = blob((20, 20), slice(3, 9), slice(4, 12))
    empty = np.zeros((20, 20), bool)
    assert np.array_equal(object_verdict(b, empty, 0.3, 0), b)
    assert np.array_equal(object_verdict(empty, b, 0.3, 0), b)  # appeared: the other direction
    full = np.ones((20, 20), bool)
    assert object_verdict(full, empty, 0.3, 0).all()


def test_drift_within_the_dilation_radius_is_no_change():
    b = blob((30, 30), slice(5, 9), slice(5, 9))
    shifted2 = blob((30, 30), slice(7, 11), slice(7, 11))  # 2 px: covered by the 5×5 dilation
    assert not object_verdict(b, shifted2, 0.3, 0).any()
    far = blob((30, 30), slice(20, 24), slice(20, 24))
    assert np.array_equal(object_verdict(b, far, 0.3, 0), b | far)


def test_coverage_ratio_is_strict_and_area_is_inclusive():
    source = blob((5, 20), 2, slice(0, 10))  # a 10-pixel row
    other = blob((5, 20), 2, 0)  # dilated: covers columns 0..2 of the row, 3 of 10 pixels
    # ratio 0.3 is not < 0.3: no change; the lone pixel of the other date is fully covered either way
    assert not object_verdict(source, other, 0.3, 0).any()
    assert np.array_equal(object_verdict(source, other, 0.31, 0), source)
    # the area test: changed only with at least min_instance_area pixels
    assert np.array_equal(object_verdict(source, other, 0.31, 10), source)
    assert not object_verdict(source, other, 0.31, 11).any()


def test_splitting_and_merging_are_not_changes():
    merged = blob((10, 20), slice(2, 6), slice(2, 16))
    split = merged.copy()
    split[:, 9] = False  # one blob in two
    assert not object_verdict(merged, split, 0.3, 0).any()
