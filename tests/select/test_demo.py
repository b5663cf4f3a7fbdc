"""The five-minute CoIDO tour: ``frugalvl select demo FOLDER`` writes the data and the tiny models, runs
every stage and writes the report; the builders are public (frugalvl.testing re-exports them)."""

from __future__ import annotations

import json

import numpy as np


def test_the_testing_builders_are_the_public_ones():
    import frugalvl.testing.clip as tclip
    import frugalvl.testing.easyvqa as tevqa
    import frugalvl.testing.llava as tllava
    from frugalvl.models import tiny
    from frugalvl.select import demo

    assert tclip.write_tiny_openai_clip is tiny.write_tiny_openai_clip
    assert tllava.build_tiny_llava is demo.build_tiny_llava
    assert tevqa.write_easyvqa_llava is demo.write_easyvqa_llava


def test_select_demo_runs_every_stage_on_a_small_real_set(select_cli, tmp_path, capsys, monkeypatch, select_log):
    from frugalvl.select import demo

    monkeypatch.setattr(demo, "N_IMAGES", 30)  # 60 image samples + 10 text-only: 70, a 14-sample subset
    assert select_cli("demo", tmp_path / "tour") == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "tour" / "data" / "easyvqa_llava.json").read_text())
    picked = json.loads((tmp_path / "tour" / "selected.json").read_text())
    assert len(data) == 70 and len(picked) == len(data) // 5 and all(p in data for p in picked)
    assert (tmp_path / "tour" / "models" / "tiny-clip.pt").is_file()
    assert (tmp_path / "tour" / "models" / "tiny-llava" / "config.json").is_file()
    assert (tmp_path / "tour" / "work" / "train" / "scorer.pt").is_file()
    report = (tmp_path / "tour" / "work" / "report.html").read_text()
    assert "<html" in report.lower()
    assert "report:" in out and "frugalvl select run" in out
    assert "falling back to k-means" not in select_log.text  # K fits the subset: spectral clustering ran
    r = np.load(tmp_path / "tour" / "work" / "score" / "r.npy")
    assert len(r) == len(data)
