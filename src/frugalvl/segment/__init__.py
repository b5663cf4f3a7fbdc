"""Open-vocabulary segmenters: SegEarth-OV (CLIP) and SegEarth-OV3 (SAM 3)."""
