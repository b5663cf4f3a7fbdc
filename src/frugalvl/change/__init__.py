"""SegEarth-OV3 change detection between two co-registered images (docs/methods/segearth_ov3_change.md)."""

from __future__ import annotations

from .detector import ChangeDetector, ChangeResult
from .otsu import otsu_threshold
from .settings import ChangeSettings
from .verify import object_verdict

__all__ = ["ChangeDetector", "ChangeResult", "ChangeSettings", "object_verdict", "otsu_threshold"]
