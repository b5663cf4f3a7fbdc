"""Whole scenes: any-size rasters segmented tile by tile in bounded memory (docs/scenes.md).

``scene --windowed read--> tile (+ overlap) --segmenter.class_scores--> [C,h,w] --keep the core-->
part file`` for every tile, then ``parts --> label COG (+ score COG, overlay, vectors)``.

* Tiles are ``tile×tile`` windows on mmseg's grid (stride ``tile - overlap``, the last one shifted back
  to the border, :func:`frugalvl.windows.spans`), so every tile has the same size and goes through
  the method's own protocol exactly as a crop would (SegEarth-OV: 448 long side, 224/112 windows).
* Blending: each pixel is taken from the tile whose centre is nearest (a centre-weighted blend with a
  box weight, :func:`frugalvl.windows.core_spans`): it keeps at least half an overlap of context on
  every side, never mixes in a prediction made at a tile's border, and makes each tile's result final
  on its own, which is what lets a killed run resume by tile with identical bytes.
* Radiometry: non-8-bit data are stretched with limits of the whole scene from one decimated read
  (overviews when the file has them), never per tile.
* Memory: one tile's pixels and scores at a time; results go to small compressed part files in
  ``<outdir>/.<stem>.parts/`` and are assembled, block by block, into a tiled GeoTIFF, then copied
  to a Cloud-Optimized GeoTIFF by GDAL's COG driver.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, write_json
from ..raster import (
    COG_BLOCK,
    NODATA_LABEL,
    apply_stretch,
    check_size,
    input_name,
    input_stem,
    is_url,
    label_dtype,
    overlay_image,
    palette,
    select_bands,
    stretch_limits,
    to_cog,
)
from ..windows import Window, core_spans, spans
from .base import Segmenter, labels_from_scores
from .records import check_record, make_record, read_record, record_path, write_record

log = logging.getLogger(__name__)

VECTOR_FORMATS = {"gpkg": ".gpkg", "geojson": ".geojson", "parquet": ".parquet"}
STATS_LONG_SIDE = 2048  # scene-wide stretch limits come from a read at most this long (full read below)
OVERLAY_LONG_SIDE = 2048  # the overlay PNG of a scene is drawn from an overview at most this long
PREFETCH_TILES = 2  # tiles read ahead of the model by a background thread
_GDAL_ENV = dict(
    GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
    GDAL_HTTP_MAX_RETRY="2",
    GDAL_HTTP_RETRY_DELAY="0.5",
    GDAL_HTTP_CONNECTTIMEOUT="20",
    GDAL_HTTP_TIMEOUT="120",
    GDAL_CACHEMAX=256 << 20,
)  # bytes of GDAL block cache (its default, 5% of RAM, grows with the scene)


@dataclass(frozen=True)
class SceneSettings:
    """How a scene is tiled, read and written (defaults in docs/scenes.md)."""

    tile: int = 512  # tile side in (scaled) scene pixels
    overlap: int | None = None  # pixels shared by neighbouring tiles; None: tile // 4
    scale: float = 1.0  # resample the scene by this factor first (0.5: twice the GSD)
    bands: tuple[int, ...] | None = None
    stretch: str = "percentile"
    save_probs: bool = False  # <stem>_probs.tif: uint8 scores ×255, one band per class
    vectors: str | None = None  # gpkg, geojson or parquet
    min_area: float = 0.0  # drop polygons below this (map units², pixels without a CRS)
    simplify: float = 0.0  # topology-preserving simplification tolerance (map units)

    def __post_init__(self) -> None:
        if self.tile < 32:
            raise UserError(f"--tile {self.tile} is too small: give at least 32 px (e.g. 512)")
        if self.overlap is not None and not 0 <= self.overlap <= self.tile // 2:
            raise UserError(f"--tile-overlap {self.overlap} must be between 0 and half the tile ({self.tile // 2})")
        if not (math.isfinite(self.scale) and 0 < self.scale <= 16):
            raise UserError(f"--scale {self.scale} must be a number in (0, 16], e.g. 0.5 to work at twice the GSD")
        if self.vectors is not None and self.vectors not in VECTOR_FORMATS:
            raise UserError(f"--vectors {self.vectors!r}: choose one of {', '.join(VECTOR_FORMATS)}")
        if not (math.isfinite(self.min_area) and self.min_area >= 0):
            raise UserError(f"--min-area {self.min_area} must be zero or positive (map units², pixels without a CRS)")
        if not (math.isfinite(self.simplify) and self.simplify >= 0):
            raise UserError(f"--simplify {self.simplify} must be zero or positive (map units)")
        if self.stretch not in ("percentile", "minmax"):
            raise UserError(f"unknown stretch {self.stretch!r}: choose percentile or minmax")

    @property
    def overlap_px(self) -> int:
        return self.tile // 4 if self.overlap is None else self.overlap


@dataclass(frozen=True)
class Tile:
    """One tile: the window read and segmented, and the core of it that is kept."""

    row: int
    col: int
    read: Window
    core: Window

    @property
    def name(self) -> str:
        return f"r{self.row:05d}_c{self.col:05d}"


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles covering ``height×width``; the cores partition the image."""
    stride = max(tile - overlap, 1)
    ys, xs = spans(height, tile, stride), spans(width, tile, stride)
    cy, cx = core_spans(ys, height), core_spans(xs, width)
    return [
        [Tile(r, c, Window(y0, y1, x0, x1), Window(*cy[r], *cx[c])) for c, (x0, x1) in enumerate(xs)]
        for r, (y0, y1) in enumerate(ys)
    ]


