"""Runs: one segmentation of an opened image (whole or a window of it) in a background worker.

A run writes its area as an 8-bit GeoTIFF (:func:`.outputs.write_area`) and segments it with
:func:`frugalvl.segment.scene.segment_scene`, the function behind ``frugalvl segment --tile``: the
same tiles, blending, label COG, score COG, overlay and GeoPackage. The segmenter is wrapped so that
each tile counts as progress, and Cancel is checked before each tile and after each batch of the
model's windows. The labels stay in memory for the map tiles; a
click reads the class scores of one pixel from the score COG.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..windows import Window
from .engine import ModelHub, RunOptions
from .images import Level, OpenedImage, build_pyramid

log = logging.getLogger(__name__)


class RunCancelled(Exception):
    """Raised inside a run when the user pressed Cancel."""


@dataclass
class Run:
    id: str
    image: OpenedImage
    options: RunOptions
    window: Window
    folder: Path
    tile: int = 1024
    state: str = "queued"  # queued, loading, running, writing, done, failed, cancelled
    phase: str = ""  # what the run does now, in words (loading CLIP ..., encoding 240 text prompts ...)
    done: int = 0
    total: int = 1
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    class_names: list[str] = field(default_factory=list)
    colours: np.ndarray | None = None
    labels: np.ndarray | None = None
    pyramid: list[Level] = field(default_factory=list)
    scores_path: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    areas: list[dict] = field(default_factory=list)
    exemplars: Path | None = None  # the drawn exemplars in the area's frame (app/exemplars.py)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._cancel.set()
        if self.state == "queued":
            self.state = "cancelled"

    def check(self) -> None:
        if self._cancel.is_set():
            raise RunCancelled()

    @property
    def palette(self) -> np.ndarray:
        """The class colours ``[C, 3]`` of a finished run."""
        if self.colours is None:
            raise RuntimeError(f"run {self.id} has no result yet")
        return self.colours

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def transform(self):
        t = self.image.image.transform
        if t is None:
            return None
        from affine import Affine

        return t * Affine.translation(self.window.x0, self.window.y0)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "notes": self.notes,
            "seconds": self.seconds,
            "phase": self.phase,
            "window": [self.window.x0, self.window.y0, self.window.x1, self.window.y1],
            "image": self.image.id,
            "method": self.options.method,
        }
        if self.state == "done" and self.colours is not None:
            out["classes"] = [
                {"index": i, "name": n, "colour": "#" + bytes(int(v) for v in self.colours[i]).hex()}
                for i, n in enumerate(self.class_names)
            ]
            out["areas"] = self.areas
            out["files"] = sorted(self.files)
            if not self.image.image.georeferenced:  # CRS.Simple: lat = -row, lng = col
                out["bounds"] = [[-self.window.y1, self.window.x0], [-self.window.y0, self.window.x1]]
        return out

    def scores_at(self, row: int, col: int) -> dict[str, Any]:
        """Every class's score at a pixel of the image (row, col in image pixels)."""
        w = self.window
        inside = w.y0 <= row < w.y1 and w.x0 <= col < w.x1
        if not inside or self.scores_path is None or self.labels is None:
            return {"inside": False, "row": row, "col": col}
        import rasterio
        from rasterio.windows import Window as RioWindow

        with rasterio.open(self.scores_path) as src:  # uint8 score COG: score × 255
            scores = src.read(window=RioWindow(col - w.x0, row - w.y0, 1, 1))[:, 0, 0].astype(np.float32) / 255
        label = int(self.labels[row - w.y0, col - w.x0])
        return {
            "inside": True,
            "row": row,
            "col": col,
            "label": label,
            "label_name": self.class_names[label] if label < len(self.class_names) else "no data",
            "scores": [{"name": n, "score": round(float(s), 4)} for n, s in zip(self.class_names, scores)],
        }


class RunWorker:
    """One background thread running queued runs in order (the models are shared; one run at a time)."""

    def __init__(self, hub: ModelHub) -> None:
        self.hub = hub
        self._queue: queue.Queue[Run | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="frugalvl-app-runs", daemon=True)
        self._thread.start()

    def submit(self, run: Run) -> None:
        self._queue.put(run)

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            if run.finished:
                continue
            start = time.perf_counter()
            try:
                own = getattr(run, "execute", None)  # a run of another kind (a change run) executes itself
                if own is not None:
                    own(self.hub)
                else:
                    execute(run, self.hub)
                run.state = "done"
            except RunCancelled:
                run.state = "cancelled"
            except UserError as exc:
                run.error, run.state = str(exc), "failed"
            except Exception as exc:  # noqa: BLE001 - the server keeps running; the page shows the error
                log.exception("run %s failed", run.id)
                run.error, run.state = f"internal error: {exc.__class__.__name__}: {exc}", "failed"
            run.seconds = round(time.perf_counter() - start, 3)


