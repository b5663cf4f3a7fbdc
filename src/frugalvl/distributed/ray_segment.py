"""``frugalvl segment --engine ray``: many images and scenes on a Ray cluster (docs/ray.md).

The work becomes one Ray Dataset whose rows run in an actor pool (one segmenter per actor, loaded once):

* **file rows**: an image, or a scene with few tiles, segmented whole by
  :func:`frugalvl.segment.pipeline.segment_files` in the worker (its outputs, record and resume rules);
* **tile rows**: one tile of a large scene, through the scene's public phases 2 and 3
  (:func:`~frugalvl.segment.scene_tiles.segment_tile`, :func:`~frugalvl.segment.scene_tiles.save_part`):
  the tile's part file under ``<outdir>/.<stem>.parts/``, the same bytes the single-process path writes.

The driver never loads the model. It asks one Ray task for the segmenter's record
(:class:`~frugalvl.segment.records.SegmenterRecord`: identity and classes), checks finished outputs
(:func:`~frugalvl.segment.pipeline.inputs_to_run`) and plans each large scene
(:func:`~frugalvl.segment.scene.plan_scene`: reader, limits, tile grid, part folder, pending tiles)
exactly as the single-process path does, then streams the rows. When every tile of a scene has its
part file, a CPU task plans the scene again and runs :func:`~frugalvl.segment.scene.assemble_scene`
(label COG, overlay, vectors, record). Workers and driver must share the output folder.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..progress import Bar, Reporter, as_reporter
from ..raster import input_name
from ..segment.exemplars import ExemplarSettings
from ..segment.pipeline import (
    RunSummary,
    inputs_to_run,
    route_inputs,
    segment_files,
    writing_outputs,
)
from ..segment.records import SegmenterRecord
from ..segment.scene import SceneReader, SceneResult, Tile, assemble_scene, open_scene, plan_scene
from ..segment.scene_read import gdal_env
from ..segment.scene_settings import SceneSettings, SegmentRunSettings
from ..segment.scene_tiles import part_path, save_part, segment_tile
from .cluster import get_or_raise, map_with_pool, plan_pool, ray_session, remote_call

if TYPE_CHECKING:
    from ..segment.exemplars_run import ExemplarPlan

log = logging.getLogger(__name__)

TILE_LEVEL_MIN_TILES = 8  # scenes with at least this many tiles are spread over the workers tile by tile
READERS_PER_WORKER = 2  # open scenes an actor keeps (tile rows of one scene mostly arrive together)


# ---------------------------------------------------------------------------------------------
# What travels: rows and results (all picklable)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FileRow:
    index: int
    path: str


@dataclass(frozen=True)
class _TileRow:
    index: int
    path: str
    parts: str
    tile: Tile
    bands: tuple[int, ...]
    limits: Any


@dataclass
class _Result:
    index: int
    path: str
    kind: str  # "file" or "tile"
    summary: RunSummary | None = None
    error: str | None = None
    pid: int = 0


def record_of(make_segmenter: Callable[[], Any]) -> SegmenterRecord:
    """Build the segmenter once (a Ray task) and keep only its record."""
    return SegmenterRecord.of(make_segmenter())


def exemplar_plan_of(
    make_segmenter: Callable[[], Any], exemplars: ExemplarSettings, paths: list[str], settings: SegmentRunSettings
) -> tuple[ExemplarPlan, list[SegmenterRecord]]:
    """A Ray task: the run's exemplars read and placed once (SegEarth-OV's prototypes computed once), and
    the record of each input's segmenter; the plan goes to every worker."""
    from ..segment.exemplars_run import plan_exemplars

    segmenter = make_segmenter()
    assert exemplars.exemplars is not None
    plan = plan_exemplars(
        segmenter, exemplars.exemplars, paths, settings, exemplars.reuse_tokens, exemplars.save_prototypes
    )
    if plan.prototypes is not None:
        return plan, [SegmenterRecord.of(plan.apply(segmenter))] * len(paths)
    return plan, [SegmenterRecord.of(plan.apply(segmenter, i)) for i in range(len(paths))]


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


