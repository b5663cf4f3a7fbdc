"""Point clouds in and out: PLY (``plyfile``) and LAS/LAZ (``laspy``), read and written in chunks.

Readers expose the point count, the property names and chunked access, so a cloud of 100M points is
never held whole: coordinates are copied once into a float64 scratch file that the projection reads
chunk by chunk, and the labelled cloud is assembled in a file-backed array (PLY) or streamed (LAS).
The output keeps every input property; the input's own red, green, blue are kept as ``input_red``,
``input_green``, ``input_blue`` (or dropped, the official layout), the class colour takes their place
and ``pred_label`` (int16, -1 = seen by no photo) comes last (docs/methods/segearth_ov3_3d.md#outputs).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path

PLY_SUFFIXES = (".ply",)
LAS_SUFFIXES = (".las", ".laz")
COLOURS = ("red", "green", "blue")
LABEL = "pred_label"
# point formats without colour -> the nearest one with it (same LAS version)
_RGB_FORMAT = {0: 2, 1: 3, 4: 5, 6: 7, 9: 10}


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"reading point clouds needs {module}: pip install 'frugalvl[3d]'") from None


@dataclass
class Cloud:
    """An opened point cloud: ``kind`` ``ply`` or ``las``; PLY vertex data may be a read-only memory map."""

    path: Path
    kind: str
    count: int
    names: list[str]
    _vertex: Any = None  # plyfile PlyElement (PLY)
    comments: tuple[str, ...] = ()

    def chunks(self, names: Sequence[str], size: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(start, {name: values})`` for consecutive chunks of ``size`` points (LAS x/y/z scaled)."""
        if self.kind == "ply":
            data = self._vertex.data
            for start in range(0, self.count, size):
                part = data[start : start + size]
                yield start, {n: np.asarray(part[n]) for n in names}
            return
        laspy = _need("laspy")
        start = 0
        with laspy.open(self.path) as reader:
            for points in reader.chunk_iterator(size):
                yield start, {n: np.asarray(points[n]) for n in names}
                start += len(points)

    def xyz_chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start, part in self.chunks(("x", "y", "z"), size):
            yield start, np.stack([part["x"], part["y"], part["z"]], axis=1).astype(np.float64)

    def read_property(self, name: str, size: int = 2_000_000) -> np.ndarray:
        """One property of every point (for evaluation): ``size`` points are read at a time."""
        if name not in self.names:
            raise UserError(f"point cloud {self.path} has no property {name!r}: it has {', '.join(self.names)}")
        return np.concatenate([part[name] for _, part in self.chunks((name,), size)] or [np.empty(0)])


