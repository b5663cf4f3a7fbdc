"""SegEarth-OV3 exemplars (docs/methods/exemplars.md#segearth-ov3): text + boxes through SAM 3's geometry
prompt, checked against transformers' own ``Sam3Processor`` + ``Sam3Model.forward`` on the same view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shapely.geometry import box

from frugalvl.models.sam3 import box_prompt, detect, encode_boxes, encode_image, pixel_values
from frugalvl.segment.exemplars import Exemplar, Exemplars
from frugalvl.segment.segearth_ov3 import SegEarthOV3, SegEarthOV3Settings, fuse_view
from frugalvl.vocab import Vocabulary
from tests.segment.test_segearth_ov3 import informative_sam3, one_thread  # noqa: F401 (one_thread: autouse)

VOCAB = Vocabulary.parse("background;car;building")


@pytest.fixture(scope="module")
def sam3():
    return informative_sam3()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(72, 96, 3), dtype=np.uint8)


def exemplars(*items: tuple[str, bool, tuple[float, float, float, float]], h: int = 72, w: int = 96) -> Exemplars:
    return Exemplars(tuple(Exemplar(n, p, box(*b)) for n, p, b in items), h, w, {"file": "test"})


def reference(sam3, rgb, text, boxes, labels):
    """transformers' own call: the processor with input_boxes/input_boxes_labels, then Sam3Model.forward."""
    inputs = sam3.processor(
        images=rgb, text=text, input_boxes=[boxes], input_boxes_labels=[labels], return_tensors="pt"
    )
    with torch.no_grad():
        return sam3.model(**inputs)


def official(ref, size):
    """The official fusion of one prompt's transformers outputs (``[H, W]``)."""
    return fuse_view(ref.pred_masks, ref.pred_logits, ref.presence_logits, ref.semantic_seg, size, 0.0)[0]


def test_box_prompt_matches_processor(sam3, image):
    boxes = [[10.0, 5.0, 40.0, 30.0], [50.5, 20.0, 90.0, 70.0]]
    inputs = sam3.processor(
        images=image, text="car", input_boxes=[boxes], input_boxes_labels=[[1, 0]], return_tensors="pt"
    )
    assert torch.allclose(box_prompt(boxes, 72, 96), inputs["input_boxes"][0], atol=1e-7)


@pytest.mark.parametrize("labels", [[1], [1, 0]])
def test_class_logits_equal_transformers_call(sam3, image, labels):
    boxes = [[10.0, 5.0, 40.0, 30.0], [50.0, 20.0, 90.0, 70.0]][: len(labels)]
    ref = reference(sam3, image, "car", boxes, labels)
    with torch.no_grad():
        vision = encode_image(sam3.model, pixel_values(sam3, image))
        text_in = sam3.processor(text=["car"], return_tensors="pt")
        text = sam3.model.get_text_features(**text_in).pooler_output
        geo, geo_mask = encode_boxes(sam3.model, vision, box_prompt(boxes, 72, 96)[None], torch.tensor([labels]))
        prompt = torch.cat([text, geo], 1)
        mask = torch.cat([text_in["attention_mask"].bool(), geo_mask], 1)
        ours = detect(sam3.model, vision, prompt, mask)
    assert torch.allclose(ours.class_logits, ref.pred_logits, atol=1e-5)
    assert torch.allclose(ours.presence_logits, ref.presence_logits[:, 0], atol=1e-5)


def test_segmenter_scores_equal_transformers_call(sam3, image):
    """The whole segmenter: the 'car' prompt in a view holding a positive and a negative car box scores
    exactly the official fusion of transformers' outputs for text + those boxes; the other prompts keep
    their text-only scores."""
    ex = exemplars(("car", True, (10, 5, 40, 30)), ("car", False, (50, 20, 90, 70)))
    plain = SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(confidence_threshold=0.0))
    seg = plain.with_exemplars(ex)
    assert seg.vocabulary == VOCAB
    scores = seg.query_scores(image)
    ref = reference(sam3, image, "car", [[10.0, 5.0, 40.0, 30.0], [50.0, 20.0, 90.0, 70.0]], [1, 0])
    expected = official(ref, (72, 96))
    assert torch.allclose(scores[1], expected, atol=1e-5)
    without = plain.query_scores(image)
    assert torch.allclose(scores[[0, 2]], without[[0, 2]], atol=1e-5)
    assert not torch.allclose(scores[1], without[1], atol=1e-3)


