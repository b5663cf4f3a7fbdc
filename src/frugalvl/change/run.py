"""Pairs of files to change maps, resumable as ``frugalvl segment``.

Every pair is checked before any model loads (:func:`check_pairs`). A pair is done when its outputs and its
record ``<stem>_change_run.json`` exist and the record matches this run (the detector, both inputs, the
reading and output settings); such pairs are skipped, so an interrupted run resumes. Outputs made with other
settings stop the run with one line unless ``overwrite``. The record is written last.

Small pairs are compared whole (the official protocol); whole scenes (a tile size given, more than
:data:`frugalvl.raster.AUTO_SCENE_PIXELS`, VRT or JPEG2000) go tile by tile through :mod:`.scene`, which
also resumes inside a scene.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import check_outputs, claim_outputs, writing_into
from ..progress import Reporter, as_reporter
from ..raster import AUTO_SCENE_PIXELS, SCENE_ONLY_SUFFIXES, raster_shape
from ..segment.records import check_record, make_record, read_record, record_path, write_record
from ..segment.scene import input_identity
from . import outputs as out
from .detector import ChangeDetector
from .pairs import Pair, needs_warp, read_pair
from .settings import ChangeOutputSettings

log = logging.getLogger(__name__)
SCENE_TILE = 512  # the official LEVIR-CD / WHU-CD tile size


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


def tile_size(pair: Pair, settings: ChangeOutputSettings) -> int | None:
    """The tile size of a pair's scene path, or None to compare it whole."""
    if settings.tile is not None:
        return settings.tile
    if pair.remote:
        return SCENE_TILE
    shape = raster_shape(pair.before)
    large = shape is not None and shape[0] * shape[1] > AUTO_SCENE_PIXELS
    return SCENE_TILE if large or Path(pair.before).suffix.lower() in SCENE_ONLY_SUFFIXES else None


def _stem(pair: Pair) -> str:
    return f"{pair.stem}_change"


def pair_record(detector: Any, pair: Pair, bands, stretch: str, settings: ChangeOutputSettings) -> dict[str, Any]:
    return make_record(
        detector,
        input={"before": input_identity(pair.before), "after": input_identity(pair.after)},
        read={"bands": bands, "stretch": stretch},
        output={**asdict(settings), "tile": tile_size(pair, settings)},
    )


def pairs_to_run(
    detector: Any,
    pairs: Sequence[Pair],
    outdir: Path,
    bands,
    stretch: str,
    settings: ChangeOutputSettings,
    overwrite: bool,
) -> list[bool]:
    """Whether each pair needs work; a folder made with other settings stops the run before any work.
    ``detector``: anything with the detector's ``identity()``."""
    todo = []
    for pair in pairs:
        record = pair_record(detector, pair, bands, stretch, settings)
        done = check_record(record_path(outdir, _stem(pair)), record, f"the change map of {pair.names[0]}")
        finished = all(p.exists() for p in out.output_paths(outdir, pair.stem, settings.semantic))
        todo.append(overwrite or not (done and finished))
    return todo


def check_change_outputs(
    pairs: Sequence[Pair], outdir: Path, settings: ChangeOutputSettings, overwrite: bool = False
) -> None:
    """Refuse outputs that are an input, or existing files no frugalvl run recorded (unless ``overwrite``)
    (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make); each pair claims its own before writing."""
    inputs = [p for pair in pairs for p in (pair.before, pair.after) if not pair.remote]
    paths: list[Path] = []
    recorded: list[Path] = []
    for pair in pairs:
        files = [*out.output_paths(outdir, pair.stem, settings.semantic), record_path(outdir, _stem(pair))]
        paths += files
        old = read_record(record_path(outdir, _stem(pair)))
        if isinstance(old, dict) and "segmenter" in old:  # a finished change map, written before claims
            recorded += [*out.output_paths(outdir, pair.stem, True), record_path(outdir, _stem(pair))]
    check_outputs(paths, inputs, recorded, overwrite, "outdir")


def _claim(outdir: Path, pair: Pair, settings: ChangeOutputSettings) -> None:
    """Claim a pair's outputs as frugalvl's before (re)writing them: a killed run's are resumed, not refused."""
    claim_outputs([*out.output_paths(outdir, pair.stem, settings.semantic), record_path(outdir, _stem(pair))])


@contextlib.contextmanager
def writing_changes(
    pairs: Sequence[Pair], outdir: str | Path, settings: ChangeOutputSettings, overwrite: bool = False
) -> Iterator[Path]:
    """``outdir`` proven writable, locked for this run, cleared of killed runs' temporaries, and its outputs
    checked (:func:`check_change_outputs`), for the ``with`` block."""
    with writing_into(outdir, option="outdir") as folder:
        check_change_outputs(pairs, folder, settings, overwrite)
        yield folder


def detect_files(
    detector: ChangeDetector,
    pairs: Sequence[Pair],
    outdir: str | Path,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
    stretch: str = "percentile",
    progress: bool | Reporter = True,
    settings: ChangeOutputSettings = ChangeOutputSettings(),
    lock: bool = True,
) -> ChangeSummary:
    """Compare every pair and write its outputs under ``outdir``; ``progress``: a reporter, or True/False for
    the terminal bars or none (:func:`frugalvl.progress.as_reporter`). ``lock``: check, claim and lock
    ``outdir`` for the run (:func:`writing_changes`; a Ray worker's driver holds the lock instead)."""
    if not lock:
        return _detect_files(detector, pairs, Path(outdir), overwrite, bands, stretch, as_reporter(progress), settings)
    with writing_changes(pairs, outdir, settings, overwrite) as checked:
        return _detect_files(detector, pairs, checked, overwrite, bands, stretch, as_reporter(progress), settings)


