"""A synthetic drone block for the 3D label transfer: a ground plane and boxes, pinhole cameras with mild
distortion, photos rendered by ray casting (each pixel the colour of the class it sees) and a segmenter that
reads the classes back from those colours. Expectations come from the geometry, not from the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..vocab import Vocabulary

GROUND, BUILDING = 0, 1
CLASS_COLOURS = np.array(
    [[120, 120, 120], [200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [40, 200, 200]], dtype=np.uint8
)


@dataclass
class PinholeCamera:
    name: str
    centre: np.ndarray
    rotation: np.ndarray  # world -> camera (rows: right, down, forward)
    width: int = 200
    height: int = 150
    focal: float = 160.0
    ppx: float = 100.3
    ppy: float = 74.6
    k: tuple[float, float, float] = (-0.04, 0.01, -0.002)
    p: tuple[float, float] = (2e-4, -1e-4)


def look_at(name: str, centre, target, **kw) -> PinholeCamera:
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return PinholeCamera(name, centre, np.stack([right, down, forward]), **kw)


@dataclass
class Scene:
    boxes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (min corner, max corner)
    extent: float = 20.0  # the ground covers [-extent, extent]²


def default_scene() -> Scene:
    return Scene(
        [
            (np.array([-6.0, -3.0, 0.0]), np.array([-2.0, 3.0, 6.0])),
            (np.array([3.0, -6.0, 0.0]), np.array([7.0, -2.0, 4.0])),
            (np.array([2.0, 3.0, 0.0]), np.array([6.0, 7.0, 3.0])),
        ]
    )


def default_cameras(n: int = 4, height: float = 22.0, radius: float = 16.0) -> list[PinholeCamera]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    return [
        look_at(f"photo_{i}.png", [radius * np.cos(a), radius * np.sin(a), height], [0.0, 0.0, 0.0])
        for i, a in enumerate(angles)
    ]


def _undistort(xd: np.ndarray, yd: np.ndarray, cam: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    x, y = xd.copy(), yd.copy()
    k1, k2, k3 = cam.k
    p1, p2 = cam.p
    for _ in range(50):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        x = (xd - 2 * p1 * x * y - p2 * (r2 + 2 * x * x)) / radial
        y = (yd - p1 * (r2 + 2 * y * y) - 2 * p2 * x * y) / radial
    return x, y


def ray_hits(origin: np.ndarray, dirs: np.ndarray, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each ray to the first surface and its class (-1: nothing)."""
    t_best = np.full(len(dirs), np.inf)
    cls = np.full(len(dirs), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / dirs[:, 2]
        hit = origin[None, :2] + t[:, None] * dirs[:, :2]
        ok = (t > 0) & (np.abs(hit) <= scene.extent).all(1)
        t_best[ok], cls[ok] = t[ok], GROUND
        for lo, hi in scene.boxes:
            t1 = (lo - origin) / dirs
            t2 = (hi - origin) / dirs
            enter = np.nanmax(np.minimum(t1, t2), axis=1)
            leave = np.nanmin(np.maximum(t1, t2), axis=1)
            ok = (enter <= leave) & (enter > 0) & (enter < t_best)
            t_best[ok], cls[ok] = enter[ok], BUILDING
    return t_best, cls


def render_labels(cam: PinholeCamera, scene: Scene) -> np.ndarray:
    """The class seen through every pixel centre (-1 for the sky), by inverting the camera model."""
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
    x, y = _undistort((u.ravel() - cam.ppx) / cam.focal, (v.ravel() - cam.ppy) / cam.focal, cam)
    dirs = np.stack([x, y, np.ones_like(x)], 1) @ cam.rotation  # camera -> world
    _, cls = ray_hits(cam.centre, dirs, scene)
    return cls.reshape(cam.height, cam.width)


def occluded(points: np.ndarray, cam: PinholeCamera, scene: Scene, grow: float = 0.0) -> np.ndarray:
    """Whether a box (grown by ``grow``) lies between the camera and each point."""
    dirs = points - cam.centre
    dist = np.linalg.norm(dirs, axis=1)
    unit = dirs / dist[:, None]
    out = np.zeros(len(points), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for lo, hi in scene.boxes:
            t1 = (lo - grow - cam.centre) / unit
            t2 = (hi + grow - cam.centre) / unit
            enter = np.nanmax(np.minimum(t1, t2), axis=1)
            leave = np.nanmin(np.maximum(t1, t2), axis=1)
            out |= (enter <= leave) & (enter > 0) & (enter < dist - 1e-6 - 2 * grow)
    return out


def sample_cloud(scene: Scene, spacing: float = 0.25, margin: float = 0.6, box_margin: float = 0.1, seed: int = 0):
    """Points on the ground (``margin`` away from the boxes) and on the boxes' roofs and walls (``box_margin``
    from their edges), so no point sits on a class boundary.

    Returns ``(xyz float64 N×3, truth int N, surface int N)`` with surface 0 ground, 1 roof, 2 wall.
    """
    rng = np.random.default_rng(seed)
    pts, truth, surface = [], [], []

    def add(points: np.ndarray, cls: int, kind: int) -> None:
        pts.append(points)
        truth.append(np.full(len(points), cls))
        surface.append(np.full(len(points), kind))

    g = np.arange(-scene.extent + margin, scene.extent - margin, spacing)
    gx, gy = np.meshgrid(g, g)
    ground = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    near = np.zeros(len(ground), bool)
    for lo, hi in scene.boxes:
        near |= ((ground[:, :2] > lo[:2] - margin) & (ground[:, :2] < hi[:2] + margin)).all(1)
    ground = ground[~near]
    add(ground, GROUND, 0)
    for lo, hi in scene.boxes:
        m = box_margin
        a = np.arange(lo[0] + m, hi[0] - m + 1e-9, spacing)
        b = np.arange(lo[1] + m, hi[1] - m + 1e-9, spacing)
        ra, rb = np.meshgrid(a, b)
        roof = np.stack([ra.ravel(), rb.ravel(), np.full(ra.size, hi[2])], 1)
        walls = []
        for axis in (0, 1):
            other = 1 - axis
            s = np.arange(lo[other] + m, hi[other] - m + 1e-9, spacing)
            h = np.arange(m, hi[2] - m + 1e-9, spacing)
            ss, hh = np.meshgrid(s, h)
            for side in (lo[axis], hi[axis]):
                w = np.zeros((ss.size, 3))
                w[:, axis], w[:, other], w[:, 2] = side, ss.ravel(), hh.ravel()
                walls.append(w)
        wall = np.concatenate(walls)
        for part, kind in ((roof, 1), (wall, 2)):
            add(part, BUILDING, kind)
    far = np.stack([np.linspace(60, 70, 50), np.linspace(60, 61, 50), np.zeros(50)], 1)  # in no photo
    add(far, GROUND, 0)
    xyz = np.concatenate(pts)
    xyz += rng.normal(0, 1e-4, xyz.shape)  # no point exactly on a pixel boundary
    return xyz, np.concatenate(truth), np.concatenate(surface)


def block_xml(cameras: list[PinholeCamera], names: list[str] | None = None) -> str:
    """A BlocksExchange XML with one photogroup per distinct intrinsics (here: one)."""
    c = cameras[0]
    photos = []
    for i, cam in enumerate(cameras):
        rot = "".join(f"<M_{r}{k}>{float(cam.rotation[r, k])!r}</M_{r}{k}>" for r in range(3) for k in range(3))
        centre = "".join(f"<{a}>{float(v)!r}</{a}>" for a, v in zip("xyz", cam.centre))
        name = (names or [f"D:\\flight\\{cam.name}" for cam in cameras])[i]
        photos.append(
            f"<Photo><Id>{i}</Id><ImagePath>{name}</ImagePath>"
            f"<Pose><Rotation>{rot}</Rotation><Center>{centre}</Center></Pose></Photo>"
        )
    return (
        "<?xml version='1.0' encoding='utf-8'?>\n<BlocksExchange version='3.2'><Block><Name>synthetic</Name>"
        "<Photogroups><Photogroup><Name>cam</Name>"
        f"<ImageDimensions><Width>{c.width}</Width><Height>{c.height}</Height></ImageDimensions>"
        f"<CameraModelType>Perspective</CameraModelType><FocalLengthPixels>{c.focal!r}</FocalLengthPixels>"
        f"<PrincipalPoint><x>{c.ppx!r}</x><y>{c.ppy!r}</y></PrincipalPoint>"
        f"<Distortion><K1>{c.k[0]!r}</K1><K2>{c.k[1]!r}</K2><K3>{c.k[2]!r}</K3><P1>{c.p[0]!r}</P1><P2>{c.p[1]!r}</P2></Distortion>"
        f"<AspectRatio>1</AspectRatio><Skew>0</Skew>{''.join(photos)}</Photogroup></Photogroups></Block></BlocksExchange>\n"
    )


def write_block(folder: Path, cameras: list[PinholeCamera], scene: Scene, xml_name: str = "block.xml") -> Path:
    """Rendered photos in ``folder/photos`` and the camera block ``folder/<xml_name>``."""
    from PIL import Image

    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for cam in cameras:
        labels = render_labels(cam, scene)
        rgb = np.where(labels[..., None] >= 0, CLASS_COLOURS[np.maximum(labels, 0)], 255).astype(np.uint8)
        Image.fromarray(rgb).save(photos / cam.name)
    path = folder / xml_name
    path.write_text(block_xml(cameras))
    return path


def write_ply(path: Path, xyz: np.ndarray, truth: np.ndarray, text: bool = False, extra: bool = True) -> Path:
    """A PLY with float32 x, y, z, the truth as ``class`` and a few extra properties (colours, intensity)."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if extra:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("intensity", "f8"), ("class", "i4")]
    data = np.empty(len(xyz), fields)
    data["x"], data["y"], data["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if extra:
        rng = np.random.default_rng(1)
        for c in ("red", "green", "blue"):
            data[c] = rng.integers(0, 256, len(xyz))
        data["intensity"] = rng.random(len(xyz))
        data["class"] = truth
    PlyData([PlyElement.describe(data, "vertex")], text=text, comments=["synthetic scene"]).write(str(path))
    return path


@dataclass
class LabelColourSegmenter:
    """Reads the class back from a rendered photo's colours: score 1 for the class whose colour a pixel has."""

    vocabulary: Vocabulary
    prob_thd: float = 0.0
    bg_idx: int = 0
    calls: int = 0

    @classmethod
    def for_classes(cls, names: str = "ground;building") -> LabelColourSegmenter:
        return cls(Vocabulary.parse(names))

    def identity(self) -> dict:
        return {"method": "label-colour-test", "classes": list(self.vocabulary.names)}

    def class_scores(self, rgb: np.ndarray) -> torch.Tensor:
        self.calls += 1
        n = len(self.vocabulary.names)
        scores = np.stack([(rgb == CLASS_COLOURS[c]).all(-1) for c in range(n)]).astype(np.float32)
        return torch.from_numpy(scores)
