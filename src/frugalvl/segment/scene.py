"""Whole scenes: any-size rasters segmented tile by tile in bounded memory (docs/scenes.md).

``scene --windowed read--> tile (+ overlap) --segmenter.class_scores--> [C,h,w] --keep the core-->
part file`` for every tile, then ``parts --> label COG (+ score COG, overlay, vectors)``.

A scene goes through four public phases, which :func:`segment_scene` runs in a loop and the Ray
engine (:mod:`frugalvl.distributed.ray_segment`) spreads over a cluster:

1. :func:`plan_scene` checks the finished outputs against the record, opens the scene (its reader
   with scene-wide stretch limits), lays out the tile grid and prepares the part folder; its
   :attr:`ScenePlan.pending` tiles are those without a part file;
2. :func:`~frugalvl.segment.scene_tiles.segment_tile` segments one tile;
3. :func:`~frugalvl.segment.scene_tiles.save_part` saves it as a part file;
4. :func:`assemble_scene` writes the outputs from the part files and, last, the record.

The parts live in :mod:`.scene_tiles`, reading in :mod:`.scene_read`, writing in :mod:`.scene_write`,
the settings in :mod:`.scene_settings`. Memory: one tile's pixels and scores at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..progress import Bar, Reporter, as_reporter
from ..raster import check_size, input_name, input_stem, is_url, select_bands
from ..sources.bands import resolve_bands
from ..sources.remote import remote_identity
from ..sources.stac import items_source, mosaic_members
from .base import Segmenter
from .records import (
    RESULT_KEY,
    SegmenterRecord,
    check_record,
    class_names,
    make_record,
    record_path,
    result_of,
    write_claim,
    write_record,
)
from .scene_read import SceneReader, gdal_env, open_scene, prefetch, scene_limits
from .scene_settings import SOURCE_FIELDS, VECTOR_FORMATS, SceneSettings
from .scene_tiles import (
    Tile,
    part_path,
    parts_folder,
    pending_tiles,
    plan_tiles,
    prepare_parts,
    save_part,
    segment_tile,
)
from .scene_write import pixel_area, write_rasters, write_scene_overlay

log = logging.getLogger(__name__)

__all__ = [
    "VECTOR_FORMATS",
    "SceneSettings",
    "SceneResult",
    "ScenePlan",
    "SceneReader",
    "Tile",
    "assemble_scene",
    "input_identity",
    "open_scene",
    "plan_scene",
    "plan_tiles",
    "run_tiles",
    "save_part",
    "scene_finished",
    "scene_record",
    "segment_scene",
    "segment_tile",
    "write_scene_overlay",
]


@dataclass
class SceneResult:
    """What one scene produced."""

    labels: Path
    pixels: Counter  # class index -> pixel count (valid pixels only)
    pixel_area: float  # mean ground area of an output pixel (m² for any CRS, 1 without one)
    area_unit: str  # "m²" with a CRS (geodesic for geographic ones), "px" without one, "units²" if unknown
    probs: Path | None = None
    overlay: Path | None = None
    vectors: Path | None = None
    tiles_run: int = 0  # tiles segmented by this call (0 when everything was resumed)
    tiles_skipped_nodata: int = 0
    outputs: list[Path] = field(default_factory=list)
    areas: dict[int, float] = field(default_factory=dict)  # class index -> ground area in ``area_unit``


# ---------------------------------------------------------------------------------------------
# Records: what a scene's outputs depend on
# ---------------------------------------------------------------------------------------------


def input_identity(source: str | os.PathLike, settings: SceneSettings | None = None) -> dict[str, Any]:
    """A local file's name, size and modification time; a remote input with what identifies its content
    (:func:`frugalvl.sources.remote.remote_identity`; a tile service read with ``settings``: its probe tile),
    so a replaced input is never reused, remote or local."""
    name = str(source)
    members = mosaic_members(name)
    if members is not None:  # several STAC items: each one's identity
        missing = [m for m in members if not is_url(m) and not Path(m).is_file()]
        if missing:
            raise UserError(f"STAC item {missing[0]} does not exist: check the path")
        return {"stac_items": [input_identity(m) for m in members]}
    if is_url(name):
        from ..sources.xyz import is_xyz

        if is_xyz(name) and settings is not None:
            return _tiles_identity(name, settings)
        from ..sources.wmts import is_wmts

        if is_wmts(name):
            from ..sources.remote import wmts_identity

            return wmts_identity(name)
        return remote_identity(name)
    st = os.stat(name)
    return {"name": Path(name).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _tiles_identity(name: str, settings: SceneSettings) -> dict[str, Any]:
    """A tile service's identity at the zoom the scene reads, probed under the centre of its bbox."""
    from ..sources.remote import xyz_identity
    from ..sources.xyz import zoom_for_resolution

    lon = lat = 0.0
    if settings.bbox is not None:
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(settings.bbox_crs, "EPSG:4326", *settings.bbox)
        lon, lat = (w + e) / 2, (s + n) / 2
    elif settings.aoi is not None and Path(settings.aoi).is_file():
        from ..sources.aoi import read_aoi

        w, s, e, n = read_aoi(settings.aoi, "EPSG:4326").bounds
        lon, lat = (w + e) / 2, (s + n) / 2
    zoom = settings.zoom
    if zoom is None:
        if settings.resolution is None:
            return remote_identity(name)  # the reader refuses it with one line
        zoom = zoom_for_resolution(settings.resolution, lat if settings.bbox is not None else 0.0)  # as the reader
    return xyz_identity(name, zoom, lon, lat)


