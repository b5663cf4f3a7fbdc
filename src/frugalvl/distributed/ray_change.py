"""``frugalvl change --engine ray``: pairs and scene tiles spread over a Ray actor pool
(docs/methods/segearth_ov3_change.md#whole-scenes).

The work becomes rows for an actor pool (one change detector per actor, SAM 3 loaded once):

* **pair rows**: a pair compared whole by :func:`frugalvl.change.run.detect_files` in the worker (its
  outputs, record and resume rules);
* **tile rows**: one tile of a scene, compared by :func:`frugalvl.change.scene.detect_tile` and saved as the
  scene's part file, the same bytes the single-process path writes.

The driver never loads the model: one Ray task returns the detector's identity, from which the driver checks
finished outputs and plans each scene (tile grid, part folder, pending tiles) exactly as the local path. When
every tile of a scene has its part, the driver assembles the scene's outputs
(:func:`frugalvl.change.run.assemble_scene`). Workers and driver must share the output folder.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..change.pairs import Pair
from ..change.run import (
    ChangeSummary,
    assemble_scene,
    check_pairs,
    count_outputs,
    detect_files,
    pair_record,
    pairs_to_run,
    tile_size,
    writing_changes,
)
from ..change.scene import Parts, SceneReader, detect_tile, open_scene, plan_tiles
from ..change.settings import ChangeOutputSettings
from ..errors import UserError
from ..windows import Window
from .cluster import map_with_pool, plan_pool, ray_session, remote_call

log = logging.getLogger(__name__)


@dataclass
class _Options:
    outdir: str
    overwrite: bool
    bands: list[int] | None
    stretch: str
    settings: ChangeOutputSettings


@dataclass
class _Row:
    index: int  # the pair's
    pair: Pair
    window: Window | None = None  # a tile row
    parts: str | None = None


@dataclass
class _Result:
    index: int
    tile: bool
    summary: ChangeSummary | None = None
    error: str | None = None


class _Identity:
    """Stands in for the detector where only its identity is needed (records)."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self._identity = identity

    def identity(self) -> dict[str, Any]:
        return self._identity


def identity_of(make_detector: Callable[[], Any]) -> tuple[dict[str, Any], list[str]]:
    detector = make_detector()
    return detector.identity(), list(detector.vocabulary.names)


