"""Settings of the 2D -> 3D label transfer; the defaults are those of the official WMSC run.

Each field documents itself with :func:`frugalvl.settings.option`, so ``frugalvl label-3d`` builds its
options from this class (docs/methods/segearth_ov3_3d.md#settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings import option

VISIBILITY = ("none", "zbuffer")
VOTES = ("count", "score")
INPUT_COLOURS = ("keep", "drop")
OUTPUT_FORMATS = ("auto", "ply", "las", "laz")


def parse_weights(text: str) -> tuple[float, ...]:
    """``"1,1,2,2,3,1"`` -> ``(1.0, 1.0, 2.0, 2.0, 3.0, 1.0)``."""
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers, e.g. 1,1,2,2,3,1") from None
    return weights


@dataclass(frozen=True)
class Label3DSettings:
    """How photos vote for the points of a cloud (docs/methods/segearth_ov3_3d.md#settings)."""

    every: int = option(1, "use every n-th camera of the block, in block order (official sample_rate)")
    max_images: int | None = option(
        None, "use at most this many cameras, after every (official max_images; none: all)", parse=int
    )
    class_weights: tuple[float, ...] | None = option(
        None,
        "vote weight per class, comma separated (none: 1 for every class; the stpls3d preset: 1,1,2,2,3,1)",
        parse=parse_weights,
    )
    min_depth: float = option(0.1, "a camera votes only for points further than this in front of it (cloud units)")
    visibility: str = option(
        "none",
        "none: every point that projects into a photo takes its label (official); "
        "zbuffer: only points not hidden behind nearer points of the cloud",
        choices=VISIBILITY,
    )
    zbuffer_scale: float = option(
        0.5, "zbuffer only: depth-buffer size as a fraction of the photo size (coarser closes gaps between points)"
    )
    zbuffer_tolerance: float = option(
        0.02, "zbuffer only: a point is visible when its depth is within this fraction of its buffer cell's nearest"
    )
    votes: str = option(
        "count",
        "count: one vote per photo for the label of the point's pixel (official); "
        "score: the pixel's class scores are added instead",
        choices=VOTES,
    )
    chunk_points: int = option(2_000_000, "points projected at a time (bounds memory; results do not depend on it)")
    input_colours: str = option(
        "keep",
        "the input's red, green, blue: keep them as input_red, input_green, input_blue; "
        "drop: the official output layout",
        choices=INPUT_COLOURS,
    )
    output_format: str = option("auto", "format of the labelled cloud (auto: the input's)", choices=OUTPUT_FORMATS)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be at least 1, got {self.every}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be at least 1 (or none for all), got {self.max_images}")
        if self.class_weights is not None:
            if not self.class_weights or any(not math.isfinite(w) or w < 0 for w in self.class_weights):
                raise ValueError(f"class_weights must be finite numbers ≥ 0, got {self.class_weights}")
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        if not math.isfinite(self.min_depth) or self.min_depth < 0:
            raise ValueError(f"min_depth must be a finite number ≥ 0, got {self.min_depth}")
        if not 0 < self.zbuffer_scale <= 1:
            raise ValueError(f"zbuffer_scale must be in (0, 1], got {self.zbuffer_scale}")
        if not math.isfinite(self.zbuffer_tolerance) or self.zbuffer_tolerance < 0:
            raise ValueError(f"zbuffer_tolerance must be a finite number ≥ 0, got {self.zbuffer_tolerance}")
        if self.chunk_points < 1:
            raise ValueError(f"chunk_points must be at least 1, got {self.chunk_points}")
        for name, value, allowed in (
            ("visibility", self.visibility, VISIBILITY),
            ("votes", self.votes, VOTES),
            ("input_colours", self.input_colours, INPUT_COLOURS),
            ("output_format", self.output_format, OUTPUT_FORMATS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
