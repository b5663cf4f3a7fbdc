"""frugalvl: three recent vision-language methods, engineered for use.

- SegEarth-OV (CVPR 2025): training-free open-vocabulary segmentation with CLIP
  (:mod:`frugalvl.segment.segearth_ov`).
- SegEarth-OV3: the same task with SAM 3 (:mod:`frugalvl.segment.segearth_ov3`).
- CoIDO (NeurIPS 2025): data selection for visual instruction tuning (:mod:`frugalvl.select`).
"""

__version__ = "0.1.0"