class SegmentWorker:
    """A Ray Data actor: one segmenter, many rows (``batch_size=1``)."""

    def __init__(
        self,
        make_segmenter: Callable[[], Any],
        outdir: str,
        settings: SegmentRunSettings,
        plan: ExemplarPlan | None = None,
    ) -> None:
        self.segmenter = make_segmenter()
        self.outdir, self.settings, self.plan = outdir, settings, plan
        self.with_exemplars: dict[int, Any] = {}  # input index -> its segmenter with the run's exemplars
        self.readers: dict[str, SceneReader] = {}
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out = []
        for blob in batch["row"]:
            row = pickle.loads(blob)
            kind = "tile" if isinstance(row, _TileRow) else "file"
            try:
                result = self._tile(row) if kind == "tile" else self._file(row)
            except UserError as exc:
                result = _Result(row.index, row.path, kind, error=str(exc))
            except Exception as exc:  # a bad input must not stop the others: reported by the driver
                log.exception("segmenting %s failed", row.path)
                result = _Result(
                    row.index, row.path, kind, error=f"{input_name(row.path)}: {type(exc).__name__}: {exc}"
                )
            result.pid = self.pid
            out.append(pickle.dumps(result))
        return {"result": out}

    def _segmenter(self, index: int) -> Any:
        """The segmenter for input ``index``: with the run's exemplars when it has some (a plan)."""
        if self.plan is None:
            return self.segmenter
        key = 0 if self.plan.prototypes is not None else index  # prototypes: the same for every input
        if key not in self.with_exemplars:
            self.with_exemplars[key] = self.plan.apply(self.segmenter, index)
        return self.with_exemplars[key]

    def _file(self, row: _FileRow) -> _Result:
        segmenter = self._segmenter(row.index)
        summary = segment_files(segmenter, [row.path], self.outdir, self.settings, progress=False, lock=False)
        return _Result(row.index, row.path, "file", summary=summary)

    def _tile(self, row: _TileRow) -> _Result:
        part = part_path(Path(row.parts), row.tile)
        if not part.exists():  # a retried row whose part was written before its worker died
            with gdal_env():
                labels, scores, _ = segment_tile(self._segmenter(row.index), self._reader(row), row.tile)
            save_part(part, labels, scores, self.settings.scene.save_probs)
        return _Result(row.index, row.path, "tile")

    def _reader(self, row: _TileRow) -> SceneReader:
        reader = self.readers.get(row.path)
        if reader is None:
            while len(self.readers) >= READERS_PER_WORKER:
                self.readers.pop(next(iter(self.readers))).src.close()
            s = self.settings.scene
            reader = self.readers[row.path] = SceneReader(
                open_scene(row.path, s, work=Path(row.parts) / "tiles"), list(row.bands), s.scale, s.stretch
            )
        reader.limits = row.limits
        return reader


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """A large scene spread over the workers tile by tile."""

    index: int
    path: str
    rows: list[_TileRow]
    pending: int
    error: str | None = None
    finish: Any = None  # the Ray reference of its assembly task


def _plan_scene(
    record: SegmenterRecord,
    index: int,
    path: str,
    outdir: Path,
    settings: SceneSettings,
    overwrite: bool,
    min_tiles: int,
) -> _Scene | None:
    """Phase 1 on the driver: the scene's pending tiles as rows; None when the scene has too few tiles to
    be worth spreading (it then goes whole to one worker) or was finished meanwhile (its file row skips it)."""
    plan = plan_scene(record, path, outdir, settings, overwrite)
    if plan is None:
        return None
    with plan:
        if len(plan.tiles) < min_tiles:
            return None
        todo = plan.pending
        bands, limits = tuple(plan.reader.bands), plan.reader.limits
    rows = [_TileRow(index, path, str(plan.parts), t, bands, limits) for t in todo]
    log.info("%s: %d of %d tile(s) to segment", plan.stem, len(todo), len(plan.tiles))
    return _Scene(index, path, rows, len(rows))


def _assemble_scene(
    record: SegmenterRecord, path: str, outdir: str, settings: SceneSettings, overwrite: bool
) -> SceneResult | None:
    """A Ray task: every tile has its part file; phase 1 again (it resumes the part folder, which the
    driver's phase 1 already started afresh when ``overwrite``), then phase 4."""
    plan = plan_scene(record, path, outdir, settings, overwrite=False)
    if plan is None:
        return None
    with plan:
        return assemble_scene(plan)


def segment_files_ray(
    make_segmenter: Callable[[], Any],
    paths: Sequence,
    outdir: str | Path,
    settings: SegmentRunSettings = SegmentRunSettings(),
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    device: str = "cpu",
    progress: bool | Reporter = True,
    min_tiles: int = TILE_LEVEL_MIN_TILES,
    restarts: int = 3,
    exemplars: str | os.PathLike | ExemplarSettings | None = None,
) -> RunSummary:
    """:func:`frugalvl.segment.pipeline.segment_files` on Ray: same settings, outputs and resume rules.

    ``make_segmenter``: a picklable callable that builds the segmenter (called once per actor);
    ``restarts``: how often a dead worker is restarted and its row retried before the run stops;
    ``exemplars``: as for ``segment_files``, read and placed once by one Ray task (SegEarth-OV's prototypes
    computed once), then applied by every worker to the inputs it segments.
    """
    pool_options = (ray_address, workers, gpus_per_worker, device, restarts)
    paths = [str(p) for p in paths]
    with writing_outputs(paths, outdir, settings.overwrite) as checked:  # one writer: this driver holds the lock
        return _segment_locked(make_segmenter, paths, checked, settings, progress, min_tiles, pool_options, exemplars)


