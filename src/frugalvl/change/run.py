"""Pairs of files to change maps, resumable as ``frugalvl segment``.

Every pair is checked before any model loads (:func:`check_pairs`). A pair is done when its change map,
its overlay and its record ``<stem>_change_run.json`` exist and the record matches this run (the detector,
both inputs and the reading settings); such pairs are skipped, so an interrupted run resumes. Outputs made
with other settings stop the run with one line unless ``overwrite``. The record is written last.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..segment.records import check_record, make_record, record_path, write_record
from ..segment.scene import input_identity
from .detector import ChangeDetector
from .outputs import change_path, overlay_path, write_change, write_overlay
from .pairs import Pair, needs_warp, read_pair

log = logging.getLogger(__name__)


@dataclass
class ChangeSummary:
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    changed_pixels: int = 0
    valid_pixels: int = 0
    area: float = 0.0  # changed area in ``unit``
    units: set = field(default_factory=set)

    def table(self) -> str:
        share = 100 * self.changed_pixels / self.valid_pixels if self.valid_pixels else 0.0
        unit = next(iter(self.units)) if len(self.units) == 1 else ""
        area = ""
        if unit == "m²":
            area = f", {self.area / 1e4:.2f} ha"
        elif unit == "units²":
            area = f", {self.area:.1f} map units²"
        lines = [
            f"changed: {self.changed_pixels} of {self.valid_pixels} px ({share:.2f}%){area}",
            f"{len(self.done)} pairs compared, {len(self.skipped)} already done, {len(self.failed)} failed",
        ]
        return "\n".join(lines)


def check_pairs(pairs: Sequence[Pair]) -> None:
    """Every pair lines up (same size or alignable georeference); one line for the first that does not."""
    for pair in pairs:
        needs_warp(pair)


def _stem(pair: Pair) -> str:
    return f"{pair.stem}_change"


def pair_record(detector: ChangeDetector, pair: Pair, bands, stretch: str) -> dict[str, Any]:
    return make_record(
        detector,
        input={"before": input_identity(pair.before), "after": input_identity(pair.after)},
        read={"bands": bands, "stretch": stretch},
    )


def _finished(outdir: Path, pair: Pair) -> bool:
    return change_path(outdir, pair.stem).exists() and overlay_path(outdir, pair.stem).exists()


def detect_files(
    detector: ChangeDetector,
    pairs: Sequence[Pair],
    outdir: str | Path,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
    stretch: str = "percentile",
    progress: bool = True,
) -> ChangeSummary:
    """Compare every pair and write its outputs under ``outdir``."""
    from tqdm.auto import tqdm

    outdir = Path(outdir)
    bands_t = list(bands) if bands else None
    todo = []
    for pair in pairs:  # before any work: a folder made with other settings stops the run
        record = pair_record(detector, pair, bands_t, stretch)
        done = check_record(record_path(outdir, _stem(pair)), record, f"the change map of {pair.before.name}")
        todo.append(overwrite or not (done and _finished(outdir, pair)))
    summary = ChangeSummary()
    bar = tqdm(total=len(pairs), desc="change", unit="pair", disable=not progress)
    for pair, needed in zip(pairs, todo, strict=True):
        bar.set_postfix_str(pair.before.name, refresh=False)
        if not needed:
            summary.skipped.append(pair)
            bar.update(1)
            continue
        try:
            _run_pair(detector, pair, outdir, bands_t, stretch, summary)
        except UserError as exc:
            summary.failed.append((pair, str(exc)))
            bar.write(f"frugalvl: skipped: {exc}", file=sys.stderr)
        bar.update(1)
    bar.close()
    return summary


def _run_pair(detector: ChangeDetector, pair: Pair, outdir: Path, bands, stretch: str, summary: ChangeSummary) -> None:
    before, after = read_pair(pair, bands, stretch)
    result = detector.detect(before.rgb, after.rgb)
    masks = [m for m in (before.nodata_mask, after.nodata_mask) if m is not None]
    nodata = np.logical_or.reduce(masks) if masks else None
    change = result.change if nodata is None else np.where(nodata, 0, result.change).astype(np.uint8)
    record_path(outdir, _stem(pair)).unlink(missing_ok=True)  # outputs being replaced are claimed by no record
    write_overlay(outdir, pair.stem, before.rgb, after.rgb, change)
    write_change(outdir, pair.stem, before, change, nodata)
    write_record(record_path(outdir, _stem(pair)), pair_record(detector, pair, bands, stretch))  # last: done
    changed = int(change.sum())
    valid = change.size - (int(nodata.sum()) if nodata is not None else 0)
    summary.changed_pixels += changed
    summary.valid_pixels += valid
    if before.georeferenced:
        t = before.transform
        summary.area += changed * abs(t.a * t.e - t.b * t.d)
        summary.units.add("m²" if before.crs.is_projected else "units²")
    else:
        summary.units.add("px")
    summary.done.append(pair)
