"""A selection folder's record, and several budgets picked from one score table.

Every selection (``pick``, each budget of a multi-budget pick) ends with :func:`finish`: its
provenance (:mod:`.provenance`) and, in ``scores.parquet``, the ``reason`` column of this selection
(:mod:`.why`). ``pipeline.pick_budgets`` picks several ratios or counts from the same scores, each into
its own folder ``OUT/ratio-0.1`` (or ``OUT/count-500``) holding the selection in the input's format
(``selection.json`` / ``selection.jsonl``, or a ``selection`` folder), its ids, report and provenance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import provenance, scores_table, why
from .formats import JSON_FORMATS
from .settings import PickSettings


def finish(
    work: Path, folder: Path, out: Path, samples: list[dict[str, Any]], chosen: np.ndarray, settings: dict[str, Any]
) -> None:
    """Provenance of the selection in ``folder``, and its reasons as the table's ``reason`` column."""
    ids = [samples[i]["id"] for i in chosen]
    provenance.write(folder, work, ids, settings, [out])
    _, reasons = why.folder_reasons(work, folder)
    scores_table.refresh(work, reasons=reasons)


def label(settings: PickSettings) -> str:
    """The folder name of one budget."""
    return f"count-{settings.count}" if settings.count is not None else f"ratio-{settings.ratio:g}"


def selection_name(work: Path) -> str:
    """``selection`` plus the input's suffix for a JSON input; a folder name otherwise."""
    report = json.loads((work / "prepare" / "report.json").read_text())
    source = Path(report["input"])
    return "selection" + (source.suffix if report.get("format", "llava") in JSON_FORMATS else "")


def budgets_from(
    settings: PickSettings, ratios: Sequence[float] = (), counts: Sequence[int] = ()
) -> list[PickSettings]:
    """One settings per ratio and per count, the rest as ``settings``."""
    base = asdict(settings)
    out = [PickSettings(**{**base, "ratio": r, "count": None}) for r in ratios]
    out += [PickSettings(**{**base, "count": c}) for c in counts]
    return out