def test_negative_box_changes_only_its_class(sam3, image):
    pos = exemplars(("car", True, (10, 5, 40, 30)))
    both = exemplars(("car", True, (10, 5, 40, 30)), ("car", False, (50, 20, 90, 70)))
    plain = SegEarthOV3(sam3, VOCAB, SegEarthOV3Settings(confidence_threshold=0.0))
    a = plain.with_exemplars(pos).query_scores(image)
    b = plain.with_exemplars(both).query_scores(image)
    assert not torch.allclose(a[1], b[1], atol=1e-3)  # the negative box is part of the car prompt
    assert torch.allclose(a[[0, 2]], b[[0, 2]], atol=1e-6)  # other classes untouched
    ref = reference(sam3, image, "car", [[10.0, 5.0, 40.0, 30.0], [50.0, 20.0, 90.0, 70.0]], [1, 0])
    expected = official(ref, (72, 96))
    assert torch.allclose(b[1], expected, atol=1e-5)


def test_example_only_class_uses_visual_text_and_scores_zero_elsewhere(sam3):
    """A class named only by exemplars is prompted as SAM 3 prompts boxes alone ("visual"), and only in
    the views holding its boxes (here: the left of two side-by-side views)."""
    rgb = np.random.default_rng(2).integers(0, 256, size=(64, 128, 3), dtype=np.uint8)
    ex = exemplars(("solar panel", True, (8, 8, 30, 30)), h=64, w=128)
    settings = SegEarthOV3Settings(confidence_threshold=0.0, slide_crop=64, slide_stride=64)
    seg = SegEarthOV3(sam3, VOCAB, settings).with_exemplars(ex)
    assert seg.vocabulary.names == ["background", "car", "building", "solar panel"]
    scores = seg.query_scores(rgb)
    assert scores.shape == (4, 64, 128)
    assert float(scores[3, :, 64:].abs().max()) == 0.0
    ref = reference(sam3, rgb[:, :64], None, [[8.0, 8.0, 30.0, 30.0]], [1])  # the processor's "visual"
    expected = official(ref, (64, 64))
    assert torch.allclose(scores[3, :, :64], expected, atol=1e-5)
    reuse = SegEarthOV3(sam3, VOCAB, settings).with_exemplars(ex, rgb, reuse_tokens=True).query_scores(rgb)
    assert torch.allclose(reuse[:, :, :64], scores[:, :, :64], atol=1e-5)
    assert float(reuse[3, :, 64:].abs().max()) > 0  # the extension: the tokens prompt the other view too


def test_identity_records_exemplars(sam3):
    ex = exemplars(("car", True, (10, 5, 40, 30)))
    plain = SegEarthOV3(sam3, VOCAB)
    assert "exemplars" not in plain.identity()
    ident = plain.with_exemplars(ex).identity()
    assert ident["exemplars"]["exemplars"]["examples"][0][:2] == ["car", True]
    moved = exemplars(("car", True, (11, 5, 40, 30)))
    assert plain.with_exemplars(moved).identity() != ident


