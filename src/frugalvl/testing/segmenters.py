"""A fast, deterministic stand-in segmenter for tiling, blending and vector tests (no model).

:class:`ColourSegmenter` scores each class by how close the locally averaged colour (a 7×7 box
filter, so results depend on a little context as a real model's do) is to a fixed class colour,
softmax over classes. It follows the :class:`frugalvl.segment.base.Segmenter` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..vocab import Vocabulary


@dataclass
class ColourSegmenter:
    vocabulary: Vocabulary
    prob_thd: float = 0.0
    bg_idx: int = 0
    temperature: float = 400.0
    calls: list[tuple[int, int]] = field(default_factory=list)  # (h, w) of every call

    @classmethod
    def with_classes(cls, names: str = "dark;red;green;blue;bright") -> ColourSegmenter:
        return cls(Vocabulary.parse(names))

    def identity(self) -> dict:
        return {
            "method": "colour-test",
            "classes": list(self.vocabulary.names),
            "temperature": self.temperature,
            "prob_thd": self.prob_thd,
            "bg_idx": self.bg_idx,
        }

    def centres(self) -> np.ndarray:
        n = len(self.vocabulary.names)
        base = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.float32)
        rng = np.random.default_rng(0)
        extra = rng.integers(0, 256, (max(0, n - len(base)), 3)).astype(np.float32)
        return np.concatenate([base, extra])[:n]

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        import cv2

        self.calls.append(rgb.shape[:2])
        smooth = cv2.blur(rgb.astype(np.float32), (7, 7), borderType=cv2.BORDER_REFLECT)
        d = ((smooth[None] - self.centres()[:, None, None, :]) ** 2).sum(-1)  # [C, H, W]
        return torch.from_numpy(-d / (self.temperature * 255.0)).float().softmax(0)


@dataclass
class SlowColourSegmenter(ColourSegmenter):
    """:class:`ColourSegmenter` that sleeps ``delay`` seconds per call (for kill-and-resume tests)."""

    delay: float = 0.2

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        import time

        time.sleep(self.delay)
        return super().class_scores(rgb)


def write_test_scene(
    path,
    height: int,
    width: int,
    dtype: str = "uint8",
    nodata_box: tuple | None = None,
    crs: str | None = "EPSG:32632",
    seed: int = 0,
    source=None,
) -> None:
    """A georeferenced GeoTIFF built from real crops (``source``: an RGB image file) or smooth random colours.

    ``nodata_box`` ``(y0, y1, x0, x1)`` is set to 0 with nodata 0; ``uint16`` data get a strong
    left-to-right brightness ramp (so per-tile stretching would differ from the scene-wide one).
    """
    import cv2
    import rasterio
    from rasterio.transform import from_origin

    if source is not None:
        decoded = cv2.imread(str(source))
        if decoded is None:
            raise FileNotFoundError(source)
        tile = decoded[..., ::-1]
        reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
        rgb = np.tile(tile, reps)[:height, :width]
    else:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3)).astype(np.uint8)
        rgb = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    data = rgb.transpose(2, 0, 1).astype(np.float64)
    if dtype == "uint16":
        ramp = np.linspace(1.0, 20.0, width)[None, None, :]
        data = data * 10 * ramp + 500
    data = data.astype(dtype)
    profile = dict(
        driver="GTiff", height=height, width=width, count=3, dtype=dtype, tiled=True, blockxsize=128, blockysize=128
    )
    if crs:
        profile.update(crs=crs, transform=from_origin(500000, 5600000, 0.5, 0.5))
    if nodata_box is not None:
        y0, y1, x0, x1 = nodata_box
        data[:, y0:y1, x0:x1] = 0
        profile["nodata"] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
