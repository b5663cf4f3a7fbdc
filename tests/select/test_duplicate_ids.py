"""Round 3, class 11: duplicate ids in a CoIDO input are named on stderr (the log), not only counted."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from frugalvl.select import pipeline
from frugalvl.select.data import PrepareSettings


def test_duplicate_ids_are_named(tmp_path, select_log):
    root = tmp_path / "img"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    conv = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    ids = ["x", "y", "x", "z", "y", "x"]
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": i, "image": "a.png", "conversations": conv} for i in ids]))
    report = pipeline.prepare(data, tmp_path / "w", PrepareSettings(image_root=str(root)))
    assert report["duplicate_ids"] == 3
    line = next(m for m in select_log.text.splitlines() if "more than one sample" in m)
    assert "2 id(s)" in line and "'x', 'y'" in line and "'z'" not in line
