"""Readers for the 17 remote-sensing benchmarks, driven by each preset's ``[dataset]`` table.

One generic reader serves every dataset: the preset names the image and label folders (relative to
``--data-root``, the official configs' ``data/`` folder), their suffixes, and how labels are
stored. Images and labels pair by name as in mmseg: ``<img_dir>/<id><img_suffix>`` with
``<ann_dir>/<id><seg_map_suffix>``, ids found recursively and sorted.

Label decoding (mmseg semantics, docs/methods/evaluation.md#label-decoding):

* ``labels = "index"``: pixels store class indices; ``reduce_zero_label`` (LoveDA, Potsdam,
  Vaihingen) turns 0 into the ignore index and shifts every other label down by one.
* ``labels = "binary"``: 0/255 masks become 0/1 at ``binary_threshold`` (128; xBD uses 1, i.e.
  any non-zero is foreground). Masks already converted to 0/1 (the official ``*_cvt`` folders) are
  recognised because no value reaches the threshold; any non-zero value is then foreground, which
  also re-thresholds WBS-SI's lossy JPEG masks.
* ``rgb_palette``: datasets that ship colour-coded labels (ISPRS, UAVid, iSAID, UDD5) list
  ``[R, G, B, value]``; a three-band label file is mapped through it (other colours -> 0, as the
  official converters do). Single-band files are read as indices and need no palette.

Labels are read with Pillow (PNG, JPEG; palette PNGs give their indices, as mmseg's loader) or
rasterio (TIFF).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import UserError
from ..presets import list_presets, load_preset

Group = Literal["multiclass", "building", "road", "water", "change"]
GROUPS: tuple[Group, ...] = ("multiclass", "building", "road", "water", "change")
_TIFF = (".tif", ".tiff")


@dataclass(frozen=True)
class LabelEncoding:
    """How a dataset stores its labels."""

    kind: Literal["index", "binary"] = "index"
    reduce_zero_label: bool = False
    ignore_index: int = 255
    binary_threshold: int = 128
    rgb_palette: tuple[tuple[int, int, int, int], ...] = ()  # (R, G, B, stored value)


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark: where its files are and how to read them."""

    name: str
    title: str
    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_map_suffix: str
    label_names: tuple[str, ...]
    group: Group
    encoding: LabelEncoding
    split: tuple[str, ...] = ()  # evaluation ids, when the dataset uses a list (WBS-SI)
    img2_dir: str | None = None  # change detection: the second date's images, same names as in img_dir

    @property
    def change(self) -> bool:
        """A change-detection benchmark (two dates per sample, :mod:`frugalvl.evaluate.change`)."""
        return self.img2_dir is not None

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def binary(self) -> bool:
        """Binary benchmarks report the foreground IoU (class 1)."""
        return self.encoding.kind == "binary"

    def layout(self, data_root: str | os.PathLike = "DATA_ROOT") -> str:
        """The expected layout, in words, for error messages and docs."""
        root = Path(data_root)
        return (
            f"images {root / self.img_dir}/<id>{self.img_suffix} with labels "
            f"{root / self.ann_dir}/<id>{self.seg_map_suffix}"
        )


@dataclass(frozen=True)
class Sample:
    """One image-label pair. ``id`` is the image path below ``img_dir`` without its suffix."""

    id: str
    image: Path
    label: Path

    @property
    def stem(self) -> str:
        return Path(self.id).name


def list_datasets() -> list[str]:
    """Names of the presets that describe a benchmark (have a ``[dataset]`` table)."""
    return [name for name in list_presets() if "dataset" in load_preset(name)]