class ChangeWorker:
    """A Ray Data actor: one change detector, many rows (``batch_size=1``)."""

    def __init__(self, make_detector: Callable[[], Any], options: _Options) -> None:
        self.detector = make_detector()
        self.options = options
        self.readers: dict[str, SceneReader] = {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out = []
        for blob in batch["row"]:
            row: _Row = pickle.loads(blob)
            try:
                result = self._tile(row) if row.window is not None else self._pair(row)
            except UserError as exc:
                result = _Result(row.index, row.window is not None, error=str(exc))
            except Exception as exc:  # a bad pair must not stop the others: reported by the driver
                log.exception("comparing %s failed", row.pair.names[0])
                result = _Result(
                    row.index, row.window is not None, error=f"{row.pair.names[0]}: {type(exc).__name__}: {exc}"
                )
            out.append(pickle.dumps(result))
        return {"result": out}

    def _pair(self, row: _Row) -> _Result:
        o = self.options
        summary = detect_files(
            self.detector, [row.pair], o.outdir, o.overwrite, o.bands, o.stretch, False, o.settings, lock=False
        )  # the driver checked, claimed and locked the folder
        return _Result(row.index, False, summary=summary)

    def _tile(self, row: _Row) -> _Result:
        assert row.window is not None and row.parts is not None
        parts = Parts(Path(row.parts))
        if not parts.done(row.window):  # a retried row whose part was written before its worker died
            key = str(row.pair.before)
            if key not in self.readers:
                for old in list(self.readers):
                    self.readers.pop(old).close()
                self.readers[key] = SceneReader(row.pair, self.options.bands, self.options.stretch)
            parts.save(row.window, detect_tile(self.detector, self.readers[key], row.window))
        return _Result(row.index, True)


def detect_files_ray(
    make_detector: Callable[[], Any],
    pairs: Sequence[Pair],
    outdir: str | Path,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
    stretch: str = "percentile",
    settings: ChangeOutputSettings = ChangeOutputSettings(),
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    restarts: int = 3,
) -> ChangeSummary:
    """:func:`frugalvl.change.run.detect_files` on Ray: the same outputs and resume rules; small pairs one
    row each, scenes one row per tile. ``make_detector``: a picklable callable (called once per actor)."""
    pool_options = (ray_address, workers, gpus_per_worker, device, restarts)
    check_pairs(pairs)
    with writing_changes(pairs, outdir, settings, overwrite) as checked:  # one writer: this driver
        return _detect_locked(
            make_detector, pairs, checked, overwrite, bands, stretch, settings, progress, pool_options
        )


def _detect_locked(make_detector, pairs, outdir: Path, overwrite, bands, stretch, settings, progress, pool_options):
    from tqdm.auto import tqdm

    ray_address, workers, gpus_per_worker, device, restarts = pool_options
    bands_l = list(bands) if bands else None
    options = _Options(str(outdir), overwrite, bands_l, stretch, settings)
    summary = ChangeSummary()
    with ray_session(ray_address) as ray:
        pool = plan_pool(ray, workers, gpus_per_worker, device, restarts)
        identity, names = remote_call(ray, identity_of, make_detector, num_gpus=pool.gpus_per_worker)
        stand_in = _Identity(identity)
        todo = pairs_to_run(stand_in, pairs, outdir, bands_l, stretch, settings, overwrite)
        rows: list[_Row] = []
        scenes: dict[int, tuple[list[Window], Parts, int]] = {}  # pair index -> windows, parts, pending tiles
        for i, (pair, needed) in enumerate(zip(pairs, todo, strict=True)):
            if not needed:
                summary.skipped.append(pair)
                continue
            tile = tile_size(pair, settings)
            if tile is None:
                rows.append(_Row(i, pair))
                continue
            with open_scene(pair, bands_l, stretch) as reader:
                windows = plan_tiles(reader.height, reader.width, tile)
            record = pair_record(stand_in, pair, bands_l, stretch, settings)
            parts = Parts.prepare(outdir, pair.stem, record, fresh=overwrite)
            missing = [w for w in windows if not parts.done(w)]
            scenes[i] = (windows, parts, len(missing))
            rows += [_Row(i, pair, w, str(parts.folder)) for w in missing]

        def assemble(i: int) -> None:
            pair = pairs[i]
            windows, parts, _ = scenes[i]
            record = pair_record(stand_in, pair, bands_l, stretch, settings)
            with open_scene(pair, bands_l, stretch) as reader:
                grid = assemble_scene(outdir, pair, reader, windows, parts, names, settings, record)
            count_outputs(outdir, pair, grid, summary)

        for i in [i for i, (_, _, n) in scenes.items() if n == 0]:
            assemble(i)
        failed_scenes: set[int] = set()
        items = [{"row": pickle.dumps(r)} for r in rows]
        bar = tqdm(total=len(rows), desc="change", unit="row", disable=not progress)
        for out in map_with_pool(ray, items, ChangeWorker, (make_detector, options), pool):
            result: _Result = pickle.loads(out["result"])
            bar.update(1)
            pair = pairs[result.index]
            if result.error is not None:
                if not result.tile or result.index not in failed_scenes:
                    summary.failed.append((pair, result.error))
                failed_scenes.add(result.index)
                continue
            if not result.tile:
                _merge(summary, result.summary)
                continue
            grid_tiles, scene_parts, left = scenes[result.index]
            scenes[result.index] = (grid_tiles, scene_parts, left - 1)
            if left == 1 and result.index not in failed_scenes:
                assemble(result.index)
        bar.close()
    order = {str(p.before): i for i, p in enumerate(pairs)}
    for name in ("done", "skipped"):
        getattr(summary, name).sort(key=lambda p: order.get(str(p.before), 0))
    return summary


def _merge(summary: ChangeSummary, part: ChangeSummary | None) -> None:
    if part is None:
        return
    summary.done += part.done
    summary.skipped += part.skipped
    summary.failed += part.failed
    summary.changed_pixels += part.changed_pixels
    summary.valid_pixels += part.valid_pixels
    summary.area += part.area
    summary.units |= part.units
