"""Reading the CoIDO work folder: the original records behind ``pick`` and the baselines."""

from __future__ import annotations

import hashlib
import json

import pytest

from frugalvl.errors import UserError
from frugalvl.select.workdir import input_records


def _prepared(tmp_path, records):
    source = tmp_path / "data.json"
    source.write_text(json.dumps(records))
    (tmp_path / "work" / "prepare").mkdir(parents=True)
    report = {"input": str(source), "input_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    (tmp_path / "work" / "prepare" / "report.json").write_text(json.dumps(report))
    return tmp_path / "work", source


def test_input_records_reads_the_file_prepare_saw(tmp_path):
    records = [{"id": "a", "conversations": []}, {"id": "b", "image": "x.png", "conversations": []}]
    work, _ = _prepared(tmp_path, records)
    assert input_records(work) == records
    assert input_records(str(work)) == records


@pytest.mark.parametrize("change", ["edited", "deleted"])
def test_input_records_refuse_a_changed_or_missing_input(tmp_path, change):
    work, source = _prepared(tmp_path, [{"id": "a", "conversations": []}])
    if change == "edited":
        source.write_text(json.dumps([{"id": "z", "conversations": []}]))
    else:
        source.unlink()
    with pytest.raises(UserError, match="is gone or changed since"):
        input_records(work)


def test_input_records_need_prepare_first(tmp_path):
    with pytest.raises(UserError, match="select prepare"):
        input_records(tmp_path)