@dataclass
class SceneResult:
    """What one scene produced."""

    labels: Path
    pixels: Counter  # class index -> pixel count (valid pixels only)
    pixel_area: float  # map units² per output pixel (1 without a CRS)
    area_unit: str  # "m²" for a metric CRS, "px" without one, else "units²"
    probs: Path | None = None
    overlay: Path | None = None
    vectors: Path | None = None
    tiles_run: int = 0  # tiles segmented by this call (0 when everything was resumed)
    tiles_skipped_nodata: int = 0
    outputs: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def open_scene(source: str | os.PathLike):
    """Open a local raster, a VRT or a remote one (``https://``, ``s3://``: GDAL range requests)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    name = str(source)
    if not is_url(name) and not Path(name).is_file():
        raise UserError(f"image {name} does not exist: check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(name)
    except RasterioIOError as exc:
        if is_url(name):
            raise UserError(
                f"cannot open {name}: the server does not answer or the file is not a raster "
                f"({str(exc).splitlines()[0][:120]})"
            ) from None
        raise UserError(f"cannot read {name}: not a raster GDAL can read (corrupt or truncated?)") from None


@dataclass
class _Reader:
    """Windowed reads of a scene at ``scale``, stretched with scene-wide limits."""

    src: Any
    bands: list[int]
    scale: float
    stretch: str
    limits: list[tuple[float, float]] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        if self.scale == 1.0:
            return self.src.height, self.src.width
        return max(1, round(self.src.height * self.scale)), max(1, round(self.src.width * self.scale))

    @property
    def transform(self):
        from affine import Affine

        h, w = self.shape
        return self.src.transform @ Affine.scale(self.src.width / w, self.src.height / h)

    def _source_window(self, win: Window):
        from rasterio.windows import Window as RioWindow

        h, w = self.shape
        fy, fx = self.src.height / h, self.src.width / w
        return RioWindow(win.x0 * fx, win.y0 * fy, win.width * fx, win.height * fy)

    def read(self, win: Window, out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``[B, h, w]`` raw bands and the ``h×w`` valid mask of a window (scaled coordinates)."""
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError

        shape = out_shape or (win.height, win.width)
        try:
            if self.scale == 1.0 and out_shape is None:
                from rasterio.windows import Window as RioWindow

                rio_win = RioWindow(win.x0, win.y0, win.width, win.height)
                data = self.src.read(self.bands, window=rio_win)
                masks = self.src.read_masks(self.bands, window=rio_win)
            else:
                rio_win = self._source_window(win)
                data = self.src.read(
                    self.bands,
                    window=rio_win,
                    out_shape=(len(self.bands), *shape),
                    resampling=Resampling.bilinear if out_shape is None else Resampling.nearest,
                )
                masks = self.src.read_masks(
                    self.bands, window=rio_win, out_shape=(len(self.bands), *shape), resampling=Resampling.nearest
                )
        except (RasterioIOError, MemoryError) as exc:
            raise UserError(
                f"cannot read the pixels of {input_name(self.src.name)}: corrupt, truncated or "
                f"unreachable ({str(exc).splitlines()[0][:120]})"
            ) from None
        return data, masks.max(0) > 0

    def rgb(self, data: np.ndarray) -> np.ndarray:
        data = apply_stretch(data, self.limits)
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        return np.ascontiguousarray(data.transpose(1, 2, 0))

    def decimated_shape(self, long_side: int) -> tuple[int, int]:
        h, w = self.shape
        f = min(1.0, long_side / max(h, w))
        return max(1, round(h * f)), max(1, round(w * f))