class RunPhases:
    """A progress reporter that writes the library's phases (model loading, prompt encoding, assembling)
    into the run's status line; its bars are the run's own tile count."""

    TEXT = {"load": "loading", "encode": "encoding", "assemble": "assembling the label map of",
            "overlay": "drawing the overlay of", "vectors": "writing the polygons of", "plan": "planning"}  # fmt: skip

    def __init__(self, run: Run) -> None:
        self.run = run

    def start(self, unit: str, total: int | None, name: str = "", done: int = 0, level: int = 0):
        from ..progress import NullReporter

        return NullReporter().start(unit, total, name, done, level)

    def phase(self, name: str, item: str = "") -> None:
        self.run.phase = f"{self.TEXT.get(name, name)} {item}".strip() + " …"

    def message(self, text: str) -> None:
        log.info("%s", text)


class ObservedSegmenter:
    """A segmenter seen through the app: each ``class_scores`` call (one scene tile) checks for Cancel
    first and counts as progress after; everything else is the wrapped segmenter's."""

    def __init__(self, segmenter: Any, run: Run) -> None:
        self._segmenter = segmenter
        self._run = run

    def class_scores(self, rgb: np.ndarray, valid: np.ndarray | None = None):
        from ..segment.base import scores_of

        self._run.check()
        self._run.phase = ""  # the tiles now: the status line counts them
        # the segmenter reports progress after each batch of windows: Cancel is checked there too
        scores = scores_of(self._segmenter, rgb, progress=lambda done, total: self._run.check(), valid=valid)
        self._run.done = min(self._run.done + 1, self._run.total)
        return scores

    def in_window(self, window: Window) -> ObservedSegmenter:
        """The segmenter for one scene tile (exemplars move to its frame), still observed."""
        at = getattr(self._segmenter, "in_window", None)
        return self if at is None else ObservedSegmenter(at(window), self._run)

    def __getattr__(self, name: str):
        return getattr(self._segmenter, name)


def execute(run: Run, hub: ModelHub) -> None:
    """Segment the run's area through :func:`frugalvl.segment.scene.segment_scene` (in the worker thread)."""
    import importlib.util

    import rasterio

    from ..progress import reporting
    from ..raster import palette
    from ..segment.scene import SceneSettings, plan_tiles, segment_scene
    from .outputs import write_area

    run.state = "loading"
    run.check()
    phases = RunPhases(run)
    with reporting(phases):  # the status line says "loading CLIP ...", "encoding 240 text prompts ..."
        segmenter = hub.segmenter(run.options)
    run.phase = ""
    run.check()
    source = write_area(run.folder / "in", run.image, run.window)
    vectors = "gpkg" if importlib.util.find_spec("geopandas") else None
    if vectors is None:
        run.notes.append(
            "no vector download: geopandas is missing (pip install geopandas; frugalvl lists it as a core dependency)"
        )
    settings = SceneSettings(tile=run.tile, save_probs=True, vectors=vectors)
    if run.exemplars is not None:  # drawn exemplars: the library's exemplar API, as `segment --exemplars`
        from ..segment.exemplars_run import attach_exemplars
        from ..segment.scene_settings import SegmentRunSettings

        run.phase = "placing the exemplars …"
        segmenter = attach_exemplars(segmenter, run.exemplars, [source], SegmentRunSettings(settings, tile_all=True))
        run.phase = ""
    run.total = sum(
        len(row) for row in plan_tiles(run.window.height, run.window.width, settings.tile, settings.overlap_px)
    )
    run.state = "running"
    result = segment_scene(
        ObservedSegmenter(segmenter, run), source, run.folder / "out", settings, overwrite=True, progress=phases
    )
    if result is None:  # only when outputs exist already, which overwrite=True rules out
        raise RuntimeError(f"segment_scene wrote nothing for {source}")
    run.check()
    run.state = "writing"
    run.done = run.total
    names = list(segmenter.vocabulary.names)
    run.class_names, run.colours = names, palette(names)  # the label files' colour table
    files = {"labels": result.labels, "overlay": result.overlay, "vectors": result.vectors}
    run.files = {kind: path for kind, path in files.items() if path is not None}
    run.scores_path = result.probs
    with rasterio.open(result.labels) as src:
        run.labels = src.read(1)
    pixel_ha = result.pixel_area / 1e4 if result.area_unit == "m²" else None
    run.areas = class_areas(result.pixels, names, pixel_ha)
    run.pyramid = build_pyramid(run.labels[None], run.transform, smooth=False)


def class_areas(pixels: dict[int, int], names: list[str], pixel_ha: float | None) -> list[dict]:
    """Pixels, share and area (ha, when the pixel size is known in metres) of each class."""
    counts = [int(pixels.get(i, 0)) for i in range(len(names))]
    total = max(sum(counts), 1)
    return [
        {
            "name": n,
            "pixels": c,
            "share": round(100 * c / total, 2),
            "ha": None if pixel_ha is None else round(c * pixel_ha, 2),
        }
        for n, c in zip(names, counts)
    ]