def scene_record(
    segmenter: Segmenter | SegmenterRecord, source: str | os.PathLike, settings: SceneSettings, parts: bool = False
) -> dict[str, Any]:
    """What a scene's outputs depend on: the segmenter, the input file and the tiling/reading settings.

    ``save_probs`` only adds an output, so it is part of the record of unfinished tiles (whose part
    files hold the scores or not) but not of the finished outputs.
    """
    s = asdict(settings)
    s["overlap"] = settings.overlap_px
    for name, default in SOURCE_FIELDS.items():  # absent at their defaults: older records stay valid
        if s[name] == default:
            s.pop(name)
    if settings.aoi is not None:
        s["aoi"] = input_identity(settings.aoi)
    if not parts:
        s.pop("save_probs")
    return make_record(segmenter, input=input_identity(source, settings), scene=s)


def scene_finished(outdir: Path, stem: str, settings: SceneSettings) -> bool:
    """Whether every requested output of a scene exists (its record is checked separately)."""
    needed = [outdir / f"{stem}.tif", outdir / f"{stem}_overlay.png"]
    if settings.save_probs:
        needed.append(outdir / f"{stem}_probs.tif")
    if settings.vectors:
        needed.append(outdir / f"{stem}{VECTOR_FORMATS[settings.vectors]}")
    return all(p.exists() for p in needed)


# ---------------------------------------------------------------------------------------------
# The phases
# ---------------------------------------------------------------------------------------------


@dataclass
class ScenePlan:
    """An open scene ready to be segmented: its reader, tile grid and part folder (a context manager
    that closes the scene)."""

    source: str
    outdir: Path
    stem: str
    settings: SceneSettings
    names: list[str]  # the segmenter's class names
    record: dict[str, Any]  # the finished outputs' record, written last by :func:`assemble_scene`
    reader: SceneReader
    rows: list[list[Tile]]
    parts: Path
    _closer: contextlib.ExitStack = field(repr=False, default_factory=contextlib.ExitStack)

    @property
    def tiles(self) -> list[Tile]:
        return [t for row in self.rows for t in row]

    @property
    def pending(self) -> list[Tile]:
        """The tiles without a part file, in grid order."""
        return pending_tiles(self.parts, self.tiles)

    def part(self, tile: Tile) -> Path:
        """The part file of ``tile``."""
        return part_path(self.parts, tile)

    def close(self) -> None:
        self._closer.close()

    def __enter__(self) -> ScenePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_scene(
    segmenter: Segmenter | SegmenterRecord,
    source: str | os.PathLike,
    outdir: str | os.PathLike,
    settings: SceneSettings = SceneSettings(),
    overwrite: bool = False,
) -> ScenePlan | None:
    """Phase 1: None when the scene's outputs exist with the same record; else the open :class:`ScenePlan`.

    Only the segmenter's record is used (a :class:`~frugalvl.segment.records.SegmenterRecord` will do).
    A part folder left by an unfinished run with the same record is resumed; one with another record
    stops with one line unless ``overwrite``.
    """
    outdir = Path(outdir)
    stem = input_stem(source)
    if not is_url(str(source)) and not Path(source).is_file():
        raise UserError(f"image {source} does not exist: check the path")
    record = scene_record(segmenter, source, settings)
    rec_path = record_path(outdir, stem)
    parts = parts_folder(outdir, stem)
    if not overwrite and check_record(rec_path, record, f"{stem}.tif") and scene_finished(outdir, stem, settings):
        shutil.rmtree(parts, ignore_errors=True)  # left by a run killed after its record was written
        return None
    closer = contextlib.ExitStack()
    try:
        closer.enter_context(gdal_env())
        src = closer.enter_context(open_scene(source, settings, work=parts / "tiles"))
        check_size(source, (src.height, src.width))
        bands = select_bands(
            src.count, resolve_bands(src, settings.bands, input_name(source)), Path(input_name(source))
        )
        reader = SceneReader(src, bands, settings.scale, settings.stretch)
        prepare_parts(parts, scene_record(segmenter, source, settings, parts=True), overwrite, stem)
        reader.limits = scene_limits(reader)
        rows = plan_tiles(*reader.shape, settings.tile, settings.overlap_px)
    except BaseException:
        closer.close()
        raise
    write_claim(outdir, stem)  # the outputs about to be written are frugalvl's, and unfinished
    names = class_names(segmenter)
    return ScenePlan(str(source), outdir, stem, settings, names, record, reader, rows, parts, closer)


