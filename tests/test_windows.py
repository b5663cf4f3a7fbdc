import pytest
import torch
import torch.nn.functional as F

from frugalvl.windows import Window, WindowAccumulator, needed_windows, pixels_read_by_resize, plan_windows


def test_grid_official_counts():
    assert len(plan_windows(448, 448, 224, 112)) == 9
    assert len(plan_windows(336, 448, 224, 112)) == 6  # 448×336 image (W×H)


def test_last_window_shifted_to_border_non_square():
    wins = plan_windows(300, 500, 224, 112)
    ys = sorted({(w.y0, w.y1) for w in wins})
    xs = sorted({(w.x0, w.x1) for w in wins})
    # H=300: grids = (300-224+111)//112+1 = 2 -> [0,224), [76,300)
    assert ys == [(0, 224), (76, 300)]
    # W=500: grids = (500-224+111)//112+1 = 4 -> 0,112,224, then 336 shifted back to 276
    assert xs == [(0, 224), (112, 336), (224, 448), (276, 500)]
    assert wins[0] == Window(0, 224, 0, 224)  # row by row


def test_side_shorter_than_crop_is_taken_whole():
    wins = plan_windows(100, 300, 224, 112)
    assert {(w.y0, w.y1) for w in wins} == {(0, 100)}
    assert [(w.x0, w.x1) for w in wins] == [(0, 224), (76, 300)]


def test_accumulator_averages_overlaps():
    acc = WindowAccumulator(1, 2, 3)
    acc.add(Window(0, 2, 0, 2), torch.full((1, 2, 2), 2.0))
    acc.add(Window(0, 2, 1, 3), torch.full((1, 2, 2), 4.0))
    expected = torch.tensor([[[2.0, 3.0, 4.0], [2.0, 3.0, 4.0]]])
    assert torch.equal(acc.result(), expected)


def test_accumulator_rejects_uncovered_pixels():
    acc = WindowAccumulator(1, 2, 2)
    acc.add(Window(0, 1, 0, 2), torch.ones(1, 1, 2))
    try:
        acc.result()
    except RuntimeError:
        return
    raise AssertionError("uncovered pixels must raise")


def test_core_spans_cut_in_the_middle_of_each_overlap():
    from frugalvl.windows import core_spans, spans

    s = spans(500, 224, 112)
    assert s == [(0, 224), (112, 336), (224, 448), (276, 500)]
    # cuts: (112+224)//2=168, (224+336)//2=280, (276+448)//2=362
    assert core_spans(s, 500) == [(0, 168), (168, 280), (280, 362), (362, 500)]
    assert core_spans(spans(100, 224, 112), 100) == [(0, 100)]


# ---------------------------------------------------------------------------------------------
# Window sinks: channels of a window arrive in groups (SegEarth-OV3's prompt chunks)
# ---------------------------------------------------------------------------------------------

CPU = torch.device("cpu")


def test_overlapping_counts_pixels_seen_twice():
    from frugalvl.windows import overlapping

    assert not overlapping([Window(0, 4, 0, 4)], 4, 4)
    assert not overlapping(plan_windows(4, 6, 2, 2), 4, 6)  # a 2×3 grid of 2×2 tiles
    assert overlapping(plan_windows(4, 6, 3, 2), 4, 6)  # windows shifted back to the border overlap
    assert overlapping([Window(0, 2, 0, 2), Window(0, 2, 1, 3)], 2, 3)


def test_channel_average_hand_case_with_channels_in_groups():
    from frugalvl.windows import ChannelAverage

    acc = ChannelAverage(2, 1, 3, CPU)
    left, right = Window(0, 1, 0, 2), Window(0, 1, 1, 3)
    acc.begin_window(left)
    acc.add(left, torch.tensor([1]), torch.tensor([[[2.0, 4.0]]]))  # channel 1 first, then channel 0
    acc.add(left, torch.tensor([0]), torch.tensor([[[1.0, 1.0]]]))
    acc.begin_window(right)
    acc.add(right, torch.tensor([0, 1]), torch.tensor([[[3.0, 5.0]], [[6.0, 8.0]]]))
    expected = torch.tensor([[[1.0, 2.0, 5.0]], [[2.0, 5.0, 8.0]]])  # middle column: mean of two windows
    assert torch.equal(acc.result(), expected)


def test_channel_average_rejects_uncovered_pixels():
    from frugalvl.windows import ChannelAverage

    acc = ChannelAverage(1, 2, 2, CPU)
    acc.begin_window(Window(0, 1, 0, 2))
    with pytest.raises(RuntimeError, match="covered by no view"):
        acc.result()


def _max_per_group(values: torch.Tensor, groups) -> torch.Tensor:
    """The group max written out plainly, independent of the sinks and of ``merge_synonyms``."""
    groups = list(groups)
    return torch.stack([values[[q for q, g in enumerate(groups) if g == c]].amax(0) for c in range(max(groups) + 1)])


def _feed(sink, windows, values: torch.Tensor, chunk: int) -> None:
    """Each window's channels in chunks of ``chunk``, in window order, as a segmenter hands them over."""
    for w, v in zip(windows, values):
        sink.begin_window(w)
        for start in range(0, v.shape[0], chunk):
            channels = torch.arange(start, min(start + chunk, v.shape[0]))
            sink.add(w, channels, v[channels])


