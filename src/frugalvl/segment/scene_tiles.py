"""The tile grid of a scene, segmenting one tile, and the part files that hold finished tiles.

* Tiles are ``tile×tile`` windows on mmseg's grid (stride ``tile - overlap``, the last one shifted back
  to the border, :func:`frugalvl.windows.spans`), so every tile has the same size and goes through
  the method's own protocol exactly as a crop would (SegEarth-OV: 448 long side, 224/112 windows).
* Blending: each pixel is taken from the tile whose centre is nearest (a centre-weighted blend with a
  box weight, :func:`frugalvl.windows.core_spans`): it keeps at least half an overlap of context on
  every side, never mixes in a prediction made at a tile's border, and makes each tile's result final
  on its own, which is what lets a killed run resume by tile with identical bytes.
* Parts: each finished tile is one small compressed ``<name>.npz`` in the scene's part folder
  ``<outdir>/.<stem>.parts/``, whose ``run.json`` records what the tiles were made with.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, write_json
from ..raster import label_dtype, nodata_label
from ..windows import Window, core_spans, spans
from .base import Segmenter, labels_from_scores, scores_in_window
from .records import first_difference, read_record
from .scene_read import SceneReader

log = logging.getLogger(__name__)


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


def segment_tile(
    segmenter: Segmenter, reader: SceneReader, tile: Tile, pixels: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Core labels (nodata :func:`~frugalvl.raster.nodata_label`), core float32 scores (None for an all-nodata tile) and whether the tile ran.

    ``pixels``: the tile's ``(data, valid)`` already read (by the prefetching thread), else read here.
    """
    data, valid = pixels if pixels is not None else reader.read(tile.read)
    core = (
        slice(tile.core.y0 - tile.read.y0, tile.core.y1 - tile.read.y0),
        slice(tile.core.x0 - tile.read.x0, tile.core.x1 - tile.read.x0),
    )
    dtype, nodata = label_dtype(len(segmenter.vocabulary.names)), nodata_label(len(segmenter.vocabulary.names))
    if not valid[core].any():
        return np.full((tile.core.height, tile.core.width), nodata, dtype=dtype), None, False
    wanted = np.zeros_like(valid)  # only the core's labels are kept: windows that cannot change them are skipped
    wanted[core] = valid[core]
    scores = scores_in_window(segmenter, reader.rgb(data), tile.read, valid=wanted)
    labels = labels_from_scores(scores, segmenter.prob_thd, segmenter.bg_idx).numpy().astype(dtype)
    labels[~valid] = nodata
    return labels[core], scores.float().numpy()[:, core[0], core[1]], True


def save_part(path: Path, labels: np.ndarray, scores: np.ndarray | None, save_probs: bool) -> None:
    """One finished tile's part file (atomic): its core labels, and uint8 scores when ``save_probs``."""
    arrays = {"labels": labels}
    if save_probs:
        c = labels.shape
        probs = np.zeros((0, *c), np.uint8) if scores is None else np.rint(np.clip(scores, 0, 1) * 255).astype(np.uint8)
        arrays["probs"] = probs
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle


def load_part(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def parts_folder(outdir: Path, stem: str) -> Path:
    """Where a scene's part files wait until it is assembled."""
    return Path(outdir) / f".{stem}.parts"


def part_path(parts: Path, tile: Tile) -> Path:
    return Path(parts) / f"{tile.name}.npz"


def part_reads_back(path: Path, tile: Tile) -> bool:
    """Whether a part file holds its tile's core labels (a full disk or a crash can leave one that does not)."""
    try:
        part = load_part(path)
    except FileNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - any unreadable part is recomputed, never trusted
        log.info("part %s does not read back: its tile is segmented again", path.name)
        path.unlink(missing_ok=True)
        return False
    labels = part.get("labels")
    if labels is None or labels.shape != (tile.core.height, tile.core.width):
        log.info("part %s does not hold its tile: its tile is segmented again", path.name)
        path.unlink(missing_ok=True)
        return False
    return True


def pending_tiles(parts: Path, tiles: list[Tile]) -> list[Tile]:
    """The tiles without a part file that reads back (in grid order; broken parts are removed)."""
    return [t for t in tiles if not part_reads_back(part_path(parts, t), t)]


def prepare_parts(parts: Path, record: dict[str, Any], overwrite: bool, stem: str) -> None:
    """Create the part folder, or resume one made with the same record (else stop, or start afresh)."""
    rec = parts / "run.json"
    if parts.exists():
        old = read_record(rec)
        diff = None if old is None else first_difference(old, record)
        if old is not None and diff is None and not overwrite:
            n = len(list(parts.glob("r*_c*.npz")))
            log.info("%s: resuming, %d tile(s) already done", stem, n)
            return
        if old is not None and not overwrite:
            raise UserError(
                f"an unfinished run of {stem} in {parts.parent} used other settings ({diff}): "
                "use overwrite=True to start it afresh, or another outdir"
            )
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_json(rec, record)