def dataset_spec(name: str) -> DatasetSpec:
    """The benchmark description of preset ``name``."""
    preset = load_preset(name)
    table: dict[str, Any] = preset.get("dataset") or {}
    if not table:
        raise UserError(f"preset {name!r} describes no benchmark layout: choose one of {', '.join(list_datasets())}")
    group = table.get("group", "multiclass")
    if group not in GROUPS:
        raise UserError(f"preset {name!r}: group {group!r} is not one of {', '.join(GROUPS)}")
    kind = table.get("labels", "index")
    if kind not in ("index", "binary"):
        raise UserError(f"preset {name!r}: labels = {kind!r} is not 'index' or 'binary'")
    encoding = LabelEncoding(
        kind=kind,
        reduce_zero_label=bool(preset.get("reduce_zero_label", False)),
        ignore_index=int(table.get("ignore_index", 255)),
        binary_threshold=int(table.get("binary_threshold", 128)),
        rgb_palette=tuple((int(row[0]), int(row[1]), int(row[2]), int(row[3])) for row in table.get("rgb_palette", ())),
    )
    return DatasetSpec(
        name=preset["name"],
        title=preset.get("title", preset["name"]),
        img_dir=table["img_dir"],
        ann_dir=table["ann_dir"],
        img_suffix=table["img_suffix"],
        seg_map_suffix=table["seg_map_suffix"],
        label_names=tuple(table["label_names"]),
        group=group,
        encoding=encoding,
        split=tuple(table.get("split", ())),
        img2_dir=table.get("img2_dir"),
    )


# ---------------------------------------------------------------------------------------------
# Finding samples
# ---------------------------------------------------------------------------------------------


def dataset_present(spec: DatasetSpec, data_root: str | os.PathLike) -> bool:
    """Whether the image folder exists (used by ``--all`` to pick datasets)."""
    return (Path(data_root) / spec.img_dir).is_dir()


def _image_ids(img_dir: Path, suffix: str) -> list[str]:
    """Ids of all images below ``img_dir`` (recursive, sorted, suffix matched case-insensitively)."""
    suffix_l = suffix.lower()
    ids = []
    for path in img_dir.rglob("*"):
        if path.name.lower().endswith(suffix_l) and path.is_file():
            rel = path.relative_to(img_dir).as_posix()
            ids.append(rel[: len(rel) - len(suffix)])
    return sorted(ids)


def _image_path(img_dir: Path, sample_id: str, suffix: str) -> Path:
    exact = img_dir / f"{sample_id}{suffix}"
    if exact.is_file():
        return exact
    for alt in (suffix.lower(), suffix.upper()):  # ".JPG" datasets sometimes arrive as ".jpg"
        if (img_dir / f"{sample_id}{alt}").is_file():
            return img_dir / f"{sample_id}{alt}"
    return exact


def find_samples(spec: DatasetSpec, data_root: str | os.PathLike) -> list[Sample]:
    """All image-label pairs of a dataset, in mmseg's order; one-line errors for missing data."""
    root = Path(data_root)
    img_dir, ann_dir = root / spec.img_dir, root / spec.ann_dir
    for folder in (img_dir, ann_dir):
        if not folder.is_dir():
            raise UserError(f"{spec.name}: folder {folder} not found; expected {spec.layout(root)}")
    ids = list(spec.split) if spec.split else _image_ids(img_dir, spec.img_suffix)
    if not ids:
        raise UserError(f"{spec.name}: no *{spec.img_suffix} images in {img_dir}; expected {spec.layout(root)}")
    samples = [Sample(i, _image_path(img_dir, i, spec.img_suffix), ann_dir / f"{i}{spec.seg_map_suffix}") for i in ids]
    _check_files(spec, samples, root)
    return samples


def _check_files(spec: DatasetSpec, samples: Sequence[Sample], root: Path) -> None:
    missing_images = [s.image for s in samples if not s.image.is_file()]
    if missing_images:
        raise UserError(
            f"{spec.name}: {len(missing_images)} of {len(samples)} listed images are missing "
            f"(first: {missing_images[0]}); expected {spec.layout(root)}"
        )
    missing_labels = [s.label for s in samples if not s.label.is_file()]
    if missing_labels:
        raise UserError(
            f"{spec.name}: {len(missing_labels)} of {len(samples)} images have no label "
            f"(first: {missing_labels[0]}); expected {spec.layout(root)}"
        )


