"""Exemplars on a run of inputs: the segmenter that uses them, input by input (docs/methods/exemplars.md).

:func:`plan_exemplars` reads the exemplar file once and places it on every input (map coordinates for
georeferenced inputs, pixel coordinates otherwise); its :class:`ExemplarPlan` gives the segmenter for each
input through the segmenter's ``with_exemplars`` (or ``with_prototypes``, also for a prototype file saved by
an earlier run). :func:`~frugalvl.segment.pipeline.segment_files` takes ``exemplars=`` and does this itself;
:func:`attach_exemplars` is the one-input shortcut (the app, one image in memory). Inputs
that go through the tiled scene path are read only where the exemplars are: the tile holding each one, as
the segmenter will see it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..raster import input_name, read_image, select_bands
from ..sources.bands import resolve_bands
from .exemplars import ExemplarFile, Exemplars, load_exemplar_file
from .exemplars_clip import Prototypes
from .routing import route_inputs
from .scene_read import SceneReader, gdal_env, open_scene, scene_limits
from .scene_settings import SceneSettings, SegmentRunSettings
from .scene_tiles import Tile, plan_tiles


@dataclass
class _Placed:
    """The exemplars of one input: in its full pixel frame, and per tile that holds some (frame, rgb)."""

    source: str
    full: Exemplars
    parts: list[tuple[Exemplars, np.ndarray]] = field(default_factory=list)
    index: int = 0


@dataclass
class ExemplarPlan:
    """What a run's exemplars make of a segmenter, input by input, without a model: SegEarth-OV's
    prototypes (the same for every input), or SegEarth-OV3's exemplars per input with every exemplar
    of the run (their classes extend every input's vocabulary alike) and, with ``reuse_tokens``, the
    box tokens encoded on the exemplars' tiles (on the CPU). It pickles, so the Ray engine computes it
    once and hands it to its workers."""

    prototypes: Prototypes | None = None
    inputs: dict[int, Exemplars] = field(default_factory=dict)
    run: Exemplars | None = None
    reuse_tokens: bool = False
    reused: dict[int, Any] = field(default_factory=dict)

    def apply(self, segmenter: Any, index: int = 0) -> Any:
        """``segmenter`` using the exemplars for input ``index`` of the run."""
        if self.prototypes is not None:
            return segmenter.with_prototypes(self.prototypes)
        assert self.run is not None
        own = self.inputs.get(index, Exemplars((), 0, 0, self.run.source))  # none here: text (and reused tokens)
        reused = self.reused if self.reuse_tokens else None
        return segmenter.with_exemplars(own, reuse_tokens=self.reuse_tokens, run=self.run, reused=reused)


def attach_exemplars(
    segmenter: Any,
    exemplars: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    settings: SegmentRunSettings = SegmentRunSettings(),
    reuse_tokens: bool = False,
    save_prototypes: str | os.PathLike | None = None,
) -> Any:
    """``segmenter`` using the exemplars of the file ``exemplars`` (or a prototype ``.npz``) on ``paths[0]``
    (:func:`plan_exemplars`; a run of several inputs takes one segmenter per input:
    ``segment_files(..., exemplars=...)``)."""
    plan = plan_exemplars(segmenter, exemplars, paths, settings, reuse_tokens, save_prototypes)
    if plan.prototypes is None and len(paths) != 1:
        raise UserError(
            f"SegEarth-OV3 exemplars prompt each input with its own boxes: attach them to one input, not {len(paths)} "
            "(segment_files takes exemplars= for several)"
        )
    return plan.apply(segmenter, 0)


def plan_exemplars(
    segmenter: Any,
    exemplars: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    settings: SegmentRunSettings = SegmentRunSettings(),
    reuse_tokens: bool = False,
    save_prototypes: str | os.PathLike | None = None,
) -> ExemplarPlan:
    """Read the exemplar file (or prototype ``.npz``) once and place it on every input: SegEarth-OV's
    prototypes come from every tile holding exemplars, once for the run; SegEarth-OV3 prompts each input
    with its own boxes (and, with ``reuse_tokens``, the tokens encoded on the exemplars' tiles elsewhere)."""
    path = Path(exemplars)
    if path.suffix.lower() == ".npz":
        if not hasattr(segmenter, "with_prototypes"):
            raise UserError(f"{path} is a prototype file, which only SegEarth-OV uses: give the exemplar vector file")
        return ExemplarPlan(prototypes=Prototypes.load(path))
    if not hasattr(segmenter, "with_exemplars"):
        raise UserError("this segmentation method takes no exemplars")
    if save_prototypes is not None and not hasattr(segmenter, "with_prototypes"):
        raise UserError("save_prototypes applies to SegEarth-OV only: leave it out for this method")
    file = load_exemplar_file(path)
    placed = place(file, paths, settings)
    if hasattr(segmenter, "with_prototypes"):  # SegEarth-OV: prototypes from every tile holding exemplars
        from .exemplars_clip import compute_prototypes

        parts = [compute_prototypes(segmenter, ex, rgb) for p in placed for ex, rgb in p.parts]
        prototypes = Prototypes.concat(parts)
        if save_prototypes is not None:
            prototypes.save(save_prototypes)
        return ExemplarPlan(prototypes=prototypes)
    items = tuple(e for p in placed for e in p.full.items)
    plan = ExemplarPlan(
        inputs={p.index: p.full for p in placed},
        run=Exemplars(items, 0, 0, placed[0].full.source),
        reuse_tokens=reuse_tokens,
    )
    if reuse_tokens:  # each class's tokens from the first tile holding a positive exemplar of it
        for p in placed:
            for ex, rgb in p.parts:
                tile = segmenter.with_exemplars(ex, rgb, reuse_tokens=True, run=plan.run)
                for c, (tokens, mask) in tile.exemplars.reused.items():
                    plan.reused.setdefault(c, (tokens.cpu(), mask.cpu()))
    return plan


def place(file: ExemplarFile, paths: Sequence[str | os.PathLike], settings: SegmentRunSettings) -> list[_Placed]:
    """The exemplars on each input holding some; every exemplar must lie in one input at least."""
    routes = route_inputs(paths, settings)
    placed, seen = [], set()
    for i, p in enumerate(paths):
        one = _place_scene(file, p, settings.scene) if routes[i] else _place_image(file, p, settings.scene)
        if one is not None:
            seen |= {e for e in range(len(file.names))} - set(one[1])
            if len(one[0].full):
                one[0].index = i
                placed.append(one[0])
    missing = [r for r in range(len(file.names)) if r not in seen]
    if missing:
        where = input_name(paths[0]) if len(paths) == 1 else f"all {len(paths)} inputs"
        raise file.outside_error(missing[0], where)
    return placed


def _place_image(file: ExemplarFile, path, scene: SceneSettings) -> tuple[_Placed, list[int]] | None:
    image = read_image(path, bands=scene.band_numbers, stretch=scene.stretch)
    h, w = image.rgb.shape[:2]
    full, outside = file.on_image(h, w, image.crs, image.transform, input_name(path))
    return _Placed(str(path), full, [(full, image.rgb)] if len(full) else []), outside


def _place_scene(file: ExemplarFile, path, scene: SceneSettings) -> tuple[_Placed, list[int]] | None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(gdal_env())
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="frugalvl-exemplars-")))
        src = stack.enter_context(open_scene(path, scene, work=work))  # cut to the area of interest, as segmented
        bands = select_bands(src.count, resolve_bands(src, scene.bands, input_name(path)), Path(input_name(path)))
        reader = SceneReader(src, bands, scene.scale, scene.stretch)
        h, w = reader.shape
        crs = src.crs
        full, outside = file.on_image(h, w, crs, reader.transform if crs is not None else None, input_name(path))
        if not len(full):
            return _Placed(str(path), full), outside
        reader.limits = scene_limits(reader)
        tiles = [t for row in plan_tiles(h, w, scene.tile, scene.overlap_px) for t in row]
        by_tile: dict[Tile, list[int]] = {}
        for k, e in enumerate(full.items):
            by_tile.setdefault(_holding_tile(tiles, e.box), []).append(k)
        parts = []
        for tile, ks in by_tile.items():
            data, _ = reader.read(tile.read)
            win = tile.read
            inside = full.inside(win.y0, win.y1, win.x0, win.x1)
            chosen = Exemplars(
                tuple(inside.items[j] for j, e in enumerate(_keys(full, win)) if e in ks),
                inside.height,
                inside.width,
                inside.source,
            )
            parts.append((chosen, reader.rgb(data)))
        return _Placed(str(path), full, parts), outside


def _keys(full: Exemplars, win) -> list[int]:
    """Indices in ``full`` of the exemplars :meth:`Exemplars.inside` keeps for ``win``, in its order."""
    return [
        k
        for k, e in enumerate(full.items)
        if e.box[0] < win.x1 and e.box[2] > win.x0 and e.box[1] < win.y1 and e.box[3] > win.y0
    ]


def _holding_tile(tiles: list[Tile], box: tuple[float, float, float, float]) -> Tile:
    """The tile whose read window holds most of the box (the first on ties)."""

    def overlap(t: Tile) -> float:
        r = t.read
        return max(0.0, min(box[2], r.x1) - max(box[0], r.x0)) * max(0.0, min(box[3], r.y1) - max(box[1], r.y0))

    return max(tiles, key=overlap)
