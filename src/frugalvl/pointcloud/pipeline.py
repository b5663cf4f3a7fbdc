"""Photos + camera block + point cloud -> a labelled point cloud (docs/methods/segearth_ov3_3d.md).

1. Every chosen photo is segmented whole into ``OUT/masks/<stem>.png`` with a ``<stem>_run.json`` record
   (the same record ``frugalvl segment`` writes), so a rerun skips photos already done.
2. The cloud's coordinates are copied once into a float64 scratch file; each photo in turn is read and
   every chunk of points is projected into it and votes for its pixel's class (with ``zbuffer``
   visibility, a first pass over the chunks fills the photo's depth buffer).
3. The weighted argmax is written with the input's properties to ``OUT/<cloud stem>_labels.<ext>``,
   with a per-class point count (``<cloud stem>_labels.csv``) and a record (``<cloud stem>_labels_run.json``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, check_outputs, claim_outputs, write_json, writing_into
from ..settings import settings_identity
from .cameras import Camera, read_block, select_cameras
from .io import SCRATCH_PREFIX, Cloud, open_cloud, output_path, write_labelled, xyz_scratch
from .projection import project
from .settings import Label3DSettings
from .votes import DepthBuffer, Votes

log = logging.getLogger(__name__)
MASKS = "masks"


@dataclass
class Label3DResult:
    output: Path
    class_names: list[str]
    counts: dict[int, int]  # label (-1 = unseen) -> points
    photos_used: list[str] = field(default_factory=list)
    photos_skipped: list[str] = field(default_factory=list)
    segmented: int = 0

    def table(self) -> str:
        total = sum(self.counts.values()) or 1
        names = [*self.class_names, "(seen by no photo)"]
        width = max(len(n) for n in names)
        lines = [f"{'class':<{width}}  {'points':>12}  {'share':>7}"]
        for label, name in [*enumerate(self.class_names), (-1, names[-1])]:
            n = self.counts.get(label, 0)
            lines.append(f"{name:<{width}}  {n:>12d}  {100 * n / total:>6.2f}%")
        lines.append(
            f"{len(self.photos_used)} photos voted ({self.segmented} segmented now), {len(self.photos_skipped)} skipped"
        )
        return "\n".join(lines)

    def csv(self) -> str:
        rows = ["label,class,points"] + [f"{i},{n},{self.counts.get(i, 0)}" for i, n in enumerate(self.class_names)]
        return "\n".join([*rows, f"-1,,{self.counts.get(-1, 0)}"]) + "\n"


def find_photos(cameras: list[Camera], photos_dir: Path) -> tuple[list[tuple[Camera, Path]], list[str]]:
    """Each camera's photo in ``photos_dir``; photos missing or of another size than their photogroup are skipped."""
    from ..raster import raster_shape

    if not photos_dir.is_dir():
        raise UserError(f"photo folder {photos_dir} is not a folder: give the folder holding the block's photos")
    found, skipped = [], []
    for cam in cameras:
        path = photos_dir / cam.name
        if not path.is_file():
            log.warning("photo %s named in the camera block is not in %s: skipped", cam.name, photos_dir)
            skipped.append(cam.name)
            continue
        shape = raster_shape(path)
        g = cam.group
        if shape is not None and tuple(shape) != (g.height, g.width):
            log.warning(
                "photo %s is %d×%d px but its photogroup says %d×%d: skipped (give the photos the block was made from)",
                cam.name,
                shape[1],
                shape[0],
                g.width,
                g.height,
            )
            skipped.append(cam.name)
            continue
        found.append((cam, path))
    return found, skipped


def label_map_path(masks: Path, stem: str) -> Path | None:
    for suffix in (".png", ".tif"):
        if (masks / f"{stem}{suffix}").is_file():
            return masks / f"{stem}{suffix}"
    return None