@pytest.fixture(scope="module")
def sam3_folder(sam3, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam3-tiny")
    sam3.model.save_pretrained(folder)
    sam3.processor.save_pretrained(folder)
    return folder


def test_cli_png_and_tiled_scene(sam3_folder, tmp_path, capsys):
    """``segment --method segearth-ov3 --exemplars``: one PNG; then the same image tiled, where the
    example-only class is prompted only in the tiles holding its box (its probabilities are 0 elsewhere)."""
    import geopandas as gpd
    from PIL import Image

    from frugalvl.cli import main

    rgb = np.random.default_rng(3).integers(0, 256, size=(96, 200, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    gpd.GeoDataFrame({"class": ["pond"]}, geometry=[box(4, 4, 30, 30)]).to_file(tmp_path / "ex.gpkg")
    base = [
        "segment",
        tmp_path / "a.png",
        "--method",
        "segearth-ov3",
        "--sam3",
        sam3_folder,
        "--classes",
        "background;car",
    ]
    base += ["--exemplars", tmp_path / "ex.gpkg", "--no-progress", "--save-probs", "--confidence-threshold", "0"]
    assert main([str(a) for a in [*base, "-o", tmp_path / "one"]]) == 0, capsys.readouterr().err
    probs = np.load(tmp_path / "one" / "a_probs.npy")
    assert probs.shape == (3, 96, 200) and probs[2].max() > 0
    code = main([str(a) for a in [*base, "-o", tmp_path / "tiled", "--tile", "64", "--tile-overlap", "0"]])
    assert code == 0, capsys.readouterr().err
    with rasterio_open(tmp_path / "tiled" / "a_probs.tif") as src:
        tiled = src.read()
    assert tiled[2][:64, :64].max() > 0 and tiled[2][:, 64:].max() == 0 and tiled[2][64:, :].max() == 0


def rasterio_open(path):
    import rasterio

    return rasterio.open(path)


def test_cli_refuses_prototype_files(sam3_folder, tmp_path, capsys):
    import geopandas as gpd
    from PIL import Image

    from frugalvl.cli import main

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    gpd.GeoDataFrame({"class": ["pond"]}, geometry=[box(4, 4, 30, 30)]).to_file(tmp_path / "ex.gpkg")
    (tmp_path / "p.npz").write_bytes(b"x")
    common = ["--method", "segearth-ov3", "--sam3", sam3_folder, "--classes", "a;b", "--no-progress"]
    capsys.readouterr()
    args = [tmp_path / "a.png", "--exemplars", tmp_path / "p.npz", *common, "-o", tmp_path / "o"]
    assert main([str(a) for a in ["segment", *args]]) == 2
    err = capsys.readouterr().err
    assert "only SegEarth-OV" in err and len(err.strip().splitlines()) == 1


def test_several_inputs_each_prompted_with_its_own_boxes(sam3_folder, tmp_path, capsys):
    """Two PNGs of different sizes, one box (pixel coordinates) lying in the larger only: that input's
    outputs equal a one-input run on it alone; the other input is the text-only run (the example-only
    class scores 0 there) unless the box tokens are reused (the documented extension), which changes it."""
    import geopandas as gpd
    from PIL import Image

    from frugalvl.cli import main

    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, size=(80, 96, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    gpd.GeoDataFrame({"class": ["pond"]}, geometry=[box(60, 50, 90, 75)]).to_file(tmp_path / "ex.gpkg")
    common = ["--method", "segearth-ov3", "--sam3", sam3_folder, "--classes", "background;car", "--no-progress"]
    common += ["--save-probs", "--confidence-threshold", "0"]

    def run(out, *inputs, extra=()):
        args = ["segment", *[tmp_path / i for i in inputs], *common, "-o", tmp_path / out, *extra]
        assert main([str(a) for a in args]) == 0, capsys.readouterr().err
        return {i: np.load(tmp_path / out / f"{i[:-4]}_probs.npy") for i in inputs}

    ex = ("--exemplars", tmp_path / "ex.gpkg")
    both = run("both", "a.png", "b.png", extra=ex)
    alone = run("alone", "b.png", extra=ex)
    plain = run("plain", "a.png")
    np.testing.assert_array_equal(both["b.png"], alone["b.png"])
    assert both["b.png"][2].max() > 0
    assert both["a.png"].shape == (3, 40, 48) and both["a.png"][2].max() == 0
    np.testing.assert_allclose(both["a.png"][:2], plain["a.png"], atol=1e-6)
    reused = run("reused", "a.png", "b.png", extra=(*ex, "--exemplar-tokens-everywhere"))
    assert reused["a.png"][2].max() > 0
    import json

    record = json.loads((tmp_path / "reused" / "a_run.json").read_text())["segmenter"]["exemplars"]
    assert record["reuse_tokens"] is True and record["exemplars"]["examples"] == []
