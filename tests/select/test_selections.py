"""One score table for any budget, a reason per sample, provenance and the cost ledger."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.select import (
    ClusterSettings,
    FeatureSettings,
    PickSettings,
    PrepareSettings,
    ledger,
    pipeline,
    provenance,
    scores_table,
)
from frugalvl.select.why import explain
from frugalvl.testing.easyvqa import easyvqa_records


def _stand_in_scorer(work):
    from frugalvl.select.scorer import Scorer, save_scorer

    clip, names, _ = pipeline.load_features(work)
    torch.manual_seed(0)
    save_scorer(work / "train" / "scorer.pt", Scorer(clip.shape[1], names))


@pytest.fixture(scope="module")
def work(tmp_path_factory, select_clip_file):
    """A scored work folder with one missing, one corrupt, one invalid image sample and a planted duplicate."""
    tmp = tmp_path_factory.mktemp("sel")
    records, src_root = easyvqa_records(30, 4)
    root = tmp / "images"
    images = sorted({r["image"] for r in records if "image" in r})
    for i in images:
        (root / i).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / i, root / i)
    with_image = [r for r in records if "image" in r]
    (root / images[0]).unlink()  # missing
    (root / images[1]).write_bytes(b"broken")  # corrupt
    with_image[6]["conversations"] = [{"from": "human", "value": "<image>\nno answer"}]  # invalid
    records.append({**with_image[10], "id": "duplicate"})  # the same image and text as another sample
    data = tmp / "data.json"
    data.write_text(json.dumps(records))
    w = tmp / "work"
    pipeline.prepare(data, w, PrepareSettings(image_root=str(root)))
    pipeline.features(w, FeatureSettings(clip=str(select_clip_file), workers=0, progress=False))
    pipeline.cluster(w, ClusterSettings(n_clusters=3, knn=8))
    _stand_in_scorer(w)
    pipeline.score(w)
    return w, records, with_image


def test_score_table_rows_and_columns(work, tmp_path):
    w, records, _ = work
    pipeline.pick(w, tmp_path / "out.json", PickSettings(ratio=0.3))
    table = pq.read_table(w / scores_table.TABLE).to_pydict()
    assert table["id"] == [r["id"] for r in records]
    assert {"id", "source", "status", "usable", "cluster", "r", "rank", "reason"} <= set(table)
    subset = set(np.load(w / "subset" / "indices.npy").tolist())
    assert [c is not None for c in table["cluster"]] == [i in subset for i in range(len(records))]
    r = np.load(w / "score" / "r.npy")
    usable = np.array(table["usable"])
    ranked = [i for i in range(len(r)) if usable[i]]
    assert table["rank"][min(ranked, key=lambda i: (r[i], i))] == 1
    assert sorted(table["rank"][i] for i in ranked) == list(range(1, len(ranked) + 1))
    assert all(table["rank"][i] is None for i in range(len(r)) if not usable[i])


def test_several_budgets_equal_separate_picks(work, tmp_path):
    w, _, _ = work
    ratios = (0.05, 0.1, 0.2)
    budgets = [PickSettings(ratio=x) for x in ratios] + [PickSettings(count=7)]
    reports = pipeline.pick_budgets(w, tmp_path / "many", budgets)
    assert [r["k"] for r in reports] == [
        int(x * len(json.loads((w / "prepare/samples.json").read_text())) + 1e-9) for x in ratios
    ] + [7]
    for b, label in zip(budgets, ("ratio-0.05", "ratio-0.1", "ratio-0.2", "count-7")):
        folder = tmp_path / "many" / label
        pipeline.pick(w, tmp_path / f"{label}.json", b)
        assert (folder / "selected_ids.txt").read_text() == (w / "pick" / "selected_ids.txt").read_text()
        assert (folder / "selection.json").read_text() == (tmp_path / f"{label}.json").read_text()
        assert provenance.verify(folder) == []


def test_why_gives_each_reason(work, tmp_path):
    w, records, with_image = work
    image_ok = np.load(w / "features" / "image_ok.npy")
    samples = pipeline.load_samples(w)
    undecoded = next(i for i, s in enumerate(samples) if s["status"] == "ok" and s["id"] != "duplicate")
    saved = image_ok.copy()
    image_ok[undecoded] = False
    np.save(w / "features" / "image_ok.npy", image_ok)
    try:
        pipeline.pick(w, tmp_path / "out.json", PickSettings(ratio=0.3, exclude_text=True))
        text_id = next(r["id"] for r in records if "image" not in r)
        assert "image is missing" in explain(w, with_image[0]["id"])[0]
        assert "does not decode" in explain(w, with_image[2]["id"])[0]  # images[1] is shared by samples 2 and 3
        assert "invalid sample (no human question or no gpt answer)" in explain(w, with_image[6]["id"])[0]
        assert "did not decode in the features stage" in explain(w, samples[undecoded]["id"])[0]
        assert "text-only samples are excluded" in explain(w, text_id)[0]
        chosen = (w / "pick" / "selected_ids.txt").read_text().split()
        report = json.loads((w / "pick" / "report.json").read_text())
        line = explain(w, chosen[0])[0]
        assert ": in: r = " in line and "within its quota" in line
        src = samples[[s["id"] for s in samples].index(chosen[0])]["dataset"]
        assert f"its quota {report['quotas'][src]}" in line
        out_id = next(
            s["id"] for i, s in enumerate(samples) if s["id"] not in chosen and s["status"] == "ok" and i != undecoded
        )
        assert "out: r = " in explain(w, out_id)[0] and "beyond its quota" in explain(w, out_id)[0]
        reasons = pq.read_table(w / scores_table.TABLE, columns=["reason"]).column(0).to_pylist()
        assert reasons[undecoded] == "out: its image did not decode in the features stage"
        with pytest.raises(UserError, match="no sample with id"):
            explain(w, "no-such-id")
    finally:
        np.save(w / "features" / "image_ok.npy", saved)


def test_why_gives_the_overall_rank_in_global_mode(work, tmp_path):
    w, _, _ = work
    report = pipeline.pick(w, tmp_path / "g.json", PickSettings(count=5, mode="global"))
    chosen = (w / "pick" / "selected_ids.txt").read_text().split()
    r = np.load(w / "score" / "r.npy")
    samples = pipeline.load_samples(w)
    usable = pipeline.usable_mask(w, samples)
    ids = [s["id"] for s in samples]
    cut = max(r[ids.index(i)] for i in chosen)  # the 5 lowest r overall: the cut is the largest kept
    line = explain(w, chosen[0])[0]
    assert report["mode"] == "global" and len(chosen) == 5
    assert ": in: r = " in line and "overall, within K = 5" in line and f"(cut at r = {cut:.6g})" in line
    out_id = next(s["id"] for i, s in enumerate(samples) if usable[i] and s["id"] not in chosen)
    out_line = explain(w, out_id)[0]
    assert "out: r = " in out_line and "overall, beyond K = 5" in out_line and r[ids.index(out_id)] >= cut


def test_why_names_the_semdedup_duplicate(work, tmp_path):
    from frugalvl.select.baselines import run_baseline

    w, _, with_image = work
    run_baseline("semdedup", w, tmp_path / "sd.json", PickSettings(ratio=0.5, mode="global"))
    lines = explain(w, "duplicate", "semdedup")[0] + explain(w, with_image[10]["id"], "semdedup")[0]
    assert "near-duplicate" in lines and "out: score" in lines


def test_baseline_columns_without_a_second_model_pass(work, tmp_path, monkeypatch):
    from frugalvl.select import baselines
    from frugalvl.select.baselines import reference

    w, records, _ = work
    calls = []

    def fake_stats(inputs, reference_model, batch_size=4, device="cpu", **kw):
        calls.append(1)
        ce = np.where(inputs.eligible, np.arange(len(inputs.samples)) % 7 / 7.0, np.nan)
        return {"ce": ce, "ppl": np.exp(ce), "el2n": ce * 2}

    monkeypatch.setattr(reference, "reference_stats", fake_stats)
    first = baselines.run_baseline("el2n", w, tmp_path / "a.json", PickSettings(ratio=0.2))
    second = baselines.run_baseline("el2n", w, tmp_path / "b.json", PickSettings(ratio=0.1))
    assert len(calls) == 1 and second.get("score_from") == scores_table.TABLE
    assert first.get("score_from") is None
    (w / "baseline-el2n").rename(tmp_path / "moved")
    third = baselines.run_baseline("el2n", w, tmp_path / "c.json", PickSettings(ratio=0.2))
    assert len(calls) == 1 and (tmp_path / "c.json").read_text() == (tmp_path / "a.json").read_text()
    assert third["n_selected"] == first["n_selected"]
    baselines.run_baseline("clip-score", w, tmp_path / "d.json", PickSettings(ratio=0.2))
    table = pq.read_table(w / scores_table.TABLE).to_pydict()
    assert {"baseline:el2n", "baseline:clip-score"} <= set(table)
    el2n = np.array([np.nan if v is None else v for v in table["baseline:el2n"]])
    eligible = np.array(table["usable"])
    np.testing.assert_allclose(el2n[eligible], (np.arange(len(records)) % 7 / 7.0 * 2)[eligible])
    # other settings: the model pass runs again
    baselines.run_baseline(
        "el2n", w, tmp_path / "e.json", PickSettings(ratio=0.2), baselines.make_settings("el2n", {"batch_size": 2})
    )
    assert len(calls) == 2


def test_verify_catches_a_changed_file(work, tmp_path, select_cli, capsys):
    w, _, _ = work
    out = tmp_path / "out.json"
    pipeline.pick(w, out, PickSettings(ratio=0.2))
    assert provenance.verify(w / "pick") == []
    record = json.loads((w / "pick" / "provenance.json").read_text())
    assert record["versions"]["numpy"] == np.__version__ and len(record["selected_ids_sha256"]) == 64
    assert select_cli("verify", w / "pick") == 0
    out.write_text(out.read_text().replace("evqa", "EVQA", 1))
    assert any(str(out) in p and "changed" in p for p in provenance.verify(w / "pick"))
    assert select_cli("verify", w / "pick") == 1
    assert "changed:" in capsys.readouterr().out
    ids = w / "pick" / "selected_ids.txt"
    ids.write_text(ids.read_text() + "extra\n")
    assert any("selected id list" in p for p in provenance.verify(w / "pick"))


def test_ledger_records_each_stage_and_the_fraction(work, tmp_path):
    w, _, _ = work
    stages = ledger.read(w)
    assert {"prepare", "features", "cluster", "score"} <= set(stages)
    for entry in stages.values():
        assert entry["wall_s"] >= 0 and entry["cpu_s"] >= 0 and entry["device"] == "cpu" and entry["peak_rss_mib"] > 0
    before = stages["features"]
    pipeline.features(
        w,
        FeatureSettings(
            clip=json.loads((w / "features/meta.json").read_text())["settings"]["clip"], workers=0, progress=False
        ),
    )
    assert ledger.read(w)["features"] == before  # skipped: the earlier cost is kept
    report = pipeline.pick(w, tmp_path / "o.json", PickSettings(ratio=0.2, full_finetune_hours=2.0))
    cost = report["cost"]
    assert cost["fraction_of_full_finetune"] == pytest.approx(cost["total_wall_s"] / 7200.0)
    assert "% of a full fine-tuning" in ledger.table(cost)


def test_cli_budgets_why_and_one_budget_for_baselines(work, tmp_path, select_cli, capsys):
    w, _, _ = work
    assert select_cli("pick", "-w", w, "--ratio", "0.1,0.2", "--count", "5", "-o", tmp_path / "m") == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["count-5", "ratio-0.1", "ratio-0.2"]
    assert len((tmp_path / "m" / "count-5" / "selected_ids.txt").read_text().split()) == 5
    first = (tmp_path / "m" / "count-5" / "selected_ids.txt").read_text().split()[0]
    capsys.readouterr()
    assert select_cli("why", first, "-w", w, "--selection", tmp_path / "m" / "count-5") == 0
    assert f"{first} (position" in capsys.readouterr().out
    assert select_cli("baseline", "random", "-w", w, "--ratio", "0.1,0.2", "-o", tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert "--ratio takes one value here" in err and len(err.strip().splitlines()) == 1
