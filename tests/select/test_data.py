"""LLaVA JSON reading, ids, source derivation, image checks and the missing-image policy."""

from __future__ import annotations

import json
import shutil

import pytest

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.select import PrepareSettings, pipeline
from frugalvl.select.data import derive_source, flatten_conversation, read_llava_json
from frugalvl.testing.easyvqa import easyvqa_records


def test_source_derivation_follows_spec():
    assert derive_source({"dataset": "vqav2", "image": "coco/train2017/1.jpg"}) == "vqav2"
    assert derive_source({"image": "coco/train2017/000000033471.jpg"}) == "coco"
    assert derive_source({"image": "ocr_vqa/images/1.jpg"}) == "ocr_vqa"
    assert derive_source({"image": "vg/VG_100K_2/1.jpg"}) == "vg"
    assert derive_source({"conversations": []}) == "text"
    assert derive_source({"image": "1.jpg"}) == "unknown"


def test_flatten_removes_image_tag():
    conv = [
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "Colour?"},
        {"from": "gpt", "value": "Grey."},
    ]
    assert flatten_conversation(conv) == "USER: What is it? ASSISTANT: A cat. USER: Colour? ASSISTANT: Grey."


def test_read_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_llava_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": 1}')
    with pytest.raises(UserError, match="not a list"):
        read_llava_json(bad)
    bad.write_text('[{"id": 1}]')
    with pytest.raises(UserError, match="conversations"):
        read_llava_json(bad)


def _copy_dataset(tmp_path, n_images=6, n_text=2):
    records, root = easyvqa_records(n_images, n_text)
    new_root = tmp_path / "images"
    for r in records:
        if "image" in r:
            (new_root / r["image"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / r["image"], new_root / r["image"])
    for r in records:  # no dataset field: sources come from the paths
        r.pop("dataset", None)
    return records, new_root


def test_prepare_indexes_and_reports_missing_and_corrupt(tmp_path):
    records, root = _copy_dataset(tmp_path)
    images = [r for r in records if "image" in r]
    (root / images[0]["image"]).unlink()  # missing
    (root / images[-1]["image"]).write_bytes(b"not a png")  # corrupt (shared by two samples)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    report = pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(root)))
    samples = pipeline.load_samples(tmp_path / "work")
    assert [s["unique_idx"] for s in samples] == list(range(len(records)))
    assert [s["id"] for s in samples] == [r["id"] for r in records]
    assert [s["conversations"] for s in samples] == [r["conversations"] for r in records]
    bad_image = {images[0]["image"]: "missing", images[-1]["image"]: "corrupt"}
    for s, r in zip(samples, records):
        expected = "text" if "image" not in r else bad_image.get(r["image"], "ok")
        assert s["status"] == expected
        assert s["dataset"] == ("text" if "image" not in r else "train")
    assert report["missing_image_policy"] == "exclude"
    assert set(report["missing"]) == {r["id"] for r in images if r["image"] == images[0]["image"]}
    assert set(report["corrupt"]) == {r["id"] for r in images if r["image"] == images[-1]["image"]}
    assert report["sources_derived"] == len(records)
    # the error policy stops, naming the report
    with pytest.raises(UserError, match="missing or corrupt image"):
        pipeline.prepare(path, tmp_path / "work2", PrepareSettings(image_root=str(root), missing_images="error"))


def test_wrong_image_root_is_a_user_error(tmp_path):
    records, root = _copy_dataset(tmp_path, 3, 1)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    with pytest.raises(UserError, match="none of the"):
        pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(tmp_path)))
    with pytest.raises(UserError, match="does not exist"):
        pipeline.prepare(tmp_path / "missing.json", tmp_path / "work", PrepareSettings(image_root=str(root)))


def test_prepare_skips_when_done_and_refuses_other_settings(tmp_path, select_log):
    records, root = _copy_dataset(tmp_path, 3, 1)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(root)))
    pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(root)))
    assert "skipping" in select_log.text
    with pytest.raises(UserError, match=r"\bforce\b") as err:
        pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(root), verify_images=False))
    assert "--force" in render_error(err.value)
    pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(root), verify_images=False), force=True)


def test_invalid_samples_form_no_source_of_their_own(tmp_path):
    """A sample that cannot be used is counted under "invalid", not under its path's first folder ('..', or the
    folder of the valid samples, 'train' here)."""
    records, root = _copy_dataset(tmp_path)
    images = [r for r in records if "image" in r]
    bad = [
        {"id": "escape", "image": "../outside.png", "conversations": images[0]["conversations"]},
        {"id": "no-turns", "image": images[0]["image"], "conversations": []},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records + bad))
    report = pipeline.prepare(path, tmp_path / "work", PrepareSettings(image_root=str(root)))
    samples = {s["id"]: s for s in pipeline.load_samples(tmp_path / "work")}
    assert samples["escape"]["dataset"] == samples["no-turns"]["dataset"] == "invalid"
    assert ".." not in report["per_source"] and report["per_source"]["invalid"] == 2
    assert report["per_source"]["train"] == len(images)  # the valid image samples only
    assert set(report["invalid"]) == {"escape", "no-turns"}


def test_feature_workers_default_to_what_the_machine_has(monkeypatch):
    import os

    from frugalvl.select import settings as select_settings
    from frugalvl.select.settings import FeatureSettings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert FeatureSettings().workers == 2  # two cores: two processes, no DataLoader warning
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert FeatureSettings().workers == 4  # the official four where the machine has them
    assert select_settings.default_workers(4) == 4