def segment_photos(
    segmenter: Any, photos: list[Path], masks: Path, save_probs: bool, overwrite: bool, progress: bool
) -> int:
    """Segment each photo whole unless its label map (and scores when needed) and matching record exist."""
    from tqdm.auto import tqdm

    from ..raster import input_name, read_image, write_labels, write_probs
    from ..segment.pipeline import segment_image
    from ..segment.records import check_record, make_record, output_names, record_path, write_record
    from ..segment.scene import input_identity

    done = 0
    for path in tqdm(photos, desc="segment", unit="photo", disable=not progress):
        stem = path.stem
        record = make_record(segmenter, input=input_identity(path), read={"bands": None, "stretch": "percentile"})
        finished = label_map_path(masks, stem) is not None and (
            not save_probs or (masks / f"{stem}_probs.npy").is_file()
        )
        if (
            not overwrite
            and finished
            and check_record(record_path(masks, stem), record, f"the label map of {input_name(path)}")
        ):
            continue
        image = read_image(path)
        result = segment_image(segmenter, image)
        claim_outputs([masks / n for n in output_names(stem)])  # frugalvl's from here: a killed run's are resumed
        record_path(masks, stem).unlink(missing_ok=True)
        if save_probs:
            write_probs(masks, stem, result.scores)
        write_labels(masks, image, result.labels, segmenter.vocabulary.names)
        write_record(record_path(masks, stem), record)  # last: marks it done
        done += 1
    return done