def open_cloud(path: str | os.PathLike) -> Cloud:
    """Open a PLY, LAS or LAZ file; one line naming the file when it is missing, unreadable or has no x, y, z."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"point cloud {path} does not exist: give a .ply, .las or .laz file")
    suffix = path.suffix.lower()
    if suffix in PLY_SUFFIXES:
        cloud = _open_ply(path)
    elif suffix in LAS_SUFFIXES:
        cloud = _open_las(path)
    else:
        raise UserError(f"point cloud {path}: unknown format {suffix or '(no suffix)'}: give a .ply, .las or .laz file")
    missing = [c for c in "xyz" if c not in cloud.names]
    if missing:
        raise UserError(
            f"point cloud {path} has no {', '.join(missing)} property: give a cloud with x, y, z coordinates"
        )
    if cloud.count == 0:
        raise UserError(f"point cloud {path} holds no points")
    return cloud


def _open_ply(path: Path) -> Cloud:
    plyfile = _need("plyfile")
    try:
        ply = plyfile.PlyData.read(str(path), mmap="r")
    except Exception as exc:  # plyfile raises several parse errors, and OSError/ValueError
        raise UserError(f"point cloud {path} is not a readable PLY file ({exc})") from None
    if "vertex" not in ply:
        raise UserError(f"point cloud {path} has no vertex element: give a PLY point cloud")
    vertex = ply["vertex"]
    return Cloud(path, "ply", vertex.count, [p.name for p in vertex.properties], vertex, tuple(ply.comments))


def _open_las(path: Path) -> Cloud:
    laspy = _need("laspy")
    try:
        with laspy.open(path) as reader:
            header = reader.header
            names = list(header.point_format.dimension_names)
            count = int(header.point_count)
    except Exception as exc:  # laspy raises LaspyException and OSError
        raise UserError(f"point cloud {path} is not a readable LAS/LAZ file ({exc})") from None
    return Cloud(path, "las", count, ["x", "y", "z", *names], None)


SCRATCH_PREFIX = ".label-3d-"  # the coordinate scratch folders; a killed run's are removed by the next


@contextlib.contextmanager
def xyz_scratch(cloud: Cloud, folder: str | os.PathLike, size: int) -> Iterator[np.ndarray]:
    """The cloud's coordinates as a float64 ``N×3`` array backed by a temporary file in ``folder``."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=SCRATCH_PREFIX) as tmp:
        xyz = np.lib.format.open_memmap(Path(tmp) / "xyz.npy", mode="w+", dtype=np.float64, shape=(cloud.count, 3))
        for start, chunk in cloud.xyz_chunks(size):
            xyz[start : start + len(chunk)] = chunk
        xyz.flush()
        try:
            yield xyz
        finally:
            del xyz


def output_path(cloud: Cloud, outdir: str | os.PathLike, output_format: str = "auto") -> Path:
    suffix = cloud.path.suffix.lower() if output_format == "auto" else f".{output_format}"
    return Path(outdir) / f"{cloud.path.stem}_labels{suffix}"


def colour_table(colours: np.ndarray, unlabelled: Sequence[int] = (51, 51, 51)) -> np.ndarray:
    """``[K + 1, 3]`` uint8: row 0 for label -1, row ``k + 1`` for class ``k``."""
    return np.concatenate([np.array([unlabelled], dtype=np.uint8), np.asarray(colours, dtype=np.uint8)])


def _kept_names(names: Sequence[str], input_colours: str) -> list[tuple[str, str]]:
    """``(input name, output name)`` of the input properties the output keeps, in input order."""
    kept = []
    for name in names:
        if name == LABEL:
            continue  # an earlier run's prediction is replaced
        if name in COLOURS:
            renamed = f"input_{name}"
            if input_colours == "keep" and renamed not in names:
                kept.append((name, renamed))
            continue  # dropped (official), or the class colour of an earlier run whose input colours are kept
        kept.append((name, name))
    return kept


def write_labelled(
    cloud: Cloud,
    out: Path,
    labels: np.ndarray,
    colours: np.ndarray,
    input_colours: str = "keep",
    class_names: Sequence[str] = (),
    size: int = 2_000_000,
) -> Path:
    """Write the input's points with their class colour and ``pred_label`` (atomically)."""
    table = colour_table(colours)
    if out.suffix.lower() in PLY_SUFFIXES:
        _write_ply(cloud, out, labels, table, input_colours, class_names, size)
    else:
        _write_las(cloud, out, labels, table, input_colours, size)
    return out


