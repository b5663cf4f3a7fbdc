"""Fine-tuning from a selection in every format pick writes (docs/methods/coido_finetune.md#the-subset-in-any-format):
the same records in the same order give the same micro-batches, loss curve and weights as the LLaVA JSON;
images inside Parquet/Arrow/tar are decoded from memory, every image of a multi-image sample is fed, the
image bytes are not kept while reading, and bad subsets are one line."""

from __future__ import annotations

import json
import tarfile
import tracemalloc
from pathlib import Path

import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.select import formats
from frugalvl.testing import formats as tf
from frugalvl.testing.easyvqa import easyvqa_records
from frugalvl.testing.llava import build_tiny_llava
from frugalvl.train.finetune import data as D
from frugalvl.train.finetune import loop as L
from frugalvl.train.finetune import settings as S
from tests.train.test_finetune import small as small_recipe

NAMES = ("jsonl", "sharegpt", "parquet", "hf-disk", "webdataset")


def _two_image_record(recs, k: int) -> dict:
    images = list(dict.fromkeys(r["image"] for r in recs if "image" in r))[k : k + 2]  # two different images
    return {
        "id": f"multi-{k}",
        "image": images,
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nIs the shape the same in both images?"},
            {"from": "gpt", "value": "no"},
        ],
    }


@pytest.fixture(scope="module")
def subsets(tmp_path_factory):
    """The same 26 records (20 single-image, 2 two-image, 4 text-only) as a LLaVA JSON and in every other
    format, images as bytes inside the Parquet/Arrow/tar ones; and a tiny LLaVA knowing their words."""
    folder = tmp_path_factory.mktemp("ft-formats")
    recs, root = easyvqa_records(10, 4)
    recs = [*recs[:12], _two_image_record(recs, 0), *recs[12:], _two_image_record(recs, 2)]
    written = {"llava": folder / "sel.json"}
    written["llava"].write_text(json.dumps(recs))
    written["jsonl"] = tf.write_jsonl(recs, folder / "sel.jsonl")
    written["sharegpt"] = tf.write_sharegpt(recs, folder / "sg.json")
    written["parquet"] = tf.write_parquet(recs, root, folder / "pq", files=2, group=5)
    written["hf-disk"] = tf.write_hf_disk(recs, root, folder / "hf")
    written["webdataset"] = tf.write_webdataset(recs, root, folder / "wds", per_shard=10)
    words = [t["value"].replace("<image>", "") for r in recs for t in r["conversations"]]
    return written, root, build_tiny_llava(folder / "tiny-llava", extra_text=words), recs


def small(mllm, root, **kw) -> S.FinetuneSettings:
    """test_finetune's small recipe on this folder, without intermediate checkpoints."""
    return small_recipe((None, root, mllm), **{"save_steps": 0, **kw})


def _batches(samples, llava):
    from frugalvl.select.batching import micro_batches

    plan = [list(range(i, min(i + 4, len(samples)))) for i in range(0, len(samples), 4)]
    return list(micro_batches(D.as_subset(samples), plan, llava, 2048, "pad"))


def test_every_format_gives_the_json_samples_and_micro_batches(subsets):
    from frugalvl.models.llava import load_llava

    written, root, mllm, recs = subsets
    llava = load_llava(str(mllm))
    reference = D.read_records(written["llava"], str(root))
    assert [s["id"] for s in reference] == [str(r["id"]) for r in recs]
    assert [len(s.get("image_paths", [])) for s in reference].count(2) == 2
    want = _batches(reference, llava)
    for name in NAMES:
        samples = D.read_records(written[name], str(root))
        assert [(s["id"], s["status"], s["conversations"]) for s in samples] == [
            (s["id"], s["status"], s["conversations"]) for s in reference
        ], name
        if name in ("parquet", "hf-disk", "webdataset"):  # images named by references into the subset
            paths = [p for s in samples for p in s.get("image_paths", [s["image_path"]]) if p]
            assert paths and all(formats.is_reference(p) for p in paths), name
        for a, b in zip(_batches(samples, llava), want, strict=True):
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels), name
            assert (a.pixel_values is None) == (b.pixel_values is None), name
            if b.pixel_values is not None:  # decoded from memory to the very same pixels, every image
                assert torch.equal(a.pixel_values, b.pixel_values), name
    two = next(k for k, s in enumerate(reference) if s["id"] == "multi-0")
    batch = _batches(D.read_records(written["webdataset"], str(root))[two : two + 1], llava)[0]
    assert batch.pixel_values.shape[0] == 2 and int((batch.input_ids == llava.image_token_id).sum()) == 32


