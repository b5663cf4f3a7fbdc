"""Photos read the same whole and in tiles: EXIF orientation and the alpha channel
(docs/reliability.md#labels-are-never-silently-wrong).

* **Orientation.** A photo (JPEG, PNG, WebP: not TIFF, whose own tags GDAL keeps) is segmented the way
  its EXIF ``Orientation`` tag says it is viewed, as OpenCV's ``IMREAD_COLOR`` shows it (the official
  loader): the whole-image path decodes without OpenCV's rotation and applies :func:`orient`, and the
  tiled path reads such a photo once through GDAL and applies the same :func:`orient` before cutting
  tiles (:func:`oriented_dataset`). Labels and overlays are in the oriented frame.
* **Alpha.** Pixels whose alpha is 0 in an image with an alpha channel (RGBA, grey + alpha) are nodata in
  both paths: GDAL's mask in the tiled path, :func:`alpha_nodata` in the whole-image path. The colour
  values under them still reach the model unchanged (the official loader drops alpha); only their labels
  become nodata. Transparency given by a palette entry (``tRNS`` of a palette PNG) is not alpha here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # what the EXIF orientation applies to
_ALPHA_MODES = ("RGBA", "LA", "RGBa", "La")


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF ``Orientation`` (1 to 8) of a photo; 1 (as stored) for other files and unreadable tags."""
    if Path(path).suffix.lower() not in PHOTO_SUFFIXES:
        return 1
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the header only
    try:
        with Image.open(path) as img:
            value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - no tag, or a file the reader will report
        return 1
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(array: np.ndarray, orientation: int, channels_first: bool = False) -> np.ndarray:
    """``array`` (``H×W[×C]``, or ``C×H×W`` with ``channels_first``) as viewed under an EXIF orientation."""
    if orientation == 1:
        return array
    a = np.moveaxis(array, 0, -1) if channels_first else array
    if orientation in (5, 6, 7, 8):  # a quarter turn: transpose first
        a = np.swapaxes(a, 0, 1)
        flips = {5: (), 6: (1,), 7: (0, 1), 8: (0,)}[orientation]
    else:
        flips = {2: (1,), 3: (0, 1), 4: (0,)}[orientation]
    for axis in flips:
        a = np.flip(a, axis)
    a = np.ascontiguousarray(a)
    return np.ascontiguousarray(np.moveaxis(a, -1, 0)) if channels_first else a


def alpha_nodata(path: str | os.PathLike, orientation: int = 1) -> np.ndarray | None:
    """``H×W`` bool, True where the image's alpha channel is 0 (oriented); None without an alpha channel."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in _ALPHA_MODES:
                return None
            alpha = np.asarray(img.getchannel("A" if "A" in img.mode else "a"))
    except Exception:  # noqa: BLE001 - the colour decoder reports unreadable files
        return None
    nodata = orient(alpha == 0, orientation)
    return nodata if nodata.any() else None


def oriented_dataset(src: Any, orientation: int) -> Any:
    """An open GDAL dataset of a photo, oriented: an in-memory copy (bands and mask) read like ``src``."""
    from rasterio.io import MemoryFile

    data = orient(src.read(), orientation, channels_first=True)
    mask = orient(src.dataset_mask(), orientation)
    memory = MemoryFile()
    profile = {"driver": "GTiff", "count": src.count, "dtype": src.dtypes[0], "height": data.shape[1]}
    with memory.open(**profile, width=data.shape[2]) as dst:
        dst.write(data)
        dst.write_mask(mask)
    src.close()
    return _Oriented(memory.open(), memory, src.name)


class _Oriented:
    """A dataset over a memory file that closes both, and keeps the photo's name."""

    def __init__(self, dataset: Any, memory: Any, name: str) -> None:
        self._dataset, self._memory, self.name = dataset, memory, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._dataset, attr)

    def reopen(self) -> Any:
        """Another handle on the same oriented pixels (a reader thread's own; closing it keeps this one)."""
        return self._memory.open()

    def close(self) -> None:
        self._dataset.close()
        self._memory.close()

    def __enter__(self) -> _Oriented:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