def _write_ply(cloud, out: Path, labels, table, input_colours, class_names, size) -> None:
    import json

    plyfile = _need("plyfile")
    if cloud.kind == "ply":
        source = {p.name: p for p in cloud._vertex.properties}
        in_dtype = cloud._vertex.data.dtype
        lists = {n: (p.len_dtype, p.val_dtype) for n, p in source.items() if hasattr(p, "len_dtype")}
    else:
        in_dtype, lists = None, {}
    kept = _kept_names([n for n in cloud.names if cloud.kind == "ply" or n not in ("X", "Y", "Z")], input_colours)
    if cloud.kind == "ply":
        fields = [(new, in_dtype[old].newbyteorder("=")) for old, new in kept]
    else:
        fields = [(new, _las_field_dtype(cloud, old)) for old, new in kept]
    fields += [(c, np.dtype("u1")) for c in COLOURS] + [(LABEL, np.dtype("<i2"))]
    dtype = np.dtype([(n, "O" if n in lists else d) for n, d in fields])
    comments = [c for c in cloud.comments if not c.startswith("class_names ")]
    if class_names:
        comments.append("class_names " + json.dumps(list(class_names)))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".label-3d-") as tmp:
        data: np.ndarray = (
            np.empty(cloud.count, dtype)
            if lists
            else np.memmap(Path(tmp) / "vertex.dat", dtype=dtype, mode="w+", shape=(cloud.count,))
        )
        for start, part in cloud.chunks([old for old, _ in kept], size):
            stop = start + len(part["x"])
            for old, new in kept:
                data[new][start:stop] = part[old]
        for start in range(0, cloud.count, size):
            lab = labels[start : start + size]
            rgb = table[lab.astype(np.int64) + 1]
            for i, c in enumerate(COLOURS):
                data[c][start : start + size] = rgb[:, i]
            data[LABEL][start : start + size] = lab
        element = plyfile.PlyElement.describe(
            data,
            "vertex",
            len_types={n: lt for n, (lt, _) in lists.items()},
            val_types={n: vt for n, (_, vt) in lists.items()},
        )
        with atomic_path(out) as tmp_out:
            plyfile.PlyData([element], text=False, byte_order="<", comments=comments).write(str(tmp_out))
        del element, data


def _las_field_dtype(cloud: Cloud, name: str) -> np.dtype:
    if name in ("x", "y", "z"):
        return np.dtype("f8")
    start, part = next(cloud.chunks((name,), 1))
    return part[name].dtype.newbyteorder("=")


def _write_las(cloud, out: Path, labels, table, input_colours, size) -> None:
    if cloud.kind != "las":
        raise UserError(f"point cloud {cloud.path} is a PLY: LAS/LAZ output needs a LAS/LAZ input (write PLY instead)")
    laspy = _need("laspy")
    with laspy.open(cloud.path) as reader:
        header = reader.header
        fmt = header.point_format
        dims = list(fmt.dimension_names)
        has_rgb = "red" in dims
        out_header = laspy.LasHeader(version=header.version, point_format=fmt.id if has_rgb else _RGB_FORMAT[fmt.id])
        out_header.offsets, out_header.scales = header.offsets, header.scales
        out_header.global_encoding = header.global_encoding
        out_header.vlrs = [v for v in header.vlrs if type(v).__name__ != "ExtraBytesVlr"]
        extra = [d for d in fmt.extra_dimension_names if d != LABEL]
        kept_rgb = input_colours == "keep" and has_rgb and "input_red" not in dims
        params = [laspy.ExtraBytesParams(d, fmt.dimension_by_name(d).dtype) for d in extra]
        if kept_rgb:
            params += [laspy.ExtraBytesParams(f"input_{c}", np.uint16) for c in COLOURS]
        params.append(laspy.ExtraBytesParams(LABEL, np.int16))
        out_header.add_extra_dims(params)
        copied = [d for d in dims if d not in COLOURS and d != LABEL]
        with atomic_path(out) as tmp_out:
            with laspy.open(tmp_out, mode="w", header=out_header, do_compress=out.suffix.lower() == ".laz") as writer:
                start = 0
                for points in reader.chunk_iterator(size):
                    n = len(points)
                    record = laspy.ScaleAwarePointRecord.zeros(n, header=out_header)
                    for d in copied:
                        record[d] = points[d]
                    if kept_rgb:
                        for c in COLOURS:
                            record[f"input_{c}"] = points[c]
                    lab = labels[start : start + n]
                    rgb = table[lab.astype(np.int64) + 1].astype(np.uint16) * 257  # 8 -> 16 bits
                    for i, c in enumerate(COLOURS):
                        record[c] = rgb[:, i]
                    record[LABEL] = lab
                    writer.write_points(record)
                    start += n