def read_label_map(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def vote(
    xyz: np.ndarray,
    cameras: list[tuple[Camera, Path]],
    masks: Path,
    n_classes: int,
    settings: Label3DSettings,
    progress: bool = False,
) -> tuple[Votes, list[str]]:
    """Every photo votes for the points that project into it; returns the votes and the photos that voted."""
    from tqdm.auto import tqdm

    votes = Votes(len(xyz), n_classes, settings.votes, n_photos=len(cameras))
    chunk, used = settings.chunk_points, []
    for cam, photo in tqdm(cameras, desc="vote", unit="photo", disable=not progress):
        found = label_map_path(masks, photo.stem)
        if found is None:
            continue
        labels = read_label_map(found)
        g = cam.group
        if labels.shape != (g.height, g.width):
            log.warning("label map %s is not %d×%d px as its photogroup: skipped", found, g.width, g.height)
            continue
        scores = np.load(masks / f"{photo.stem}_probs.npy", mmap_mode="r") if settings.votes == "score" else None
        buffer = None
        if settings.visibility == "zbuffer":
            buffer = DepthBuffer(g.height, g.width, settings.zbuffer_scale, settings.zbuffer_tolerance)
            for start in range(0, len(xyz), chunk):
                buffer.add(project(xyz[start : start + chunk], cam, settings.min_depth))
        for start in range(0, len(xyz), chunk):
            proj = project(xyz[start : start + chunk], cam, settings.min_depth)
            if buffer is not None:
                keep = buffer.visible(proj)
                proj.index, proj.row, proj.col = proj.index[keep], proj.row[keep], proj.col[keep]
            if scores is not None:
                votes.add_scores(start + proj.index, np.asarray(scores[:, proj.row, proj.col]).T)
            else:
                votes.add_labels(start + proj.index, labels[proj.row, proj.col])
        used.append(cam.name)
    return votes, used


def check_cloud_and_block(
    cameras_path: str | os.PathLike, cloud_path: str | os.PathLike, settings: Label3DSettings
) -> tuple[list[Camera], Cloud]:
    """Read the camera block and open the cloud (before any model loads)."""
    cameras = select_cameras(read_block(cameras_path), settings.every, settings.max_images)
    cloud = open_cloud(cloud_path)
    if settings.output_format in ("las", "laz") and cloud.kind != "las":
        raise UserError(f"point cloud {cloud.path} is a PLY: LAS/LAZ output needs a LAS/LAZ input (write PLY instead)")
    return cameras, cloud


def check_label_outputs(
    cameras: list[Camera],
    cloud: Cloud,
    photos_dir: str | os.PathLike,
    cameras_path: str | os.PathLike,
    outdir: str | os.PathLike,
    settings: Label3DSettings,
    overwrite: bool = False,
) -> None:
    """Refuse outputs that are an input or existing files no frugalvl run recorded (unless ``overwrite``): the
    labelled cloud, its table and record, each photo's label map; each is claimed right before it is written
    (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make)."""
    from ..segment.records import output_names, read_record, recorded_outputs

    outdir, masks = Path(outdir), Path(outdir) / MASKS
    inputs = [Path(photos_dir), Path(cameras_path), cloud.path]
    out = output_path(cloud, outdir, settings.output_format)
    own = [out, out.with_name(f"{out.stem}.csv"), out.with_name(f"{out.stem}_run.json")]
    old = read_record(own[2])
    check_outputs(own, inputs, own if isinstance(old, dict) and "segmenter" in old else [], overwrite, "outdir")
    stems = sorted({Path(cam.name).stem for cam in cameras})
    recorded = [p for stem in stems for p in recorded_outputs(masks, stem)]
    check_outputs([masks / n for stem in stems for n in output_names(stem)], inputs, recorded, overwrite, "outdir")


@contextlib.contextmanager
def writing_labels(
    cameras: list[Camera],
    cloud: Cloud,
    photos_dir: str | os.PathLike,
    cameras_path: str | os.PathLike,
    outdir: str | os.PathLike,
    settings: Label3DSettings,
    overwrite: bool = False,
) -> Iterator[Path]:
    """``outdir`` proven writable and locked for the ``with`` block, cleared of what killed runs left (their
    temporaries, their coordinate scratch folders), its outputs checked."""
    with writing_into(outdir, option="outdir") as folder:
        for scratch in folder.glob(f"{SCRATCH_PREFIX}*"):  # the lock is ours: no other run is using them
            shutil.rmtree(scratch, ignore_errors=True)
        check_label_outputs(cameras, cloud, photos_dir, cameras_path, folder, settings, overwrite)
        yield folder


def label_cloud(
    segmenter: Any,
    photos_dir: str | os.PathLike,
    cameras_path: str | os.PathLike,
    cloud_path: str | os.PathLike,
    outdir: str | os.PathLike,
    settings: Label3DSettings = Label3DSettings(),
    colours: np.ndarray | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Label3DResult:
    """The whole transfer; ``colours`` ``[C, 3]`` uint8 per class (default: :func:`frugalvl.raster.palette`).
    ``outdir`` is locked for the call, and its outputs checked (:func:`writing_labels`)."""
    names = list(segmenter.vocabulary.names)
    if settings.class_weights is not None and len(settings.class_weights) != len(names):
        raise UserError(
            f"class_weights has {len(settings.class_weights)} values for {len(names)} classes: give one per class"
        )
    cameras, cloud = check_cloud_and_block(cameras_path, cloud_path, settings)
    chosen, skipped = find_photos(cameras, Path(photos_dir))
    if not chosen:
        raise UserError(
            f"none of the block's {len(cameras)} chosen photos is usable in {photos_dir}: see the lines above"
        )
    with writing_labels(cameras, cloud, photos_dir, cameras_path, outdir, settings, overwrite) as checked:
        return _label(segmenter, chosen, skipped, cloud, cameras_path, checked, settings, colours, overwrite, progress)


def _label(segmenter, chosen, skipped, cloud, cameras_path, outdir: Path, settings, colours, overwrite, progress):
    from ..raster import palette
    from ..segment.scene import input_identity

    names = list(segmenter.vocabulary.names)
    masks = outdir / MASKS
    masks.mkdir(exist_ok=True)
    segmented = segment_photos(segmenter, [p for _, p in chosen], masks, settings.votes == "score", overwrite, progress)
    with xyz_scratch(cloud, outdir, settings.chunk_points) as xyz:
        votes, used = vote(xyz, chosen, masks, len(names), settings, progress)
    labels = votes.predict(settings.class_weights, settings.chunk_points)
    del votes
    out = output_path(cloud, outdir, settings.output_format)
    table = palette(names) if colours is None else np.asarray(colours, dtype=np.uint8)
    claim_outputs([out, out.with_name(f"{out.stem}.csv"), out.with_name(f"{out.stem}_run.json")])
    write_labelled(cloud, out, labels, table, settings.input_colours, names, settings.chunk_points)
    values, counts = np.unique(labels, return_counts=True)
    result = Label3DResult(out, names, {int(v): int(c) for v, c in zip(values, counts)}, used, skipped, segmented)
    with atomic_path(out.with_name(f"{out.stem}.csv")) as tmp:
        tmp.write_text(result.csv())
    from ..segment.records import segmenter_identity

    write_json(
        out.with_name(f"{out.stem}_run.json"),
        {
            "segmenter": segmenter_identity(segmenter),
            "settings": settings_identity(settings),
            "cloud": input_identity(cloud.path),
            "cameras": input_identity(cameras_path),
            "photos": used,
        },
    )
    return result
