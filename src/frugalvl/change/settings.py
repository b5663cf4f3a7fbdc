"""Settings of SegEarth-OV3 change detection (docs/methods/segearth_ov3_change.md#settings).

Only the two settings of the change step live here; the per-date segmentation settings (thresholds,
class file, windows) are :class:`frugalvl.segment.segearth_ov3.SegEarthOV3Settings`. The defaults are
the official LEVIR-CD configuration, as are the segmentation defaults the detector takes when none are
given (:data:`DEFAULT_PRESET`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import option

# The dataset preset whose [segearth_ov3] table gives the default per-date settings (prob_thd 0.4, ...).
DEFAULT_PRESET = "levir_cd"

# Hard-coded in the official code (docs/methods/segearth_ov3_change.md#constants): not settings.
DILATION_RADIUS = 2  # a (2r+1)² square, in pixels of the before image
ENERGY_FLOOR = 0.01  # a pixel is changed only if its energy exceeds max(Otsu threshold, this)
RANGE_GUARD = 1e-4  # no Otsu threshold (0) when the energy spans no more than this


@dataclass(frozen=True)
class ChangeSettings:
    """The change step's settings; defaults: the official LEVIR-CD configuration."""

    instance_iou_threshold: float = option(
        0.3,
        "a foreground blob of one date is changed when less than this share of it lies in the other "
        "date's dilated foreground (a coverage ratio, despite the official name)",
    )
    min_instance_area: int = option(
        0,
        "blobs smaller than this many pixels are never changed (official t12_min_instance_area; "
        "0 in the official change configs, 20 in the code)",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.instance_iou_threshold <= 1:  # nan fails too
            raise ValueError(f"instance_iou_threshold must be from 0 to 1, got {self.instance_iou_threshold}")
        if self.min_instance_area < 0:
            raise ValueError(f"min_instance_area must be 0 or more pixels, got {self.min_instance_area}")


@dataclass(frozen=True)
class ChangeOutputSettings:
    """How pairs are read and what is written besides the official binary map (none of it changes that map)."""

    tile: int | None = option(
        None,
        "compare whole scenes in tiles of N×N px, each on its own as the official 512² tiles "
        "(none: whole images; scenes above 4096² px and VRT/JPEG2000 inputs are tiled at 512)",
        parse=int,
    )
    semantic: bool = option(
        False,
        "also write each date's labels, a from-to raster, change polygons (GeoPackage) and a transition table "
        "(CSV); unrelated to the semantic-head ablation of SAM 3",
    )

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 16:
            raise ValueError(f"tile must be at least 16 px, got {self.tile}")
