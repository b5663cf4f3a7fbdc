"""Quotas, the ranking direction, batched scoring and the pick outputs (docs/methods/coido.md#selection)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.select import PickSettings, PrepareSettings, pipeline
from frugalvl.select.ranking import group_quotas, score_all, select, target_count
from frugalvl.testing.easyvqa import write_easyvqa_llava


@pytest.mark.parametrize(
    "sizes,k,expected",
    [
        ({"a": 50, "b": 30, "c": 15, "d": 5}, 20, {"a": 10, "b": 6, "c": 3, "d": 1}),
        ({"a": 100, "b": 67, "c": 33}, 40, {"a": 21, "b": 13, "c": 6}),  # remainder +1 to the largest
        ({"a": 7, "b": 2, "c": 1}, 3, {"a": 1, "b": 1, "c": 1}),  # max(1, .) overshoots: -1 from the largest
        ({"a": 3, "b": 3}, 6, {"a": 3, "b": 3}),
    ],
)
def test_quotas_hand_computed(sizes, k, expected):
    assert group_quotas(sizes, k) == expected


def test_quotas_sum_to_target_and_are_proportional():
    rng = np.random.default_rng(1)
    for _ in range(50):
        sizes = {f"g{i}": int(n) for i, n in enumerate(rng.integers(20, 500, size=rng.integers(2, 8)))}
        n = sum(sizes.values())
        k = int(rng.integers(len(sizes), n // 2))  # the largest group has room for the remainder
        q = group_quotas(sizes, k)
        assert sum(q.values()) == k
        largest = max(sizes, key=lambda g: (sizes[g], -int(g[1:])))
        for g in sizes:
            assert 0 <= q[g] <= sizes[g]
            if g != largest:
                assert q[g] == max(1, k * sizes[g] // n)


def test_target_count():
    assert target_count(665298, PickSettings()) == 133059
    assert target_count(150, PickSettings(ratio=0.2)) == 30
    assert target_count(100, PickSettings(ratio=0.29)) == 29
    assert target_count(100, PickSettings(count=7)) == 7


def test_lowest_r_is_kept_per_group_and_globally():
    r = np.array([0.5, -2.0, 0.1, 3.0, -1.0, 0.0, 2.0, -3.0])
    src = ["a", "a", "a", "a", "b", "b", "b", "b"]
    eligible = np.ones(8, bool)
    eligible[7] = False  # the lowest of all, but not eligible
    chosen, quotas = select(r, src, eligible, 4, "quota")
    assert quotas == {"a": 3, "b": 1}  # 4·4/7 -> 2, 4·3/7 -> 1, remainder 1 to the largest (a)
    assert chosen.tolist() == [1, 4, 2, 0]  # a: -2.0, 0.1, 0.5 ; b: -1.0 ; ordered by r
    chosen, _ = select(r, src, eligible, 3, "global")
    assert chosen.tolist() == [1, 4, 5]


def test_score_all_is_batched_eval_mode_raw():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    x = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float32)
    r = score_all(net.train(), x, batch_size=8)
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(r, ref, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranking")
    data, root = write_easyvqa_llava(folder, n_images=20, n_text=5)
    work = folder / "work"
    pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
    return data, work


def test_pick_writes_unchanged_records_ids_and_report(prepared, tmp_path):
    data, work = prepared
    inputs = json.loads(data.read_text())
    n = len(inputs)
    r = np.random.default_rng(3).permutation(n).astype(np.float32)  # distinct scores
    (work / "score").mkdir(exist_ok=True)
    np.save(work / "score" / "r.npy", r)
    out = tmp_path / "out.json"
    report = pipeline.pick(work, out, PickSettings(ratio=0.2))
    k = n // 5
    picked = json.loads(out.read_text())
    ids = np.load(work / "pick" / "selected_ids.npy")
    assert len(picked) == len(ids) == report["n_selected"] == k
    for i, rec in zip(ids, picked):  # records unchanged, byte for byte
        assert json.dumps(rec) == json.dumps(inputs[i])
    assert (work / "pick" / "selected_ids.txt").read_text().split() == [inputs[i]["id"] for i in ids]
    # ranking direction: within each source, every kept r is below every dropped r
    src = np.array([x.get("dataset", "text") for x in inputs])
    for g in set(src):
        kept = [i for i in ids if src[i] == g]
        dropped = [i for i in range(n) if src[i] == g and i not in set(ids)]
        assert kept and (not dropped or r[kept].max() < r[dropped].min())
    assert sum(report["quotas"].values()) == k
    assert report["selected_per_source"] == {
        g: int((src[ids] == g).sum()) for g in sorted(set(src), key=lambda g: (len(g), g))
    }
    assert report["selected_per_source"] == report["quotas"]
    assert (work / "pick" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # options: global ranking, exclude text, added fields
    pipeline.pick(work, out, PickSettings(count=5, mode="global", exclude_text=True, add_fields=True))
    picked = json.loads(out.read_text())
    allowed = [i for i in np.argsort(r, kind="stable") if "image" in inputs[i]][:5]
    assert [p["unique_idx"] for p in picked] == allowed
    assert all(p["dataset"] == inputs[p["unique_idx"]]["dataset"] for p in picked)


def test_pick_refuses_impossible_counts(prepared, tmp_path):
    data, work = prepared
    np.save(work / "score" / "r.npy", np.zeros(len(json.loads(data.read_text())), np.float32))
    with pytest.raises(UserError, match="cannot pick"):
        pipeline.pick(work, tmp_path / "o.json", PickSettings(count=10_000))
