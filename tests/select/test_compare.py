"""``frugalvl select compare`` and the baseline command line (docs/methods/coido_baselines.md#comparing-selections)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugalvl.select.compare import compare, format_table, jaccard
from frugalvl.testing.coido_scale import write_synthetic_work

SOURCES = ["coco"] * 10 + ["gqa"] * 6 + ["vg"] * 4


@pytest.fixture()
def work(tmp_path):
    rng = np.random.default_rng(0)
    w = write_synthetic_work(tmp_path / "work", rng.normal(size=(len(SOURCES), 8)), SOURCES, seed=2)
    for name, ids in (("pick", [0, 1, 2, 10, 16]), ("baseline-random", [0, 1, 3, 11, 17, 18])):
        (w / name).mkdir()
        np.save(w / name / "selected_ids.npy", np.array(ids, np.int64))
    return w


def test_jaccard_hand_cases():
    assert jaccard(np.array([0, 1, 2]), np.array([1, 2, 3])) == pytest.approx(2 / 4)
    assert jaccard(np.array([], np.int64), np.array([], np.int64)) == 1.0
    assert jaccard(np.array([1]), np.array([2])) == 0.0


def test_compare_overlap_composition_scores_and_plot(work):
    result = compare(work, ["pick", "random"])
    sel = result["selections"]
    assert result["jaccard"]["pick"]["random"] == pytest.approx(2 / 9)  # {0, 1} of 9 distinct
    assert result["jaccard"]["random"]["random"] == 1.0
    assert sel["pick"]["per_source"] == {"vg": 1, "gqa": 1, "coco": 3}
    assert sel["random"]["per_source"] == {"vg": 2, "gqa": 1, "coco": 3}
    scaled = json.loads((work / "features" / "scores.json").read_text())["scaled"]["clipscore"]
    assert sel["pick"]["scores"]["clipscore"]["mean"] == pytest.approx(np.mean([scaled[i] for i in [0, 1, 2, 10, 16]]))
    assert sel["pick"]["per_cluster"] is None  # no subset/ in this work folder
    png = work / "compare" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert json.loads((work / "compare" / "compare.json").read_text())["jaccard"] == result["jaccard"]
    table = format_table(result)
    assert "Jaccard overlap" in table and "0.222" in table and "per source" in table


def test_compare_per_cluster_uses_the_clusters_of_s(work):
    (work / "subset").mkdir()
    np.save(work / "subset" / "indices.npy", np.arange(20, dtype=np.int64))
    np.save(work / "subset" / "clusters.npy", np.array([0] * 10 + [1] * 10, np.int64))
    result = compare(work, ["pick", "random"])
    counts = result["selections"]["pick"]["per_cluster"]
    assert sum(counts.values()) == 5 and set(counts) <= {"0", "1"}


def test_compare_refuses_one_selection_and_unknown_names(work):
    from frugalvl.errors import UserError

    with pytest.raises(UserError, match="two or more"):
        compare(work, ["pick"])
    with pytest.raises(UserError, match="no selection"):
        compare(work, ["pick", "nonesuch"])


def test_matplotlib_backend_is_not_switched_globally(work):
    import matplotlib

    before = matplotlib.get_backend()
    compare(work, ["pick", "random"])
    assert matplotlib.get_backend() == before


def test_cli_baseline_then_compare(work, tmp_path, capsys):
    from frugalvl.cli import main

    out = tmp_path / "rand.json"
    assert main(["select", "baseline", "random", "-w", str(work), "--count", "5", "--seed", "1", "-o", str(out)]) == 0
    assert len(json.loads(out.read_text())) == 5
    assert (
        main(
            [
                "select",
                "baseline",
                "semdedup",
                "-w",
                str(work),
                "--ratio",
                "0.5",
                "--clusters",
                "2",
                "-o",
                str(tmp_path / "sd.json"),
            ]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "sd.json").read_text())) == 10
    capsys.readouterr()
    assert main(["select", "compare", "-w", str(work), "random", "semdedup", "pick"]) == 0
    text = capsys.readouterr().out
    assert "Jaccard overlap" in text and "compare.png" in text


def test_compare_figure_is_readable():
    """Labels on the dark diagonal of the Jaccard matrix are white, and every histogram says which line is which."""
    from frugalvl.select.compare import cell_text_colour, figure

    assert cell_text_colour(1.0) == "white" and cell_text_colour(0.2) == "black"
    sel = {"a": np.array([0, 1, 2]), "b": np.array([2, 3])}
    result = {
        "selections": {"a": {"per_source": {"x": 2, "y": 1}}, "b": {"per_source": {"y": 2}}},
        "jaccard": {"a": {"a": 1.0, "b": 0.25}, "b": {"a": 0.25, "b": 1.0}},
    }
    scores = {"clipscore": np.linspace(0, 1, 4), "ce": np.array([0.1, 0.5, np.nan, 0.9])}
    fig = figure(sel, scores, np.array(["x", "x", "y", "y"]), result)
    matrix = fig.axes[1]
    colours = {t.get_text(): t.get_color() for t in matrix.texts}
    assert colours == {"1.00": "white", "0.25": "black"}
    for ax in fig.axes[2:]:
        legend = ax.get_legend()
        assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["a", "b"]