def _detect_files(
    detector: ChangeDetector,
    pairs: Sequence[Pair],
    outdir: Path,
    overwrite: bool,
    bands: Sequence[int] | None,
    stretch: str,
    reporter: Reporter,
    settings: ChangeOutputSettings,
) -> ChangeSummary:
    bands_t = list(bands) if bands else None
    todo = pairs_to_run(detector, pairs, outdir, bands_t, stretch, settings, overwrite)
    summary = ChangeSummary()
    bar = reporter.start("pair", len(pairs), "change")
    for pair, needed in zip(pairs, todo, strict=True):
        bar.current(pair.names[0])
        if not needed:
            summary.skipped.append(pair)
            bar.advance()
            continue
        try:
            _run_pair(detector, pair, outdir, bands_t, stretch, settings, summary, reporter, overwrite)
        except UserError as exc:
            summary.failed.append((pair, str(exc)))
            reporter.message(f"frugalvl: skipped: {exc}")
        bar.advance()
    bar.close()
    return summary


def _run_pair(
    detector: ChangeDetector,
    pair: Pair,
    outdir: Path,
    bands,
    stretch: str,
    settings: ChangeOutputSettings,
    summary: ChangeSummary,
    reporter: Reporter,
    overwrite: bool = False,
) -> None:
    names = detector.vocabulary.names
    record = pair_record(detector, pair, bands, stretch, settings)
    tile = tile_size(pair, settings)
    if tile is None:
        before, after = read_pair(pair, bands, stretch)
        result = detector.detect(before.rgb, after.rgb)
        masks = [m for m in (before.nodata_mask, after.nodata_mask) if m is not None]
        nodata = np.logical_or.reduce(masks) if masks else None
        change = result.change if nodata is None else np.where(nodata, 0, result.change).astype(np.uint8)
        grid = out.Grid(change.shape[0], change.shape[1], before.crs, before.transform)
        _claim(outdir, pair, settings)
        record_path(outdir, _stem(pair)).unlink(missing_ok=True)  # outputs being replaced are claimed by no record
        tiles = [out.Tile(0, 0, change, result.labels_before, result.labels_after, nodata)]
        out.write_rasters(outdir, pair.stem, grid, tiles, names, settings.semantic)
        out.write_overlay(outdir, pair.stem, before.rgb, after.rgb, change)
        if settings.semantic:
            out.write_vector_outputs(outdir, pair.stem, grid, names)
        write_record(record_path(outdir, _stem(pair)), record)  # last: marks it done
    else:
        from .scene import Parts, detect_tiles, open_scene, plan_tiles

        with open_scene(pair, bands, stretch) as reader:
            windows = plan_tiles(reader.height, reader.width, tile)
            parts = Parts.prepare(outdir, pair.stem, record, fresh=overwrite)
            computed = detect_tiles(detector, reader, windows, parts, reporter)
            log.info("%s: %d of %d tiles computed", pair.names[0], computed, len(windows))
            reporter.phase("assemble", pair.names[0])
            grid = assemble_scene(outdir, pair, reader, windows, parts, names, settings, record)
    count_outputs(outdir, pair, grid, summary)


def assemble_scene(
    outdir: Path,
    pair: Pair,
    reader: Any,
    windows: Sequence[Any],
    parts: Any,
    names: Sequence[str],
    settings: ChangeOutputSettings,
    record: dict[str, Any],
) -> out.Grid:
    """A scene's outputs from its parts (every tile done), then its record, then the parts removed."""
    grid = out.Grid(reader.height, reader.width, reader.crs, reader.transform)
    _claim(outdir, pair, settings)
    record_path(outdir, _stem(pair)).unlink(missing_ok=True)  # outputs being replaced are claimed by no record
    out.write_rasters(outdir, pair.stem, grid, (parts.load(w) for w in windows), names, settings.semantic)
    first, second, _ = reader.overview()
    out.write_overlay(outdir, pair.stem, first, second, out.change_overview(outdir, pair.stem, first.shape[:2]))
    if settings.semantic:
        out.write_vector_outputs(outdir, pair.stem, grid, names)
    write_record(record_path(outdir, _stem(pair)), record)  # last: marks it done
    parts.remove()
    return grid


def count_outputs(outdir: Path, pair: Pair, grid: out.Grid, summary: ChangeSummary) -> None:
    """Add a finished pair's changed and valid pixels (and area) to ``summary``."""
    import rasterio
    from rasterio.windows import Window

    from .semantic import pixel_area

    changed = valid = 0
    with rasterio.open(out.change_path(outdir, pair.stem)) as src:
        for row in range(0, src.height, 512):
            data = src.read(1, window=Window(0, row, src.width, min(512, src.height - row)))
            changed += int((data == 1).sum())
            valid += int((data != 255).sum())
    area, unit = pixel_area(grid.transform, grid.crs)
    summary.changed_pixels += changed
    summary.valid_pixels += valid
    summary.area += changed * area
    summary.units.add(unit)
    summary.done.append(pair)
