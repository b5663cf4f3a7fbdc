"""Every input format through prepare → pick: the same selection as the LLaVA JSON run, written in the
input's format (re-read as that format); multi-image samples; bad inputs as one line or one invalid
sample; image bytes read from memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.select import ClusterSettings, FeatureSettings, PrepareSettings, formats, pipeline
from frugalvl.select.formats.images import open_image
from frugalvl.testing import formats as tf
from frugalvl.testing.easyvqa import easyvqa_records

NAMES = ("llava", "jsonl", "sharegpt", "parquet", "hf-disk", "webdataset")


@pytest.fixture(scope="module")
def records():
    return easyvqa_records(40, 6)  # 86 samples: 80 image, 6 text-only


def write_input(name: str, records, root: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if name == "llava":
        path = folder / "data.json"
        path.write_text(json.dumps(records))
        return path
    if name == "jsonl":
        return tf.write_jsonl(records, folder / "data.jsonl")
    if name == "sharegpt":
        return tf.write_sharegpt(records, folder / "data.json")
    if name == "parquet":
        return tf.write_parquet(records, root, folder / "pq", files=2, group=16)
    if name == "hf-disk":
        return tf.write_hf_disk(records, root, folder / "hf")
    return tf.write_webdataset(records, root, folder / "wds", per_shard=30)


def _stand_in_scorer(work):
    from frugalvl.select.scorer import Scorer, save_scorer

    clip, names, _ = pipeline.load_features(work)
    torch.manual_seed(0)
    save_scorer(work / "train" / "scorer.pt", Scorer(clip.shape[1], names))


def _select(data: Path, root: Path, work: Path, out: Path, clip_file) -> list[str]:
    pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
    fs = FeatureSettings(clip=str(clip_file), workers=0, shard_size=64, batch_size=64, progress=False)
    pipeline.features(work, fs)
    pipeline.cluster(work, ClusterSettings(n_clusters=3, knn=8))
    _stand_in_scorer(work)
    pipeline.score(work)
    pipeline.pick(work, out)
    return (work / "pick" / "selected_ids.txt").read_text().split()


def test_detect_names_each_format(records, tmp_path):
    recs, root = records
    for name in NAMES:
        assert formats.detect(write_input(name, recs[:12], root, tmp_path / name)) == name


def test_every_format_selects_the_same_ids_and_writes_its_own_format(records, select_clip_file, tmp_path):
    recs, root = records
    reference = None
    for name in NAMES:
        data = write_input(name, recs, root, tmp_path / name / "in")
        out = tmp_path / name / ("sel" + (data.suffix if data.is_file() else ""))
        ids = _select(data, root, tmp_path / name / "work", out, select_clip_file)
        reference = reference or ids
        assert ids == reference, name
        report = json.loads((tmp_path / name / "work" / "prepare" / "report.json").read_text())
        assert report["format"] == name and report["per_status"] == {"ok": 80, "text": 6}
        # the selection re-reads as the input's format, holding exactly the selected samples
        assert formats.detect(out) == name
        back = [it.record for it in formats.iter_items(out, name)]
        expected = ids if name in formats.JSON_FORMATS else [r["id"] for r in recs if r["id"] in set(ids)]
        assert [str(r.get("id")) for r in back] == expected  # JSON: lowest r first; tables/shards: input order
        if name in ("llava", "jsonl"):
            by_id = {r["id"]: r for r in recs}
            assert [r for r in back] == [by_id[i] for i in ids]  # records unchanged
        _verify_catches_changes(tmp_path / name / "work" / "pick", out, name)


def _verify_catches_changes(folder: Path, out: Path, name: str) -> None:
    """`select verify` on a selection in each format: intact, then a changed file, then (Parquet and
    WebDataset folders, read whole) a file added beside the selected ones."""
    import shutil

    from frugalvl.select import provenance

    assert provenance.verify(folder) == [], name
    files = [out] if out.is_file() else sorted(f for f in out.rglob("*") if f.is_file())
    original = files[0].read_bytes()
    files[0].write_bytes(original + b"\0")
    assert provenance.verify(folder) == [f"{files[0].resolve()} changed"], name
    files[0].write_bytes(original)
    if name in ("parquet", "webdataset"):
        extra = files[0].with_name("zz-extra" + files[0].suffix)
        shutil.copyfile(files[0], extra)
        assert provenance.verify(folder) == [f"{extra.resolve()} was added"], name
        extra.unlink()
    assert provenance.verify(folder) == [], name


def test_embedded_images_decode_from_memory_to_the_same_pixels(records, tmp_path):
    recs, root = records
    for name in ("parquet", "hf-disk", "webdataset"):
        data = write_input(name, recs[:10], root, tmp_path / name)
        items = list(formats.iter_items(data, name))
        for item, record in zip(items, recs[:10]):
            if "image" not in record:
                assert item.images == []
                continue
            assert item.embedded and formats.is_reference(item.images[0])
            with open_image(item.images[0]) as a, open_image(str(root / record["image"])) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b))


def _two_image_record(recs):
    images = list(dict.fromkeys(r["image"] for r in recs if "image" in r))[:2]  # two different images
    return {
        "id": "multi",
        "image": images,
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nDo these show the same shape?"},
            {"from": "gpt", "value": "no"},
        ],
    }


@pytest.mark.parametrize("name", ["llava", "parquet", "webdataset"])
def test_multi_image_sample_is_kept_with_every_image(records, select_clip_file, select_clip, tmp_path, name):
    recs, root = records
    data = write_input(name, [*recs[:6], _two_image_record(recs)], root, tmp_path / "in")
    work = tmp_path / "work"
    pipeline.prepare(data, work, PrepareSettings(image_root=str(root)))
    sample = pipeline.load_samples(work)[-1]
    assert sample["status"] == "ok" and len(sample["image_paths"]) == 2
    pipeline.features(work, FeatureSettings(clip=str(select_clip_file), workers=0, progress=False))
    clip = np.load(work / "features" / "clip.npy")
    d = clip.shape[1] // 2
    # the image half is the normalised mean of the two images' own embeddings
    images = _two_image_record(recs)["image"]
    a, b = (next(k for k, r in enumerate(recs[:6]) if r.get("image") == i) for i in images)
    mean = clip[a, :d] + clip[b, :d]
    np.testing.assert_allclose(clip[-1, :d], mean / np.linalg.norm(mean), atol=1e-5)


def test_multi_image_sample_feeds_every_image_to_the_training(records, tmp_path):
    from frugalvl.models.llava import load_llava
    from frugalvl.select import batching as B
    from frugalvl.select.workdir import Subset
    from frugalvl.testing.llava import build_tiny_llava

    recs, root = records
    two = _two_image_record(recs)
    sample = {
        "unique_idx": 0,
        "id": "multi",
        "status": "ok",
        "image_path": str(root / two["image"][0]),
        "image_paths": [str(root / i) for i in two["image"]],
        "conversations": two["conversations"],
    }
    llava = load_llava(str(build_tiny_llava(tmp_path / "tiny-llava")))
    subset = Subset([sample], np.zeros((1, 4), np.float32), np.zeros(1, np.int64), 4, [])
    data = B.MicroBatches(
        subset, [[0]], llava.tokenizer, llava.image_processor, 16, "<image>", llava.pad_token_id, 256, "pad"
    )
    batch = data[0]
    assert batch.pixel_values.shape[0] == 2
    assert int((batch.input_ids == llava.image_token_id).sum()) == 32


def test_webdataset_images_keep_their_numbered_order(records, tmp_path):
    recs, root = records
    images = list(dict.fromkeys(r["image"] for r in recs if "image" in r))[:12]  # KEY.0.png ... KEY.11.png
    record = {"id": "many", "image": images, "conversations": _two_image_record(recs)["conversations"]}
    folder = tf.write_webdataset([record], root, tmp_path / "wds")
    (item,) = formats.iter_items(folder, "webdataset")
    assert item.record["image"] == [f"000000.{k}.png" for k in range(12)]
    for ref, name in zip(item.images, images, strict=True):
        with open_image(ref) as a, open_image(str(root / name)) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_parquet_without_conversations_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), tmp_path / "in" / "x.parquet")
    with pytest.raises(UserError, match="no 'conversations' \\(or 'messages'\\) column") as err:
        pipeline.prepare(tmp_path / "in", tmp_path / "work")
    assert "\n" not in str(err.value)


def test_bad_samples_are_invalid_or_corrupt_and_the_rest_prepared(records, tmp_path):
    import tarfile

    recs, root = records
    recs = [r for r in recs if "image" in r][:4]
    # a tar with an image and no JSON
    wds = tf.write_webdataset(recs, root, tmp_path / "wds", per_shard=10)
    with tarfile.open(wds / "shard-00000.tar", "a") as tar:
        tf._add(tar, "orphan.png", (root / recs[0]["image"]).read_bytes())
    pipeline.prepare(wds, tmp_path / "w1")
    report = json.loads((tmp_path / "w1" / "prepare" / "report.json").read_text())
    assert report["invalid"] == {"orphan": "an image without a JSON record"}
    assert report["per_status"] == {"invalid": 1, "ok": 4}
    # a row whose image bytes are not an image
    table_dir = tf.write_parquet(recs, root, tmp_path / "pq", files=1)
    import pyarrow.parquet as pq

    table = pq.read_table(table_dir / "part-00000.parquet").to_pylist()
    table[2]["image"] = [{"bytes": b"not an image", "path": "x.png"}]
    import pyarrow as pa

    schema = pq.read_schema(table_dir / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(table, schema), table_dir / "part-00000.parquet")
    pipeline.prepare(table_dir, tmp_path / "w2")
    report = json.loads((tmp_path / "w2" / "prepare" / "report.json").read_text())
    assert report["corrupt"] == [recs[2]["id"]] and report["per_status"] == {"corrupt": 1, "ok": 3}
    # a ShareGPT record with an unknown role
    shared = [tf.to_sharegpt(r) for r in recs]
    shared[1]["messages"][1]["role"] = "narrator"
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(shared))
    pipeline.prepare(path, tmp_path / "w3", PrepareSettings(image_root=str(root)))
    report = json.loads((tmp_path / "w3" / "prepare" / "report.json").read_text())
    assert report["format"] == "sharegpt" and list(report["invalid"]) == [recs[1]["id"]]
    assert "'narrator'" in report["invalid"][recs[1]["id"]] and report["per_status"] == {"invalid": 1, "ok": 3}


def test_sharegpt_content_parts_and_system_turns():
    from frugalvl.select.formats.conversation import normalise

    record = {
        "id": "x",
        "images": ["a.png"],
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]},
            {"role": "assistant", "content": "a cat"},
        ],
    }
    out, problem = normalise(record)
    assert problem is None and out["image"] == "a.png"
    assert out["conversations"] == [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "a cat"}]
