"""What makes a selection reproducible, and checking it later (docs/coido_contract.md).

Every selection folder (``WORK/pick``, ``WORK/baseline-NAME``, each budget of a multi-budget pick)
holds ``provenance.json``: the input and its SHA-256, the input format, the settings, the versions of
the libraries that shaped the result, the SHA-256 of the selected id list (one id per line, in the
written order) and of each file written. :func:`verify` recomputes every digest and names what changed,
and what was added to a Parquet or WebDataset selection folder (its readers take every file in it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_json
from .formats import input_digest

PROVENANCE = "provenance.json"
LIBRARIES = ("frugalvl", "numpy", "torch", "transformers", "open_clip_torch", "scikit-learn", "scipy", "pyarrow")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("".join(i + "\n" for i in ids).encode()).hexdigest()


def _file_digests(paths: list[Path], folder: Path) -> dict[str, str]:
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            key = str(f.relative_to(folder)) if f.is_relative_to(folder) else str(f.resolve())
            out[key] = input_digest(f)
    return out


def write(folder: Path, work: Path, ids: list[str], settings: dict[str, Any], outputs: list[Path]) -> dict[str, Any]:
    """Record the provenance of the selection in ``folder``."""
    report = json.loads((work / "prepare" / "report.json").read_text())
    record = {
        "input": report["input"],
        "input_sha256": report["input_sha256"],
        "format": report.get("format", "llava"),
        "work": str(work.resolve()),
        "settings": settings,
        "versions": versions(),
        "n_selected": len(ids),
        "selected_ids_sha256": ids_digest(ids),
        "files_sha256": _file_digests([*outputs, folder / "selected_ids.txt"], folder),
    }
    write_json(folder / PROVENANCE, record)
    return record


def verify(folder: str | Path) -> list[str]:
    """What no longer matches the recorded provenance (empty: the selection is intact)."""
    folder = Path(folder)
    path = folder / PROVENANCE
    if not path.is_file():
        raise UserError(f"{folder} has no {PROVENANCE}: give a selection folder written by pick or a baseline")
    record = json.loads(path.read_text())
    problems = []
    source = Path(record["input"])
    if not source.exists():
        problems.append(f"the input {source} is gone")
    elif input_digest(source) != record["input_sha256"]:
        problems.append(f"the input {source} changed")
    ids_file = folder / "selected_ids.txt"
    ids = ids_file.read_text().splitlines() if ids_file.is_file() else []
    if ids_digest(ids) != record["selected_ids_sha256"]:
        problems.append(f"the selected id list {ids_file} changed")
    for name, digest in record["files_sha256"].items():
        f = Path(name) if Path(name).is_absolute() else folder / name
        if not f.is_file():
            problems.append(f"{f} is gone")
        elif input_digest(f) != digest:
            problems.append(f"{f} changed")
    problems += [f"{f} was added" for f in _added(record)]
    return problems


# Formats whose selection is a folder read whole (every file with this suffix, at any depth).
READ_WHOLE = {"parquet": ".parquet", "webdataset": ".tar"}


def _added(record: dict[str, Any]) -> list[Path]:
    """Data files in a Parquet or WebDataset selection folder that the record does not name: a reader
    of the folder would take them in."""
    suffix = READ_WHOLE.get(record.get("format", "llava"))
    recorded = [Path(n) for n in record["files_sha256"] if Path(n).is_absolute() and Path(n).suffix == suffix]
    if suffix is None or not recorded:
        return []
    top = Path(os.path.commonpath(recorded)) if len(recorded) > 1 else recorded[0].parent
    top = top if top.is_dir() else top.parent
    known = set(recorded)
    return sorted(f for f in top.rglob(f"*{suffix}") if f.is_file() and f.resolve() not in known and f not in known)
