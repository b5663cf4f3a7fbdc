import torch

from frugalvl.windows import Window, WindowAccumulator, plan_windows


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