# ---------------------------------------------------------------------------------------------
# Reading label maps
# ---------------------------------------------------------------------------------------------


def read_label_file(path: str | os.PathLike) -> np.ndarray:
    """The raw pixel values of a label or prediction file: ``H×W`` or ``H×W×3``."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF:
            import rasterio

            with rasterio.open(path) as src:
                data = src.read(list(range(1, min(src.count, 3) + 1)))
            array = data[0] if data.shape[0] == 1 else data.transpose(1, 2, 0)
        else:
            from PIL import Image

            with Image.open(path) as img:
                if img.mode in ("RGBA", "LA"):
                    img = img.convert(img.mode[:-1])  # drop alpha; keep the values
                array = np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise UserError(f"cannot read label file {path}: {exc.__class__.__name__}: {exc}") from None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array


def _from_palette(rgb: np.ndarray, palette: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """Map colours to stored values; unlisted colours become 0 (as the official converters)."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b, _ in palette], dtype=np.int64)
    values = np.array([v for *_, v in palette], dtype=np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    return np.where(keys[pos] == codes, values[pos], 0)


def _binarise(raw: np.ndarray, threshold: int) -> np.ndarray:
    if raw.max(initial=0) >= threshold:
        return (raw >= threshold).astype(np.uint8)
    return (raw >= 1).astype(np.uint8)  # already 0/1 (a *_cvt folder), possibly with JPEG noise


def _reduce_zero_label(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """mmseg: 0 -> ignore, others -1, the ignore index stays ignored."""
    out = labels.astype(np.int64) - 1
    out[labels == 0] = ignore_index
    out[labels == ignore_index] = ignore_index
    return out


def decode_label(raw: np.ndarray, encoding: LabelEncoding, path: str | os.PathLike = "label") -> np.ndarray:
    """Raw pixel values -> ``H×W`` int64 class indices (the ignore index where unlabelled)."""
    if raw.ndim == 3:
        if encoding.rgb_palette:
            raw = _from_palette(raw, encoding.rgb_palette)
        elif encoding.kind == "binary" or (raw == raw[..., :1]).all():
            raw = raw.max(axis=2)  # grey stored as RGB
        else:
            raise UserError(
                f"{path} is colour-coded but this dataset has no rgb_palette: give single-band class-index labels"
            )
    if encoding.kind == "binary":
        return _binarise(raw, encoding.binary_threshold).astype(np.int64)
    labels = raw.astype(np.int64)
    if encoding.reduce_zero_label:
        labels = _reduce_zero_label(labels, encoding.ignore_index)
    return labels


def read_label(path: str | os.PathLike, encoding: LabelEncoding) -> np.ndarray:
    """Read and decode one ground-truth label map."""
    return decode_label(read_label_file(path), encoding, path)


PREDICTION_SUFFIXES = (".png", ".tif", ".tiff")


def find_prediction(pred_dir: str | os.PathLike, sample: Sample) -> Path | None:
    """The prediction file of a sample: ``<id>`` or ``<stem>`` with a PNG or TIFF suffix (then, for change maps
    written by ``frugalvl change``, the same names ending in ``_change``)."""
    pred_dir = Path(pred_dir)
    for name in dict.fromkeys((sample.id, sample.stem, f"{sample.id}_change", f"{sample.stem}_change")):
        for suffix in PREDICTION_SUFFIXES:
            path = pred_dir / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def read_prediction(path: str | os.PathLike) -> np.ndarray:
    """A predicted label map: class indices ``0..C-1`` in one band (255 = no prediction)."""
    raw = read_label_file(path)
    if raw.ndim != 2:
        raise UserError(f"prediction {path} has {raw.shape[2]} bands: write class indices as a single-band PNG or TIFF")
    return raw.astype(np.int64)
