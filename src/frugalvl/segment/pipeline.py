"""The path from files to results, the same for every segmenter.

``file --read--> RasterImage --segmenter.class_scores--> [C,H,W] --labels_from_scores--> labels
--write--> <stem>.tif|.png, <stem>_overlay.png, <stem>_probs.npy``

Finished inputs (whose outputs exist) are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..raster import RasterImage, read_image, write_labels, write_overlay, write_probs
from .base import Segmenter, labels_from_scores


@dataclass
class SegmentResult:
    """What one image produced."""

    image: RasterImage
    scores: np.ndarray   # C×H×W float32
    labels: np.ndarray   # H×W int64


@dataclass
class RunSummary:
    class_names: list[str]
    pixels: Counter = field(default_factory=Counter)
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def table(self) -> str:
        total = sum(self.pixels.values()) or 1
        width = max(len(n) for n in self.class_names)
        lines = [f"{'class':<{width}}  {'pixels':>12}  {'share':>7}"]
        for i, name in enumerate(self.class_names):
            lines.append(f"{name:<{width}}  {self.pixels[i]:>12d}  {100 * self.pixels[i] / total:>6.2f}%")
        lines.append(f"{len(self.done)} segmented, {len(self.skipped)} already done, {len(self.failed)} failed")
        return "\n".join(lines)


def segment_image(segmenter: Segmenter, image: RasterImage) -> SegmentResult:
    """Run a segmenter on one image already in memory."""
    scores = segmenter.class_scores(image.rgb)
    labels = labels_from_scores(scores, segmenter.prob_thd, segmenter.bg_idx)
    return SegmentResult(image, scores.float().numpy(), labels.numpy())


def _finished(outdir: Path, path: Path, save_probs: bool) -> bool:
    """Whether an input's outputs are all there (the label file is written last)."""
    stem = path.stem
    has_labels = (outdir / f"{stem}.tif").exists() or (outdir / f"{stem}.png").exists()
    has_probs = (outdir / f"{stem}_probs.npy").exists() or not save_probs
    return has_labels and has_probs and (outdir / f"{stem}_overlay.png").exists()


def segment_files(segmenter: Segmenter, paths: Sequence[Path], outdir: str | Path, save_probs: bool = False,
                  overwrite: bool = False, bands: Sequence[int] | None = None, stretch: str = "percentile",
                  progress: bool = True) -> RunSummary:
    """Segment image files and write their outputs under ``outdir``."""
    from tqdm.auto import tqdm

    outdir = Path(outdir)
    stems = Counter(p.stem for p in paths)
    clashes = [s for s, n in stems.items() if n > 1]
    if clashes:
        raise UserError(f"inputs share the output name(s) {', '.join(clashes)}: segment them into different -o folders")
    outdir.mkdir(parents=True, exist_ok=True)
    names = segmenter.vocabulary.names
    summary = RunSummary(names)
    bar = tqdm(paths, desc="segment", unit="img", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.name, refresh=False)
        if not overwrite and _finished(outdir, path, save_probs):
            summary.skipped.append(path)
            continue
        try:
            image = read_image(path, bands=bands, stretch=stretch)
        except UserError as exc:
            summary.failed.append((path, str(exc)))
            print(f"frugalvl: skipped: {exc}", file=sys.stderr)
            continue
        result = segment_image(segmenter, image)
        if save_probs:
            write_probs(outdir, image.stem, result.scores)
        write_overlay(outdir, image, result.labels, names)
        write_labels(outdir, image, result.labels, names)  # last: its presence marks the image done
        valid = result.labels if image.nodata_mask is None else result.labels[~image.nodata_mask]
        counts = np.bincount(valid.ravel(), minlength=len(names))
        summary.pixels.update({i: int(c) for i, c in enumerate(counts)})
        summary.done.append(path)
    return summary