def _window_values(windows, n_channels: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n_channels, w.height, w.width, generator=g) for w in windows]


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_group_max_equals_the_group_max_of_the_average_without_overlap(chunk):
    from frugalvl.windows import ChannelAverage, GroupMax

    groups = torch.tensor([0, 0, 1, 2, 2])
    windows = plan_windows(6, 8, (3, 4), (3, 4))  # 2×2 tiles, no pixel seen twice
    values = _window_values(windows, 5, seed=1)
    full, grouped = ChannelAverage(5, 6, 8, CPU), GroupMax(groups, 6, 8, CPU)
    _feed(full, windows, values, chunk)
    _feed(grouped, windows, values, chunk)
    assert torch.equal(grouped.result(), _max_per_group(full.result(), groups.tolist()))


@pytest.mark.parametrize(("crop", "stride", "chunk"), [(4, 2, 2), (5, 3, 1), (3, 1, 5)])
def test_band_average_equals_the_full_average_then_merge_bit_for_bit(crop, stride, chunk):
    from frugalvl.windows import BandAverage, ChannelAverage

    groups = torch.tensor([0, 1, 1, 2, 0])
    windows = plan_windows(9, 7, crop, stride)
    values = _window_values(windows, 5, seed=crop * 10 + stride)
    full = ChannelAverage(5, 9, 7, CPU)
    band = BandAverage(groups, 9, 7, CPU, _max_per_group)
    rows = []
    begin = band.begin_window

    def spy(w):
        begin(w)
        rows.append(band.total.shape[1])

    band.begin_window = spy
    _feed(full, windows, values, chunk)
    _feed(band, windows, values, chunk)
    assert torch.equal(band.result(), _max_per_group(full.result(), groups.tolist()))
    assert max(rows) == crop  # the per-channel buffer never spans more than one window's height


def test_band_average_refuses_windows_out_of_row_order():
    from frugalvl.windows import BandAverage

    band = BandAverage(torch.tensor([0]), 6, 2, CPU, _max_per_group)
    band.begin_window(Window(0, 3, 0, 2))
    band.begin_window(Window(3, 6, 0, 2))  # rows 0-2 are final now, and dropped from the band
    with pytest.raises(RuntimeError, match="non-decreasing tops"):
        band.begin_window(Window(0, 3, 0, 2))


def test_accumulator_fills_uncovered_pixels_when_asked():
    acc = WindowAccumulator(2, 2, 3)
    acc.add(Window(0, 2, 0, 2), torch.full((2, 2, 2), 6.0))
    acc.add(Window(0, 1, 1, 2), torch.full((2, 1, 1), 3.0))
    out = acc.result(fill=0.0)
    assert torch.equal(out[0], torch.tensor([[6.0, 4.5, 0.0], [6.0, 6.0, 0.0]]))
    assert torch.equal(out[0], out[1])


def test_pixels_read_by_a_bilinear_resize_hand_case():
    # 1×4 -> 1×8 (align_corners=False): output x reads source (x + 0.5) / 2 - 0.5, clamped at 0;
    # x = 3 -> 1.25: sources 1 and 2; x = 0 -> -0.25: source 0 only.
    wanted = torch.zeros(1, 8, dtype=torch.bool)
    wanted[0, 3] = True
    assert pixels_read_by_resize(wanted, (1, 4)).tolist() == [[False, True, True, False]]
    wanted = torch.zeros(1, 8, dtype=torch.bool)
    wanted[0, 0] = True
    assert pixels_read_by_resize(wanted, (1, 4)).tolist() == [[True, False, False, False]]
    # 8 -> 4 (downsampling, no antialias): x = 1 -> 2.5 reads sources 2 and 3
    wanted = torch.zeros(1, 4, dtype=torch.bool)
    wanted[0, 1] = True
    assert pixels_read_by_resize(wanted, (1, 8)).nonzero()[:, 1].tolist() == [2, 3]
    # the same size: the identity
    same = torch.rand(5, 6) > 0.5
    assert torch.equal(pixels_read_by_resize(same, (5, 6)), same)


def test_pixels_read_cover_every_input_that_changes_a_wanted_output():
    # perturbing a source pixel outside the support never changes a wanted output; inside, it does
    torch.manual_seed(0)
    wanted = torch.zeros(37, 53, dtype=torch.bool)
    wanted[5:12, 30:41] = True
    read = pixels_read_by_resize(wanted, (23, 29))
    base = torch.rand(1, 1, 23, 29)
    out = F.interpolate(base, size=(37, 53), mode="bilinear", align_corners=False)[0, 0]
    for y in range(23):
        for x in range(29):
            bumped = base.clone()
            bumped[0, 0, y, x] += 1.0
            diff = F.interpolate(bumped, size=(37, 53), mode="bilinear", align_corners=False)[0, 0] != out
            assert bool(diff[wanted].any()) == bool(read[y, x]), (y, x)


def test_needed_windows_keep_every_window_of_a_needed_pixel():
    wins = plan_windows(448, 448, 224, 112)
    needed = torch.zeros(448, 448, dtype=torch.bool)
    needed[:100, :100] = True  # only the first window (the next ones start at 112)
    assert needed_windows(wins, needed) == [Window(0, 224, 0, 224)]
    needed[200, 300] = True  # rows 112-336 and 0-224, columns 224-448 and 112-336 (plan order)
    assert needed_windows(wins, needed) == [
        Window(0, 224, 0, 224),
        Window(0, 224, 112, 336),
        Window(0, 224, 224, 448),
        Window(112, 336, 112, 336),
        Window(112, 336, 224, 448),
    ]
    assert needed_windows(wins, torch.zeros(448, 448, dtype=torch.bool)) == []