def _tile_bar(plan: ScenePlan, done: int, progress: bool | Reporter) -> Bar:
    """The progress bar over one scene's tiles (the inner bar; the outer one counts inputs)."""
    return as_reporter(progress).start("tile", len(plan.tiles), plan.stem, done=done, level=1)


def run_tiles(segmenter: Segmenter, plan: ScenePlan, progress: bool | Reporter = False) -> tuple[int, int]:
    """Phases 2 and 3 for every pending tile, reading ahead in a thread; returns (tiles run, all-nodata skipped)."""
    todo = plan.pending
    ran = skipped = 0
    bar = _tile_bar(plan, len(plan.tiles) - len(todo), progress)
    try:
        for tile, pixels in prefetch(plan.reader, todo):
            labels, scores, did_run = segment_tile(segmenter, plan.reader, tile, pixels)
            save_part(plan.part(tile), labels, scores, plan.settings.save_probs)
            ran += did_run
            skipped += not did_run
            bar.advance()
    finally:
        bar.close()
    return ran, skipped


def assemble_scene(
    plan: ScenePlan, tiles_run: int = 0, tiles_skipped: int = 0, progress: bool | Reporter = False
) -> SceneResult:
    """Phase 4: every tile has its part file; write the outputs, then the record, then drop the parts."""
    reporter = as_reporter(progress)
    missing = plan.pending
    if missing:
        raise UserError(
            f"{input_name(plan.source)}: {len(missing)} tile(s) have no part file (a worker died?): "
            "run the same command again to resume"
        )
    s, outdir, stem, names = plan.settings, plan.outdir, plan.stem, plan.names
    reporter.phase("assemble", stem)
    label_path, probs_path, pixels, areas = write_rasters(
        plan.reader, plan.tiles, plan.parts, names, outdir, stem, s.save_probs
    )
    reporter.phase("overlay", stem)
    overlay = write_scene_overlay(plan.reader, label_path, names, outdir / f"{stem}_overlay.png")
    mean_area, unit = pixel_area(plan.reader)
    vec_path = None
    if s.vectors:
        from ..vectors import write_vectors

        reporter.phase("vectors", stem)
        vec_path = write_vectors(
            label_path, outdir / f"{stem}{VECTOR_FORMATS[s.vectors]}", names, min_area=s.min_area, simplify=s.simplify
        )
    area = sum(areas.values()) / sum(pixels.values()) if pixels else mean_area
    finished = {**plan.record, RESULT_KEY: result_of(pixels, area, unit)}  # a rerun's table reads it
    write_record(record_path(outdir, stem), finished)  # last: marks the scene done
    shutil.rmtree(plan.parts, ignore_errors=True)
    outputs = [p for p in (label_path, probs_path, overlay, vec_path) if p is not None]
    result = SceneResult(label_path, pixels, area, unit, probs_path, overlay, vec_path, tiles_run, tiles_skipped)
    result.outputs, result.areas = outputs, dict(areas)
    return result


def segment_scene(
    segmenter: Segmenter,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    settings: SceneSettings = SceneSettings(),
    overwrite: bool = False,
    progress: bool | Reporter = False,
    **overrides: Any,
) -> SceneResult | None:
    """Segment one scene tile by tile and write its outputs under ``outdir``: the phases in a loop.

    ``overrides`` are :class:`SceneSettings` fields (``tile=1024, vectors="gpkg"``). Returns None when
    the outputs exist already with the same record (nothing to do). ``source``: a file, a URL, a STAC
    item, a tile service (``xyz+…``, ``wmts+…``) or a list of STAC items (one mosaic, the first on top). A run killed at any point resumes at
    the first unfinished tile and writes the same bytes as an uninterrupted one.
    """
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    # several STAC items: one mosaic, the first on top
    name = items_source(source) if isinstance(source, list | tuple) else source
    assert isinstance(name, str | os.PathLike)
    reporter = as_reporter(progress)
    reporter.phase("plan", input_stem(name))
    plan = plan_scene(segmenter, name, outdir, settings, overwrite)
    if plan is None:
        return None
    with plan:
        ran, skipped = run_tiles(segmenter, plan, reporter)
        return assemble_scene(plan, ran, skipped, reporter)
