"""``frugalvl segment --engine ray``: many images and scenes on a Ray cluster (docs/ray.md).

The work becomes one Ray Dataset whose rows run in an actor pool (one segmenter per actor, loaded once):

* **file rows**: an image, or a scene with few tiles, segmented whole by
  :func:`frugalvl.segment.pipeline.segment_files` in the worker (its outputs, record and resume rules);
* **tile rows**: one tile of a large scene: :func:`frugalvl.segment.scene.segment_tile` writes the tile's
  part file under ``<outdir>/.<stem>.parts/``, the same bytes the single-process path writes.

The driver never loads the model. It asks one Ray task for the segmenter's record (identity, classes),
checks finished outputs and prepares each large scene's part folder exactly as the single-process path
does, then streams the rows. When every tile of a scene has its part file, a CPU task *assembles* it
by calling :func:`frugalvl.segment.scene.segment_scene` with a record-only stand-in segmenter: every tile
is then resumed from its part, so only the assembly (label COG, overlay, vectors, record) runs, with
the single-process code. Workers and driver must share the output folder.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..raster import check_size, input_name, input_stem, select_bands
from ..segment.pipeline import RunSummary, check_inputs_and_outputs, check_outdir, segment_files
from ..segment.scene import SceneSettings, Tile
from .cluster import get_or_raise, map_with_pool, plan_pool, ray_session, remote_call

log = logging.getLogger(__name__)

TILE_LEVEL_MIN_TILES = 8  # scenes with at least this many tiles are spread over the workers tile by tile
READERS_PER_WORKER = 2  # open scenes an actor keeps (tile rows of one scene mostly arrive together)


# ---------------------------------------------------------------------------------------------
# What travels: jobs, rows and results (all picklable)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentJob:
    """The options of one ``segment`` run, as :func:`frugalvl.segment.pipeline.segment_files` takes them."""

    outdir: str
    save_probs: bool = False
    overwrite: bool = False
    bands: tuple[int, ...] | None = None
    stretch: str = "percentile"
    scene: SceneSettings | None = None
    vectors: str | None = None
    min_area: float = 0.0
    simplify: float = 0.0

    def scene_settings(self) -> SceneSettings:
        """The settings the single-process path gives the scene path (segment_files)."""
        return dataclasses.replace(
            self.scene or SceneSettings(),
            bands=self.bands,
            stretch=self.stretch,
            save_probs=self.save_probs,
            vectors=self.vectors,
            min_area=self.min_area,
            simplify=self.simplify,
        )


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


@dataclass
class RecordOnly:
    """A stand-in segmenter that carries a real one's record (identity, classes) but no model.

    Used where only the record matters: checking finished outputs, preparing part folders, and
    assembling a scene whose tiles all have their part files.
    """

    ident: dict
    vocabulary: Any
    prob_thd: float
    bg_idx: int

    def identity(self) -> dict:
        return self.ident

    def class_scores(self, rgb: Any) -> Any:
        raise RuntimeError("a tile has no part file (its worker died?): run the same command again to resume")


def record_of(make_segmenter: Callable[[], Any]) -> RecordOnly:
    """Build the segmenter once (a Ray task) and keep only its record."""
    from ..segment.records import segmenter_identity

    segmenter = make_segmenter()
    return RecordOnly(segmenter_identity(segmenter), segmenter.vocabulary, segmenter.prob_thd, segmenter.bg_idx)


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


class SegmentWorker:
    """A Ray Data actor: one segmenter, many rows (``batch_size=1``)."""

    def __init__(self, make_segmenter: Callable[[], Any], job: SegmentJob) -> None:
        import os

        self.segmenter = make_segmenter()
        self.job = job
        self.readers: dict[str, Any] = {}
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

    def _file(self, row: _FileRow) -> _Result:
        j = self.job
        summary = segment_files(
            self.segmenter,
            [row.path],
            j.outdir,
            save_probs=j.save_probs,
            overwrite=j.overwrite,
            bands=j.bands,
            stretch=j.stretch,
            progress=False,
            scene=j.scene,
            vectors=j.vectors,
            min_area=j.min_area,
            simplify=j.simplify,
        )
        return _Result(row.index, row.path, "file", summary=summary)

    def _tile(self, row: _TileRow) -> _Result:
        import rasterio

        from ..segment.scene import _GDAL_ENV, _save_part, segment_tile

        part = Path(row.parts) / f"{row.tile.name}.npz"
        if not part.exists():  # a retried row whose part was written before its worker died
            with rasterio.Env(**_GDAL_ENV):
                labels, scores, _ = segment_tile(self.segmenter, self._reader(row), row.tile)
            _save_part(part, labels, scores, self.job.save_probs)
        return _Result(row.index, row.path, "tile")

    def _reader(self, row: _TileRow) -> Any:
        from ..segment.scene import _Reader, open_scene

        reader = self.readers.get(row.path)
        if reader is None:
            while len(self.readers) >= READERS_PER_WORKER:
                self.readers.pop(next(iter(self.readers))).src.close()
            s = self.job.scene_settings()
            reader = self.readers[row.path] = _Reader(open_scene(row.path), list(row.bands), s.scale, s.stretch)
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
    stub: RecordOnly, index: int, path: str, outdir: Path, settings: SceneSettings, overwrite: bool, min_tiles: int
) -> _Scene | None:
    """The scene's tile rows still to do after preparing its part folder; None when it has too few
    tiles to be worth spreading (it then goes whole to one worker)."""
    import rasterio

    from ..segment.scene import _GDAL_ENV, _prepare_parts, _Reader, open_scene, plan_tiles, scene_limits, scene_record

    stem = input_stem(path)
    parts = outdir / f".{stem}.parts"
    with rasterio.Env(**_GDAL_ENV):
        src = open_scene(path)
        with src:
            check_size(path, (src.height, src.width))
            reader = _Reader(
                src, select_bands(src.count, settings.bands, Path(input_name(path))), settings.scale, settings.stretch
            )
            tiles = [t for row in plan_tiles(*reader.shape, settings.tile, settings.overlap_px) for t in row]
            if len(tiles) < min_tiles:
                return None
            _prepare_parts(parts, scene_record(stub, path, settings, parts=True), overwrite, stem)
            limits = scene_limits(reader)
    todo = [
        _TileRow(index, path, str(parts), t, tuple(reader.bands), limits)
        for t in tiles
        if not (parts / f"{t.name}.npz").exists()
    ]
    log.info("%s: %d of %d tile(s) to segment", stem, len(todo), len(tiles))
    return _Scene(index, path, todo, len(todo))


def _assemble_scene(stub: RecordOnly, path: str, outdir: str, settings: SceneSettings, overwrite: bool) -> Any:
    """A Ray task: every tile has its part, so segment_scene only assembles (COG, overlay, vectors, record)."""
    from ..segment.scene import segment_scene

    return segment_scene(stub, path, outdir, settings, overwrite=overwrite, progress=False)


def segment_files_ray(
    make_segmenter: Callable[[], Any],
    paths: Sequence,
    outdir: str | Path,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    min_tiles: int = TILE_LEVEL_MIN_TILES,
    restarts: int = 3,
    **options: Any,
) -> RunSummary:
    """:func:`frugalvl.segment.pipeline.segment_files` on Ray: same outputs, same resume rules.

    ``make_segmenter``: a picklable callable that builds the segmenter (called once per actor);
    ``options``: the keyword options of ``segment_files`` (:class:`SegmentJob` fields but ``outdir``);
    ``restarts``: how often a dead worker is restarted and its row retried before the run stops.
    """
    from ..segment.pipeline import _check_records, uses_scene_path

    outdir = check_outdir(outdir)
    paths = [str(p) for p in paths]
    check_inputs_and_outputs(paths, outdir)
    fields: dict[str, Any] = {k: (tuple(v) if k == "bands" and v else v) for k, v in options.items()}
    job = SegmentJob(str(outdir), **fields)
    settings = job.scene_settings()
    with ray_session(ray_address) as ray:
        pool = plan_pool(ray, workers, gpus_per_worker, device, restarts)
        stub = remote_call(ray, record_of, make_segmenter, num_gpus=pool.gpus_per_worker)
        routes = {i: uses_scene_path(p, job.scene) for i, p in enumerate(paths)}
        todo = _check_records(stub, paths, routes, outdir, settings, job.overwrite)
        summary = RunSummary(list(stub.vocabulary.names))
        summary.skipped += [p for i, p in enumerate(paths) if i not in todo]
        scenes, rows = _plan(stub, paths, todo, routes, outdir, settings, job.overwrite, min_tiles, summary)
        for scene in scenes.values():
            if scene.pending == 0:
                _submit_assembly(ray, scene, stub, outdir, settings, job.overwrite)
        _stream(
            ray,
            map_with_pool(ray, [{"row": pickle.dumps(r)} for r in rows], SegmentWorker, (make_segmenter, job), pool),
            len(rows),
            scenes,
            stub,
            outdir,
            settings,
            job.overwrite,
            summary,
            progress,
        )
        _collect_assemblies(ray, scenes, paths, summary)
    order = {p: i for i, p in enumerate(paths)}
    for name in ("done", "skipped"):
        getattr(summary, name).sort(key=lambda p: order.get(str(p), 0))
    summary.failed.sort(key=lambda f: order.get(str(f[0]), 0))
    return summary


def _plan(stub, paths, todo, routes, outdir, settings, overwrite, min_tiles, summary) -> tuple[dict, list]:
    scenes: dict[int, _Scene] = {}
    rows: list = []
    for i in sorted(todo):
        scene = None
        if routes[i]:
            try:
                scene = _plan_scene(stub, i, paths[i], outdir, settings, overwrite, min_tiles)
            except UserError as exc:
                summary.failed.append((paths[i], str(exc)))
                continue
        if scene is None:
            rows.append(_FileRow(i, paths[i]))
        else:
            scenes[i] = scene
            rows += scene.rows
    return scenes, rows


def _stream(ray, results, total: int, scenes: dict, stub, outdir, settings, overwrite, summary, progress) -> None:
    """Merge the rows' results as they finish; start a scene's assembly once its last tile is in."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="segment (ray)", unit="row", disable=not progress or not total)
    try:
        for row in results:
            r: _Result = pickle.loads(row["result"])
            bar.update(1)
            if r.kind == "file":
                _merge(summary, r)
                continue
            scene = scenes[r.index]
            scene.pending -= 1
            scene.error = scene.error or r.error
            if scene.pending == 0:
                _submit_assembly(ray, scene, stub, outdir, settings, overwrite)
    except ray.exceptions.RayError as exc:
        raise UserError(
            f"the Ray job stopped ({str(exc).splitlines()[0][:160]}): finished files and tiles are kept; "
            "run the same command again to resume"
        ) from None
    finally:
        bar.close()


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


def _submit_assembly(ray, scene: _Scene, stub, outdir, settings, overwrite) -> None:
    if scene.error is None:
        task = ray.remote(num_cpus=1, max_retries=1)(_assemble_scene)
        scene.finish = task.remote(stub, scene.path, str(outdir), settings, overwrite)


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
            summary.add(result.pixels, result.pixel_area, result.area_unit)
            summary.done.append(scene.path)


__all__ = ["SegmentJob", "SegmentWorker", "RecordOnly", "record_of", "segment_files_ray", "TILE_LEVEL_MIN_TILES"]