@pytest.fixture(scope="module")
def json_run(subsets, tmp_path_factory):
    written, root, mllm, _ = subsets
    out = tmp_path_factory.mktemp("ft-json") / "out"
    L.finetune(written["llava"], out, small(mllm, root))
    return out


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("name", ["parquet", "webdataset"])
def test_finetune_from_parquet_and_webdataset_equals_the_json_run(subsets, json_run, tmp_path, name):
    written, root, mllm, recs = subsets
    out = tmp_path / "out"
    L.finetune(written[name], out, small(mllm, None))  # images inside the subset: no image root needed
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 7  # 22 image samples -> 6 batches of 4 (last one of 2), 4 text-only -> 1
    assert history == json.loads((json_run / "history.json").read_text())
    a, b = _weights(out), _weights(json_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((out / "finetune.json").read_text())
    assert meta["n_samples"] == len(recs) and meta["key"]["data"] == formats.input_digest(written[name])
    L.finetune(written[name], out, small(mllm, None))  # finished: recognised, nothing redone
    assert json.loads((out / "history.json").read_text()) == history


# ------------------------------------------------------------------------------------- bad subsets


def _one_line(call, *words):
    with pytest.raises(UserError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_bad_subsets_are_one_line(subsets, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    written, root, _, recs = subsets
    image_recs = [r for r in recs if isinstance(r.get("image"), str)][:4]
    _one_line(lambda: D.read_records(tmp_path / "gone", None), "gone does not exist", "select pick")
    (tmp_path / "empty").mkdir()
    _one_line(lambda: D.read_records(tmp_path / "empty", None), "without Parquet files, tar shards")
    # a Parquet without a conversations column
    (tmp_path / "noconv").mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), tmp_path / "noconv" / "x.parquet")
    _one_line(lambda: D.read_records(tmp_path / "noconv", None), "no 'conversations' (or 'messages') column")
    # a tar with an image and no JSON
    wds = tf.write_webdataset(image_recs, root, tmp_path / "wds", per_shard=10)
    with tarfile.open(wds / "shard-00000.tar", "a") as tar:
        tf._add(tar, "orphan.png", (root / image_recs[0]["image"]).read_bytes())
    _one_line(lambda: D.read_records(wds, None), "1 samples cannot be used", "orphan", "without a JSON record")
    # a row whose image bytes are not an image, and one without bytes
    table_dir = tf.write_parquet(image_recs, root, tmp_path / "pq", files=1)
    rows = pq.read_table(table_dir / "part-00000.parquet").to_pylist()
    schema = pq.read_schema(table_dir / "part-00000.parquet")
    rows[2]["image"] = [{"bytes": b"not an image", "path": "x.png"}]
    pq.write_table(pa.Table.from_pylist(rows, schema), table_dir / "part-00000.parquet")
    _one_line(
        lambda: D.read_records(table_dir, None), "1 images are empty or not images", f"sample {image_recs[2]['id']}"
    )
    rows[1]["image"] = [{"bytes": None, "path": "y.png"}]
    pq.write_table(pa.Table.from_pylist(rows, schema), table_dir / "part-00000.parquet")
    _one_line(
        lambda: D.read_records(table_dir, None), "2 images are empty or not images", f"sample {image_recs[1]['id']}"
    )
    # a ShareGPT record with an unknown role
    shared = [tf.to_sharegpt(r) for r in image_recs]
    shared[1]["messages"][1]["role"] = "narrator"
    (tmp_path / "sg.json").write_text(json.dumps(shared))
    _one_line(lambda: D.read_records(tmp_path / "sg.json", str(root)), "'narrator'", f"sample {image_recs[1]['id']}")
    # an output folder inside a folder subset (an input)
    with pytest.raises(UserError) as err:
        L.finetune(written["parquet"], written["parquet"] / "ft", small(subsets[2], None))
    assert "\n" not in str(err.value) and not (written["parquet"] / "ft").exists()
    # a Parquet without rows
    (tmp_path / "none").mkdir()
    pq.write_table(pa.Table.from_pylist([], schema), tmp_path / "none" / "x.parquet")
    _one_line(lambda: D.read_records(tmp_path / "none", None), "holds no samples")


def test_cli_refuses_a_bad_subset_with_one_line_and_exit_2(subsets, tmp_path, capsys):
    import logging

    from frugalvl.cli import main

    written, root, mllm, recs = subsets
    wds = tf.write_webdataset(recs[:3], root, tmp_path / "wds", per_shard=10)
    with tarfile.open(wds / "shard-00000.tar", "a") as tar:
        tf._add(tar, "orphan.png", b"\x89PNG")
    logger = logging.getLogger("frugalvl")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        assert main(["select", "finetune", str(wds), "-o", str(tmp_path / "o"), "--mllm", str(mllm)]) == 2
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "orphan" in err[0] and "without a JSON record" in err[0], err
    assert not (tmp_path / "o" / "adapter").exists()


# ------------------------------------------------------------------------------------- memory

N = 20_000


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_reading_a_large_subset_keeps_no_image_bytes(tmp_path, monkeypatch, fmt):
    """20,000 rows carrying ~60 MiB of images: read with at most a small part of that in flight, and
    none of it kept (the samples hold references)."""
    import pyarrow as pa

    images = tf.random_pngs(16)
    total = sum(len(images[i % 16]) for i in range(N))
    path = tf.write_generated(tmp_path / fmt, fmt, N, images, row_group=500)
    tracemalloc.start()
    arrow_peak = 0
    real = formats.iter_items

    def watched(*args):
        nonlocal arrow_peak
        for k, item in enumerate(real(*args)):
            if k % 500 == 0:
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
            yield item

    monkeypatch.setattr(formats, "iter_items", watched)
    samples = D.read_records(path, None)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(samples) == N and all(formats.is_reference(s["image_path"]) for s in samples)
    assert not any(isinstance(v, bytes) for s in samples for v in s.values())
    in_flight = peak - kept + arrow_peak
    print(f"{fmt}: images {total / 2**20:.0f} MiB, in flight {in_flight / 2**20:.1f} MiB, kept {kept / 2**20:.0f} MiB")
    assert total > 50 * 2**20 and in_flight < 0.15 * total and kept < 0.5 * total
