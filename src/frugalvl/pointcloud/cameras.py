"""The camera block: ContextCapture / iTwin Capture "BlocksExchange" XML, as the official 3D step reads it.

Per photogroup: image size, focal length in pixels, principal point and the Brown distortion
coefficients K1, K2, K3, P1, P2 (aspect ratio and skew are taken as 1 and 0, as the official code
does). Per photo with a pose: the photo's file name, the rotation matrix ``R`` (world -> camera) and
the camera centre ``C`` (docs/methods/segearth_ov3_3d.md#camera-block).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

_ROTATION = [f"M_{i}{j}" for i in range(3) for j in range(3)]


@dataclass(frozen=True)
class Photogroup:
    width: int
    height: int
    focal: float  # pixels, one for both axes
    ppx: float
    ppy: float
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    p1: float = 0.0
    p2: float = 0.0


@dataclass(frozen=True)
class Camera:
    name: str  # the photo's file name (the base name of its ImagePath)
    group: Photogroup
    rotation: np.ndarray  # 3×3 float64, world -> camera
    centre: np.ndarray  # 3 float64, world coordinates

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def photo_name(image_path: str) -> str:
    """The base name of an ImagePath, split on ``/`` and on Windows' ``\\`` (the official code splits on ``/`` only)."""
    return image_path.replace("\\", "/").rsplit("/", 1)[-1]


def _number(node: ET.Element, path: str, source: Path, what: str, default: float | None = None) -> float:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        if default is not None:
            return default
        raise UserError(f"camera block {source}: {what} has no {path}: export the block with it (BlocksExchange XML)")
    try:
        return float(found.text)
    except ValueError:
        raise UserError(f"camera block {source}: {what} {path} is {found.text!r}, not a number") from None


def _photogroup(node: ET.Element, source: Path, index: int) -> Photogroup:
    what = f"photogroup {index + 1}"
    if node.find("FocalLengthPixels") is None:
        raise UserError(
            f"camera block {source}: {what} gives no FocalLengthPixels (a focal length in mm is not supported): "
            "export the block with the focal length in pixels"
        )
    num = lambda path, default=None: _number(node, path, source, what, default)  # noqa: E731
    return Photogroup(
        width=int(num("ImageDimensions/Width")),
        height=int(num("ImageDimensions/Height")),
        focal=num("FocalLengthPixels"),
        ppx=num("PrincipalPoint/x"),
        ppy=num("PrincipalPoint/y"),
        **{k.lower(): num(f"Distortion/{k}", 0.0) for k in ("K1", "K2", "K3", "P1", "P2")},
    )


def read_block(path: str | os.PathLike) -> list[Camera]:
    """Every photo with a pose, in the order of the file (photos without a pose are skipped)."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"camera block {source} does not exist: give the BlocksExchange XML exported for the photos")
    try:
        root = ET.parse(source).getroot()
    except ET.ParseError as exc:
        raise UserError(
            f"camera block {source} is not XML ({exc}): export the block as ContextCapture/iTwin BlocksExchange XML"
        ) from None
    block = root if root.tag == "Block" else root.find("Block")
    groups = [] if block is None else block.findall("Photogroups/Photogroup")
    if not groups:
        raise UserError(
            f"camera block {source} holds no Block/Photogroups/Photogroup (root <{root.tag}>): "
            "export the block as ContextCapture/iTwin BlocksExchange XML"
        )
    cameras = []
    for g, node in enumerate(groups):
        group = _photogroup(node, source, g)
        for photo in node.findall("Photo"):
            pose = photo.find("Pose")
            image_path = photo.findtext("ImagePath", "").strip()
            if pose is None or not image_path:
                continue
            what = f"photo {photo_name(image_path) or '?'}"
            if pose.find("Rotation/M_00") is None and pose.find("Rotation") is not None:
                raise UserError(
                    f"camera block {source}: {what} gives its rotation as angles, not a matrix: "
                    "export the block with rotation matrices (M_00 ... M_22)"
                )
            rotation = np.array([_number(pose, f"Rotation/{m}", source, what) for m in _ROTATION]).reshape(3, 3)
            centre = np.array([_number(pose, f"Center/{c}", source, what) for c in "xyz"])
            cameras.append(Camera(photo_name(image_path), group, rotation, centre))
    if not cameras:
        raise UserError(f"camera block {source} has no photo with a pose: give a block with oriented photos")
    return cameras


def select_cameras(cameras: list[Camera], every: int = 1, max_images: int | None = None) -> list[Camera]:
    """Every ``every``-th camera in block order, then the first ``max_images`` (the official selection)."""
    chosen = cameras[::every]
    return chosen if max_images is None else chosen[:max_images]
