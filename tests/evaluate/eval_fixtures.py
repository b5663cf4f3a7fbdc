"""Helpers for the evaluation tests: small datasets in the official folder layouts, fake methods.

``real_tiles`` cuts the real labelled Potsdam, Vaihingen and LoveDA crops of ``../shared/data/rs``
(mmsegmentation's test data, not freely licensed; tests using them carry the ``shared_data`` marker).
The other datasets' fixtures are generated in each dataset's layout and label encoding.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from frugalvl.evaluate.datasets import dataset_spec
from frugalvl.vocab import Vocabulary
from tests.conftest import shared_file

REAL_CROPS = {  # dataset -> (image, label) in ../shared/data/rs
    "potsdam": ("potsdam_2_10_0_0_512_512.png", "potsdam_2_10_0_0_512_512_label.png"),
    "vaihingen": ("vaihingen_area1_0_0_512_512.png", "vaihingen_area1_0_0_512_512_label.png"),
    "loveda": ("loveda_0.png", "loveda_0_label.png"),
}


def write_array(path: Path, array: np.ndarray) -> None:
    """Write an image or raw label file in the format its suffix names (TIFF via rasterio)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        bands = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            height=array.shape[0],
            width=array.shape[1],
            count=bands.shape[0],
            dtype=array.dtype.name,
        ) as dst:
            dst.write(bands)
    else:
        fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        Image.fromarray(array).save(path, format=fmt)


def write_pair(root: Path, dataset: str, sample_id: str, rgb: np.ndarray, raw_label: np.ndarray) -> None:
    """One image and its raw label file, where the dataset's preset expects them."""
    spec = dataset_spec(dataset)
    write_array(root / spec.img_dir / f"{sample_id}{spec.img_suffix}", rgb)
    write_array(root / spec.ann_dir / f"{sample_id}{spec.seg_map_suffix}", raw_label)


def real_tiles(dataset: str, tile: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The real crop of ``dataset`` cut into ``tile``-sized (id, rgb, raw label) pieces."""
    image_name, label_name = REAL_CROPS[dataset]
    rgb = np.asarray(Image.open(shared_file(image_name)).convert("RGB"))
    label = np.asarray(Image.open(shared_file(label_name)))
    tiles = []
    for y in range(0, label.shape[0], tile):
        for x in range(0, label.shape[1], tile):
            tiles.append(
                (f"{dataset}_{y}_{x}", rgb[y : y + tile, x : x + tile].copy(), label[y : y + tile, x : x + tile].copy())
            )
    return tiles


class FakeSegmenter:
    """A deterministic stand-in for a real method: the class is picked from the pixel's brightness."""

    def __init__(self, classes: list[str], prob_thd: float = 0.0, bg_idx: int = 0) -> None:
        self.vocabulary = Vocabulary.from_lines(classes)
        self.prob_thd = prob_thd
        self.bg_idx = bg_idx
        self.calls = 0

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        self.calls += 1
        n = len(self.vocabulary)
        labels = torch.from_numpy(rgb.astype(np.int64).sum(-1) // 97 % n)
        return torch.nn.functional.one_hot(labels, n).permute(2, 0, 1).float()


def fake_method_module(segmenters: list, fail_after: int | None = None):
    """A stand-in for a method module (``load_models``, ``segmenter_from_cli``) that records what it was given."""

    def segmenter_from_cli(args, models=None):
        from frugalvl.presets import method_settings

        classes = method_settings(args.preset, "segearth_ov")["classes"]
        segmenter = FakeSegmenter(classes)
        if fail_after is not None:
            segmenter = InterruptingSegmenter(segmenter, fail_after)
        segmenters.append((args, segmenter))
        return segmenter

    def settings_from_cli(args):
        from frugalvl.segment.segearth_ov import SegEarthOVSettings

        return SegEarthOVSettings(prob_thd=args.prob_thd or 0.0)

    def model_identity(args):
        from frugalvl.identity import weights_identity

        return {"clip": weights_identity(getattr(args, "clip", None))}

    return SimpleNamespace(
        load_models=lambda args: None,
        segmenter_from_cli=segmenter_from_cli,
        settings_from_cli=settings_from_cli,
        model_identity=model_identity,
    )


class InterruptingSegmenter:
    """Wraps a segmenter and raises KeyboardInterrupt on call ``fail_after + 1`` (a killed run)."""

    def __init__(self, inner: FakeSegmenter, fail_after: int) -> None:
        self.inner, self.fail_after = inner, fail_after
        self.vocabulary, self.prob_thd, self.bg_idx = inner.vocabulary, inner.prob_thd, inner.bg_idx

    @property
    def calls(self) -> int:
        return self.inner.calls

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        if self.inner.calls >= self.fail_after:
            raise KeyboardInterrupt
        return self.inner.class_scores(rgb)
