"""``segment_files(..., exemplars=...)``: several inputs, SegEarth-OV's prototypes computed once for the
run and applied to every input (docs/methods/exemplars.md)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from shapely.geometry import box

from tests.segment.test_exemplars_cli import write


def test_prototypes_are_computed_once_and_apply_to_every_input(tmp_path, tiny_clip_model, monkeypatch):
    """Two PNGs of different sizes, one exemplar lying in the larger only: one prototype computation, and
    each input's scores equal that input run alone with the run's prototypes (saved, then reloaded)."""
    from frugalvl.segment import exemplars_clip
    from frugalvl.segment.exemplars import ExemplarSettings
    from frugalvl.segment.pipeline import segment_files
    from frugalvl.segment.scene_settings import SceneSettings, SegmentRunSettings
    from frugalvl.segment.segearth_ov import SegEarthOV
    from frugalvl.vocab import Vocabulary

    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, size=(60, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, size=(120, 140, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    ex = write(tmp_path / "ex.geojson", [box(90, 80, 130, 110)], **{"class": ["pond"]})
    seg = SegEarthOV(tiny_clip_model, Vocabulary.parse("water;land"))
    calls = []
    real = exemplars_clip.compute_prototypes
    monkeypatch.setattr(exemplars_clip, "compute_prototypes", lambda *a: calls.append(a[1]) or real(*a))
    settings = SegmentRunSettings(scene=SceneSettings(save_probs=True))
    saved = tmp_path / "p.npz"
    given = ExemplarSettings(exemplars=str(ex), save_prototypes=str(saved))
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    summary = segment_files(seg, paths, tmp_path / "both", settings, progress=False, exemplars=given)
    assert len(calls) == 1 and len(calls[0]) == 1 and summary.class_names == ["water", "land", "pond"]
    for path in paths:
        alone = segment_files(seg, [path], tmp_path / path.stem, settings, progress=False, exemplars=saved)
        assert alone.class_names == ["water", "land", "pond"]
        np.testing.assert_allclose(
            np.load(tmp_path / "both" / f"{path.stem}_probs.npy"),
            np.load(tmp_path / path.stem / f"{path.stem}_probs.npy"),
            atol=1e-6,
        )
    assert np.load(tmp_path / "both" / "a_probs.npy")[2].max() > 0  # the prototype scores on the other input too
