"""The training images: which files, and an endless, resumable stream of random crops of them.

docs/methods/simfeatup.md#training-images: the official training takes random 224 crops (reflect-padded when an image
is smaller) of unlabeled aerial images, in a shuffled order, one epoch by default.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..raster import IMAGE_SUFFIXES, read_image
from ..settings import FieldError

log = logging.getLogger(__name__)


def list_training_images(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from folders (searched recursively), single images, or text lists of paths.

    A text list has one path per line (relative paths are taken from the list's folder; blank lines
    and ``#`` comments are ignored). Listed files that are missing are kept: they are reported and
    skipped during training like unreadable ones.
    """
    found: list[Path] = []
    for spec in specs:
        p = Path(os.path.expanduser(str(spec)))
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise FieldError(
                    "images",
                    f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)}), also in subfolders: "
                    "point {images} to a folder of images",
                )
            found.extend(files)
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
        elif p.is_file():
            found.extend(_read_list(p))
        else:
            raise FieldError(
                "images", f"{{images}} {p} does not exist: give a folder of images or a text file listing them"
            )
    return found


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(
            f"cannot read the image list {path} ({type(exc).__name__}): give a text file with one image path per line"
        ) from None
    paths = [
        Path(os.path.expanduser(line.strip())) for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    if not paths:
        raise UserError(f"the image list {path} names no images: write one image path per line")
    return [q if q.is_absolute() else path.parent / q for q in paths]


def random_crop(rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size×size`` crop; a side shorter than ``size`` is first reflect-padded on both
    ends by the shortfall (as torchvision's ``RandomCrop(pad_if_needed=True)``)."""
    h, w = rgb.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        rgb = np.pad(rgb, ((ph, ph), (pw, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        h, w = rgb.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


@dataclass
class StreamPosition:
    """Where the image stream stands: epoch number and entries of that epoch's order consumed."""

    epoch: int = 0
    cursor: int = 0


class ImageStream:
    """Endless batches of random crops, reproducible from ``(seed, epoch, cursor)`` alone.

    Each epoch visits the images in a seeded random order; the crop of the ``i``-th visit depends
    only on ``(seed, epoch, i)``, so a resumed run sees exactly the crops an uninterrupted run
    would. Unreadable files are reported once (to ``report``, else as a logged warning), skipped and
    counted, never fatal. Process ``rank`` of ``world`` data-parallel processes takes the visits
    ``i ≡ rank (mod world)`` of every epoch: the processes' shares are disjoint and together the
    single-process order, and each resumes from its own position. Decoding runs in a few threads ahead of training (OpenCV and GDAL release
    the GIL).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        crop_size: int,
        seed: int = 0,
        workers: int = 2,
        report: Callable[[str], None] | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if not paths:
            raise FieldError("images", "no training images: give a folder of images or a list of them to {images}")
        if len(paths) < world:
            raise UserError(
                f"{len(paths)} training image(s) for {world} processes: give at least one image per process"
            )
        self.rank, self.world = rank, world
        self.paths = list(paths)
        self.crop_size = crop_size
        self.seed = seed
        self.workers = max(1, workers)
        self.report: Callable[[str], None] = report or log.warning
        self.skipped: dict[str, str] = {}

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))

    def load(self, epoch: int, i: int, index: int) -> tuple[np.ndarray | None, str]:
        """The crop of visit ``i`` of ``epoch``, or ``(None, reason)`` for an unreadable file."""
        try:
            rgb = read_image(self.paths[index]).rgb
            return random_crop(rgb, self.crop_size, np.random.default_rng([self.seed, epoch, i])), ""
        except Exception as exc:  # noqa: BLE001 - a bad file must never end a long run
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            return None, (reason.splitlines() or ["unknown error"])[0]

    def _skip(self, path: Path, reason: str) -> None:
        if str(path) not in self.skipped:
            self.skipped[str(path)] = reason
            self.report(f"skipped unreadable image {path} ({reason})")

    def _visits(self, start: StreamPosition) -> Iterator[tuple[int, int, int]]:
        epoch, cursor = start.epoch, min(start.cursor, len(self.paths))
        while True:
            order = self.order(epoch)
            for i in range(cursor, len(order)):
                if i % self.world == self.rank:
                    yield epoch, i, int(order[i])
            epoch, cursor = epoch + 1, 0

    def _position_after(self, epoch: int, i: int) -> StreamPosition:
        return StreamPosition(epoch, i + 1) if i + 1 < len(self.paths) else StreamPosition(epoch + 1, 0)

    def batches(
        self, batch_size: int, start: StreamPosition
    ) -> Generator[tuple[np.ndarray, StreamPosition], None, None]:
        """Yield ``([B, S, S, 3] uint8, position after the batch)`` forever, from ``start``."""
        crops: list[np.ndarray] = []
        failures_in_a_row = 0
        visits = self._visits(start)
        pending: deque[tuple[int, int, int, Future]] = deque()
        with ThreadPoolExecutor(self.workers) as pool:
            try:
                while True:
                    while len(pending) < self.workers + 2 * batch_size:  # decode ahead, in order
                        epoch, i, index = next(visits)
                        pending.append((epoch, i, index, pool.submit(self.load, epoch, i, index)))
                    epoch, i, index, future = pending.popleft()
                    crop, reason = future.result()
                    if crop is None:
                        self._skip(self.paths[index], reason)
                        failures_in_a_row += 1
                        if failures_in_a_row >= len(self.paths):
                            raise FieldError(
                                "images", f"none of the {len(self.paths)} training images can be read: check {{images}}"
                            )
                        continue
                    failures_in_a_row = 0
                    crops.append(crop)
                    if len(crops) == batch_size:
                        yield np.stack(crops), self._position_after(epoch, i)
                        crops = []
            finally:
                for *_, future in pending:
                    future.cancel()