def scene_limits(reader: _Reader) -> list[tuple[float, float]] | None:
    """Scene-wide per-band stretch limits from one read at most :data:`STATS_LONG_SIDE` long.

    A scene no larger than that is read whole, so its limits equal the whole-image ones of
    :func:`frugalvl.raster.read_image`; a larger one is read from its overviews (GDAL picks them) or
    decimated.
    """
    if np.dtype(reader.src.dtypes[reader.bands[0] - 1]) == np.uint8:
        return None
    h, w = reader.shape
    shape = reader.decimated_shape(STATS_LONG_SIDE)
    data, valid = reader.read(Window(0, h, 0, w), out_shape=None if shape == (h, w) else shape)
    return stretch_limits(data, valid, reader.stretch)


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------


def segment_tile(
    segmenter: Segmenter, reader: _Reader, tile: Tile, pixels: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Core labels (nodata 255), core float32 scores (None for an all-nodata tile) and whether the tile ran.

    ``pixels``: the tile's ``(data, valid)`` already read (by the prefetching thread), else read here.
    """
    data, valid = pixels if pixels is not None else reader.read(tile.read)
    core = (
        slice(tile.core.y0 - tile.read.y0, tile.core.y1 - tile.read.y0),
        slice(tile.core.x0 - tile.read.x0, tile.core.x1 - tile.read.x0),
    )
    dtype = label_dtype(len(segmenter.vocabulary.names))
    if not valid[core].any():
        return np.full((tile.core.height, tile.core.width), NODATA_LABEL, dtype=dtype), None, False
    scores = segmenter.class_scores(reader.rgb(data))
    labels = labels_from_scores(scores, segmenter.prob_thd, segmenter.bg_idx).numpy().astype(dtype)
    labels[~valid] = NODATA_LABEL
    return labels[core], scores.float().numpy()[:, core[0], core[1]], True


def _save_part(path: Path, labels: np.ndarray, scores: np.ndarray | None, save_probs: bool) -> None:
    arrays = {"labels": labels}
    if save_probs:
        c = labels.shape
        probs = np.zeros((0, *c), np.uint8) if scores is None else np.rint(np.clip(scores, 0, 1) * 255).astype(np.uint8)
        arrays["probs"] = probs
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle


def _load_part(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _gtiff_profile(reader: _Reader, count: int, dtype: str, nodata: int | None) -> dict[str, Any]:
    h, w = reader.shape
    profile = dict(
        driver="GTiff",
        height=h,
        width=w,
        count=count,
        dtype=dtype,
        tiled=True,
        blockxsize=COG_BLOCK,
        blockysize=COG_BLOCK,
        BIGTIFF="IF_SAFER",
    )
    if reader.src.crs is not None:
        profile.update(crs=reader.src.crs, transform=reader.transform)
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def _assemble(
    reader: _Reader,
    rows: list[list[Tile]],
    parts: Path,
    names: Sequence[str],
    outdir: Path,
    stem: str,
    save_probs: bool,
) -> tuple[Path, Path | None, Counter]:
    """Part files -> label COG (and score COG), one tile at a time."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window as RioWindow

    dtype = label_dtype(len(names))
    pixels: Counter = Counter()
    lab_tmp, prob_tmp = parts / "labels.tif", parts / "probs.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        lab = rasterio.open(lab_tmp, "w", **_gtiff_profile(reader, 1, dtype.name, NODATA_LABEL))
        prob = rasterio.open(prob_tmp, "w", **_gtiff_profile(reader, len(names), "uint8", None)) if save_probs else None
        try:
            for row in rows:
                for tile in row:
                    part = _load_part(parts / f"{tile.name}.npz")
                    win = RioWindow(tile.core.x0, tile.core.y0, tile.core.width, tile.core.height)
                    labels = part["labels"]
                    lab.write(labels, 1, window=win)
                    counts = np.bincount(labels[labels != NODATA_LABEL].ravel().astype(np.int64), minlength=len(names))
                    pixels.update({i: int(n) for i, n in enumerate(counts[: len(names)]) if n})
                    if prob is not None:
                        probs = part["probs"]
                        if probs.shape[0] == 0:
                            probs = np.zeros((len(names), *labels.shape), np.uint8)
                        prob.write(probs, window=win)
            lab.update_tags(CLASS_NAMES=_json(names))
            if dtype == np.uint8:
                lab.write_colormap(1, {i: tuple(int(v) for v in c) + (255,) for i, c in enumerate(palette(len(names)))})
            if prob is not None:
                prob.update_tags(CLASS_NAMES=_json(names), SCALE="uint8 score = round(255 × probability)")
                for i, n in enumerate(names, start=1):
                    prob.set_band_description(i, n)
        finally:
            lab.close()
            if prob is not None:
                prob.close()
        label_path = outdir / f"{stem}.tif"
        probs_path = outdir / f"{stem}_probs.tif" if save_probs else None
        if probs_path is not None:
            to_cog(prob_tmp, probs_path, "AVERAGE")
        to_cog(lab_tmp, label_path, "MODE")
    return label_path, probs_path, pixels


def _json(obj: Any) -> str:
    import json

    return json.dumps(list(obj))


def write_scene_overlay(
    reader: _Reader, label_path: Path, names: Sequence[str], out: Path, long_side: int = OVERLAY_LONG_SIDE
) -> Path:
    """``<stem>_overlay.png`` from overviews of the scene and of the label COG (at most ``long_side``)."""
    import rasterio
    from rasterio.enums import Resampling

    h, w = reader.shape
    shape = reader.decimated_shape(long_side)
    data, valid = reader.read(Window(0, h, 0, w), out_shape=None if shape == (h, w) else shape)
    with rasterio.open(label_path) as src:
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    nodata = ~valid | (labels == NODATA_LABEL)
    img = overlay_image(reader.rgb(data), labels.astype(np.int64), names, nodata_mask=nodata if nodata.any() else None)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def pixel_area(reader: _Reader) -> tuple[float, str]:
    """Area of one output pixel and its unit (m² for a metric projected CRS, px without a CRS)."""
    crs = reader.src.crs
    if crs is None:
        return 1.0, "px"
    t = reader.transform
    area = abs(t.a * t.e - t.b * t.d)
    if crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m"):
        return area, "m²"
    return area, "units²"


# ---------------------------------------------------------------------------------------------
# The scene
# ---------------------------------------------------------------------------------------------


def input_identity(source: str | os.PathLike) -> dict[str, Any]:
    """A URL, or a local file's name, size and modification time (a replaced input is not reused)."""
    name = str(source)
    if is_url(name):
        return {"url": name}
    st = os.stat(name)
    return {"name": Path(name).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def scene_record(
    segmenter: Segmenter, source: str | os.PathLike, settings: SceneSettings, parts: bool = False
) -> dict[str, Any]:
    """What a scene's outputs depend on: the segmenter, the input file and the tiling/reading settings.

    ``--save-probs`` only adds an output, so it is part of the record of unfinished tiles (whose part
    files hold the scores or not) but not of the finished outputs.
    """
    s = asdict(settings)
    s["overlap"] = settings.overlap_px
    if not parts:
        s.pop("save_probs")
    return make_record(segmenter, input=input_identity(source), scene=s)


def scene_finished(outdir: Path, stem: str, settings: SceneSettings) -> bool:
    """Whether every requested output of a scene exists (its record is checked separately)."""
    needed = [outdir / f"{stem}.tif", outdir / f"{stem}_overlay.png"]
    if settings.save_probs:
        needed.append(outdir / f"{stem}_probs.tif")
    if settings.vectors:
        needed.append(outdir / f"{stem}{VECTOR_FORMATS[settings.vectors]}")
    return all(p.exists() for p in needed)


def segment_scene(
    segmenter: Segmenter,
    source: str | os.PathLike,
    outdir: str | os.PathLike,
    settings: SceneSettings = SceneSettings(),
    overwrite: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> SceneResult | None:
    """Segment one scene tile by tile and write its outputs under ``outdir``.

    ``overrides`` are :class:`SceneSettings` fields (``tile=1024, vectors="gpkg"``). Returns None when
    the outputs exist already with the same record (nothing to do). A run killed at any point resumes at
    the first unfinished tile and writes the same bytes as an uninterrupted one.
    """
    import dataclasses

    import rasterio

    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    outdir = Path(outdir)
    stem = input_stem(source)
    if not is_url(str(source)) and not Path(source).is_file():
        raise UserError(f"image {source} does not exist: check the path")
    record = scene_record(segmenter, source, settings)
    rec_path = record_path(outdir, stem)
    parts = outdir / f".{stem}.parts"
    if not overwrite and check_record(rec_path, record, f"{stem}.tif") and scene_finished(outdir, stem, settings):
        shutil.rmtree(parts, ignore_errors=True)  # left by a run killed after its record was written
        return None
    if overwrite:
        rec_path.unlink(missing_ok=True)  # old outputs are no longer claimed by a record
    with rasterio.Env(**_GDAL_ENV):
        src = open_scene(source)
        with src:
            check_size(source, (src.height, src.width))
            reader = _Reader(
                src, select_bands(src.count, settings.bands, Path(input_name(source))), settings.scale, settings.stretch
            )
            _prepare_parts(parts, scene_record(segmenter, source, settings, parts=True), overwrite, stem)
            reader.limits = scene_limits(reader)
            rows = plan_tiles(*reader.shape, settings.tile, settings.overlap_px)
            ran, skipped = _run_tiles(segmenter, reader, rows, parts, settings.save_probs, progress, stem)
            names = list(segmenter.vocabulary.names)
            label_path, probs_path, pixels = _assemble(reader, rows, parts, names, outdir, stem, settings.save_probs)
            overlay = write_scene_overlay(reader, label_path, names, outdir / f"{stem}_overlay.png")
            area, unit = pixel_area(reader)
    vec_path = None
    if settings.vectors:
        from ..vectors import write_vectors

        vec_path = write_vectors(
            label_path,
            outdir / f"{stem}{VECTOR_FORMATS[settings.vectors]}",
            names,
            min_area=settings.min_area,
            simplify=settings.simplify,
        )
    write_record(rec_path, record)  # last: marks the scene done
    shutil.rmtree(parts, ignore_errors=True)
    outputs = [p for p in (label_path, probs_path, overlay, vec_path) if p is not None]
    return SceneResult(label_path, pixels, area, unit, probs_path, overlay, vec_path, ran, skipped, outputs)


def _prepare_parts(parts: Path, record: dict[str, Any], overwrite: bool, stem: str) -> None:
    """Create the part folder, or resume one made with the same record (else stop, or start afresh)."""
    from .records import first_difference

    rec = parts / "run.json"
    if parts.exists():
        old = read_record(rec)
        diff = None if old is None else first_difference(old, record)
        if old is not None and diff is None:
            n = len(list(parts.glob("r*_c*.npz")))
            log.info("%s: resuming, %d tile(s) already done", stem, n)
            return
        if old is not None and not overwrite:
            raise UserError(
                f"an unfinished run of {stem} in {parts.parent} used other settings ({diff}): "
                "use --overwrite to start it afresh, or another -o"
            )
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_json(rec, record)


def _run_tiles(
    segmenter: Segmenter,
    reader: _Reader,
    rows: list[list[Tile]],
    parts: Path,
    save_probs: bool,
    progress: bool,
    stem: str,
) -> tuple[int, int]:
    """Segment every tile without a part file; returns (tiles run, all-nodata tiles skipped)."""
    from tqdm.auto import tqdm

    tiles = [t for row in rows for t in row]
    todo = [t for t in tiles if not (parts / f"{t.name}.npz").exists()]
    ran = skipped = 0
    bar = tqdm(
        total=len(tiles),
        initial=len(tiles) - len(todo),
        desc=stem,
        unit="tile",
        disable=not progress,
        leave=False,
        position=1,
    )
    try:
        for tile, pixels in _prefetch(reader, todo):
            labels, scores, did_run = segment_tile(segmenter, reader, tile, pixels)
            _save_part(parts / f"{tile.name}.npz", labels, scores, save_probs)
            ran += did_run
            skipped += not did_run
            bar.update(1)
    finally:
        bar.close()
    return ran, skipped


def _prefetch(reader: _Reader, tiles: list[Tile], depth: int = PREFETCH_TILES) -> Iterator[tuple[Tile, Any]]:
    """Tiles with their pixels, read ahead by a background thread with its own dataset handle.

    Reading and decoding (GDAL releases the GIL) overlap the model; at most ``depth`` tiles wait in
    memory. Errors in the thread are raised here, at the tile that failed.
    """
    import queue
    import threading

    import rasterio

    if not tiles:
        return
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def work() -> None:
        try:
            with rasterio.Env(**_GDAL_ENV), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(reader.src.name) as src:
                    own = _Reader(src, reader.bands, reader.scale, reader.stretch, reader.limits)
                    for tile in tiles:
                        if stop.is_set():
                            return
                        q.put((tile, own.read(tile.read), None))
        except BaseException as exc:  # handed to the consumer
            q.put((None, None, exc))

    thread = threading.Thread(target=work, name="frugalvl-tile-reader", daemon=True)
    thread.start()
    try:
        for _ in tiles:
            tile, pixels, exc = q.get()
            if exc is not None:
                raise exc
            yield tile, pixels
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