def _segment_locked(
    make_segmenter, paths, outdir: Path, settings, progress, min_tiles, pool_options, exemplars
) -> RunSummary:
    ray_address, workers, gpus_per_worker, device, restarts = pool_options
    scene, overwrite = settings.scene, settings.overwrite
    with ray_session(ray_address) as ray:
        pool = plan_pool(ray, workers, gpus_per_worker, device, restarts)
        plan = None
        if exemplars is None:
            records = [remote_call(ray, record_of, make_segmenter, num_gpus=pool.gpus_per_worker)] * len(paths)
        else:
            given = exemplars if isinstance(exemplars, ExemplarSettings) else ExemplarSettings(str(exemplars))
            args = (make_segmenter, given, paths, settings)
            plan, records = remote_call(ray, exemplar_plan_of, *args, num_gpus=pool.gpus_per_worker)
        routes = route_inputs(paths, settings)
        todo = inputs_to_run(records, paths, routes, outdir, settings)
        summary = RunSummary(list(records[0].names))
        summary.skipped += [p for i, p in enumerate(paths) if i not in todo]
        scenes, rows = _plan(records, paths, todo, routes, outdir, scene, overwrite, min_tiles, summary)
        for planned in scenes.values():
            if planned.pending == 0:
                _submit_assembly(ray, planned, records, outdir, scene, overwrite)
        items = [{"row": pickle.dumps(r)} for r in rows]
        results = map_with_pool(ray, items, SegmentWorker, (make_segmenter, str(outdir), settings, plan), pool)
        _stream(ray, results, len(rows), scenes, records, outdir, scene, overwrite, summary, progress)
        _collect_assemblies(ray, scenes, paths, summary)
    order = {p: i for i, p in enumerate(paths)}
    for name in ("done", "skipped"):
        getattr(summary, name).sort(key=lambda p: order.get(str(p), 0))
    summary.failed.sort(key=lambda f: order.get(str(f[0]), 0))
    return summary


def _plan(records, paths, todo, routes, outdir, settings, overwrite, min_tiles, summary) -> tuple[dict, list]:
    scenes: dict[int, _Scene] = {}
    rows: list = []
    for i in sorted(todo):
        scene = None
        if routes[i]:
            try:
                scene = _plan_scene(records[i], i, paths[i], outdir, settings, overwrite, min_tiles)
            except UserError as exc:
                summary.failed.append((paths[i], str(exc)))
                continue
        if scene is None:
            rows.append(_FileRow(i, paths[i]))
        else:
            scenes[i] = scene
            rows += scene.rows
    return scenes, rows


def _stream(ray, results, total: int, scenes: dict, records, outdir, settings, overwrite, summary, progress) -> None:
    """Merge the rows' results as they finish; start a scene's assembly once its last tile is in."""
    bar = _rows_bar(total, progress)
    try:
        for row in results:
            r: _Result = pickle.loads(row["result"])
            bar.advance()
            if r.kind == "file":
                _merge(summary, r)
                continue
            scene = scenes[r.index]
            scene.pending -= 1
            scene.error = scene.error or r.error
            if scene.pending == 0:
                _submit_assembly(ray, scene, records, outdir, settings, overwrite)
    except ray.exceptions.RayError as exc:
        raise UserError(
            f"the Ray job stopped ({str(exc).splitlines()[0][:160]}): finished files and tiles are kept; "
            "run the same command again to resume"
        ) from None
    finally:
        bar.close()


def _rows_bar(total: int, progress: bool | Reporter) -> Bar:
    """The progress bar over the rows (files and tiles) of a Ray run."""
    return as_reporter(progress if total else False).start("row", total, "segment (ray)")


def _merge(summary: RunSummary, r: _Result) -> None:
    if r.error is not None:
        summary.failed.append((r.path, r.error))
        return
    s = r.summary
    assert s is not None  # a result without an error carries its summary
    summary.pixels.update(s.pixels)
    summary.area.update(s.area)
    summary.area_units |= s.area_units
    summary.done += s.done
    summary.skipped += s.skipped
    summary.failed += s.failed


def _submit_assembly(ray, scene: _Scene, records, outdir, settings, overwrite) -> None:
    """The scene's assembly task, with the record of its input's segmenter (``records``: one per input)."""
    if scene.error is None:
        task = ray.remote(num_cpus=1, max_retries=1)(_assemble_scene)
        scene.finish = task.remote(records[scene.index], scene.path, str(outdir), settings, overwrite)


def _collect_assemblies(ray, scenes: dict, paths, summary: RunSummary) -> None:
    for scene in scenes.values():
        if scene.error is not None:
            summary.failed.append((scene.path, scene.error))
            continue
        if scene.finish is None:  # the stream stopped before its last tile
            summary.failed.append((scene.path, f"{input_name(scene.path)}: {scene.pending} tile(s) not segmented"))
            continue
        try:
            result = get_or_raise(ray, scene.finish)
        except (UserError, ray.exceptions.RayError) as exc:
            summary.failed.append((scene.path, str(exc).splitlines()[0]))
            continue
        if result is None:
            summary.skipped.append(scene.path)
        else:
            summary.add(result.pixels, result.pixel_area, result.area_unit, result.areas)
            summary.done.append(scene.path)


__all__ = ["SegmentWorker", "exemplar_plan_of", "record_of", "segment_files_ray", "TILE_LEVEL_MIN_TILES"]
