"""Open-vocabulary segmenters: SegEarth-OV (CLIP) and SegEarth-OV3 (SAM 3), and the paths from files
and scenes to their outputs.

The main names are importable from here (loaded on first use, so importing the package is cheap)::

    from frugalvl.segment import SegEarthOV, SegEarthOVSettings, SegEarthOV3, SegEarthOV3Settings
    from frugalvl.segment import labels_from_scores, segment_files, segment_scene, SegmentRunSettings
    from frugalvl.segment import attach_exemplars, read_exemplars, Prototypes

Module map: base (what a segmenter is), segearth_ov, segearth_ov3, pipeline (files -> outputs), scene
(whole scenes: the phases and the loop) with scene_settings, scene_read, scene_tiles and scene_write, records
(what produced an output), exemplars with exemplars_clip, exemplars_sam3 and exemplars_run (examples of a class
pointed at with boxes or polygons, docs/methods/exemplars.md). CLIP's changed last block is in :mod:`frugalvl.models.attention` and
:mod:`frugalvl.models.dense_clip`, shared with SimFeatUp training.
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "Segmenter": "base",
        "labels_from_scores": "base",
        "merge_synonyms": "base",
        "SegEarthOV": "segearth_ov",
        "SegEarthOVSettings": "segearth_ov",
        "SegEarthOV3": "segearth_ov3",
        "SegEarthOV3Settings": "segearth_ov3",
        "segment_files": "pipeline",
        "segment_image": "pipeline",
        "segment_scene": "scene",
        "SceneSettings": "scene_settings",
        "SegmentRunSettings": "scene_settings",
        "plan_scene": "scene",
        "assemble_scene": "scene",
        "attach_exemplars": "exemplars_run",
        "read_exemplars": "exemplars",
        "ExemplarSettings": "exemplars",
        "Prototypes": "exemplars_clip",
    },
)
