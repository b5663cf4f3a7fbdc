"""Change runs: SegEarth-OV3 change detection between two opened images, in the app's run worker.

A change run writes both dates as 8-bit GeoTIFFs (the pixels the page shows, as a segmentation run does:
:func:`.outputs.write_area`), checks that they line up (:func:`frugalvl.change.run.check_pairs`, when the
run is asked for) and hands them to :func:`frugalvl.change.run.detect_files`, the function behind
``frugalvl change``: the same detector, record, change GeoTIFF, overlay and, with ``semantic``, the
per-date labels, from→to raster, polygons and transition table. The detector is built from the hub's
SAM 3 and text cache (:meth:`.engine.ModelHub.segmenter`); its segmenter is wrapped so that each date
scored counts as progress and Cancel is checked before each. The change and from→to maps stay in memory
for the map tiles.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..change.settings import ChangeSettings
from ..errors import UserError
from ..windows import Window
from .engine import ModelHub
from .images import Level, OpenedImage, build_pyramid
from .jobs import Run, RunPhases

log = logging.getLogger(__name__)

METHOD = "segearth-ov3"  # the one method that detects change
DEFAULT_PRESET = "levir_cd"  # as `frugalvl change`: the official LEVIR-CD classes and settings
CHANGE_COLOUR = (255, 32, 32)  # the change layer (the overlay PNG's outline colour)
FILES = {  # download kind -> output suffix after the before image's stem
    "change": "_change.tif",
    "overlay": "_change_overlay.png",
    "record": "_change_run.json",
    "polygons": "_change.gpkg",
    "transitions": "_transitions.csv",
    "fromto": "_fromto.tif",
    "before_labels": "_before_labels.tif",
    "after_labels": "_after_labels.tif",
}


def whole(image: OpenedImage) -> Window:
    return Window(0, image.height, 0, image.width)


@dataclass
class ChangeRun(Run):
    """A run over two dates: ``image`` is the first (its grid is the result's), ``after`` the second."""

    after: OpenedImage | None = None
    change: ChangeSettings = field(default_factory=ChangeSettings)
    semantic: bool = False
    inputs: tuple[Path, Path] | None = None  # both dates as written for the library
    fromto: list[Level] = field(default_factory=list)  # pyramid of the from→to codes (semantic)
    fromto_colours: np.ndarray | None = None  # [1 + C², 3]
    summary: dict[str, Any] = field(default_factory=dict)
    transitions: list[dict[str, Any]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(kind="change", after=self.after.id if self.after else None, semantic=self.semantic)
        if self.state == "done":
            out.update(summary=self.summary, transitions=self.transitions)
        return out

    def execute(self, hub: ModelHub) -> None:
        """Detect change between the two written dates (in the worker thread)."""
        from ..change import ChangeDetector
        from ..change.pairs import Pair
        from ..change.run import detect_files
        from ..change.settings import ChangeOutputSettings
        from ..progress import reporting

        if self.inputs is None:
            raise RuntimeError(f"change run {self.id} has no inputs")
        self.state = "loading"
        self.check()
        phases = DatePhases(self)
        with reporting(phases):  # "loading SAM 3 ...", "encoding 2 text prompts ..."
            segmenter = hub.segmenter(self.options)
        self.phase = ""
        self.check()
        detector = ChangeDetector(ObservedDates(segmenter, self), self.change)  # type: ignore[arg-type]
        outdir = self.folder / "out"
        outdir.mkdir(parents=True, exist_ok=True)
        tile = self.tile if max(self.height_width) > self.tile else None  # one tile: the CLI's whole-pair result
        self.state = "running"
        with reporting(phases):
            summary = detect_files(
                detector, [Pair(*self.inputs)], outdir, overwrite=True, progress=phases,
                settings=ChangeOutputSettings(tile=tile, semantic=self.semantic),
            )  # fmt: skip
        if summary.failed:
            raise UserError(summary.failed[0][1])
        self.check()
        self.state = "writing"
        self.done = self.total
        self.collect(outdir, list(segmenter.vocabulary.names))

    @property
    def height_width(self) -> tuple[int, int]:
        return self.window.height, self.window.width

    def collect(self, outdir: Path, names: list[str]) -> None:
        """The run's files, maps and tables from what :func:`detect_files` wrote."""
        import rasterio

        from ..change.semantic import pixel_area, transition_names
        from ..raster import palette

        stem = self.image.image.stem
        found = {kind: outdir / f"{stem}{suffix}" for kind, suffix in FILES.items()}
        self.files = {kind: path for kind, path in found.items() if path.exists()}
        self.class_names = list(names)
        self.colours = palette(names)  # the classes' colours, as in the label files
        with rasterio.open(self.files["change"]) as src:
            self.labels = src.read(1)
            area, unit = pixel_area(src.transform if src.crs is not None else None, src.crs)
        self.pyramid = build_pyramid(self.labels[None], self.transform, smooth=False)
        changed, valid = int((self.labels == 1).sum()), int((self.labels != 255).sum())
        self.summary = {
            "changed_pixels": changed,
            "valid_pixels": valid,
            "share": round(100 * changed / max(valid, 1), 2),
            "ha": round(changed * area / 1e4, 4) if unit == "m²" else None,
        }
        if "fromto" in self.files:
            with rasterio.open(self.files["fromto"]) as src:
                codes = src.read(1)
            self.fromto = build_pyramid(codes[None], self.transform, smooth=False)
            self.fromto_colours = palette(transition_names(names))
            self.transitions = read_transitions(self.files["transitions"], names, self.fromto_colours)

    def layer(self, name: str) -> tuple[list[Level], np.ndarray]:
        """The pyramid of layer ``change`` or ``fromto`` and its lookup table (RGBA per value; 0 and 255
        transparent)."""
        if name == "change":  # 0 no change (transparent), 1 change
            levels, colours = self.pyramid, np.array([(0, 0, 0), CHANGE_COLOUR], np.uint8)
        elif name == "fromto" and self.fromto and self.fromto_colours is not None:
            levels, colours = self.fromto, self.fromto_colours
        else:
            raise UserError(f"layer {name[:40]!r}: choose change" + (" or fromto" if self.fromto else ""))
        lut = np.zeros((256, 4), np.uint8)
        lut[: len(colours), :3] = colours
        lut[1 : len(colours), 3] = 255
        return levels, lut


def read_transitions(path: Path, names: list[str], colours: np.ndarray) -> list[dict[str, Any]]:
    """The rows of the transition CSV, each with its from→to code and that code's colour on the map."""
    index = {n: i for i, n in enumerate(names)}
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            code = 1 + index[row["from_class"]] * len(names) + index[row["to_class"]]
            rows.append(
                {
                    "code": code,
                    "from": row["from_class"],
                    "to": row["to_class"],
                    "pixels": int(row["pixels"]),
                    "ha": round(float(row["area_ha"]), 4) if row.get("area_ha") else None,
                    "colour": "#" + bytes(int(v) for v in colours[code]).hex(),
                }
            )
    return rows


class DatePhases(RunPhases):
    """The library's phases in the status line; the scene's tile bar sets the run's total (two dates a
    tile), which :class:`ObservedDates` counts."""

    def start(self, unit: str, total: int | None, name: str = "", done: int = 0, level: int = 0):
        if unit == "tile" and total:
            self.run.total = 2 * total
        return super().start(unit, total, name, done, level)


class ObservedDates:
    """The detector's segmenter seen through the app: each date scored (``query_scores``) checks for Cancel
    first and counts as progress after; everything else is the wrapped segmenter's."""

    def __init__(self, segmenter: Any, run: Run) -> None:
        self._segmenter = segmenter
        self._run = run

    def query_scores(self, rgb: np.ndarray, on_vision: Any = None):
        self._run.check()
        self._run.phase = ""
        scores = self._segmenter.query_scores(rgb, on_vision=on_vision)
        self._run.done = min(self._run.done + 1, self._run.total)
        return scores

    def __getattr__(self, name: str):
        return getattr(self._segmenter, name)
