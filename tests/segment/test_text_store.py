"""The on-disk text feature store: bit-exact round trips, reuse across runs, on by default, set through the environment."""

import numpy as np
import torch

from frugalvl.segment.methods import method
from frugalvl.segment.segearth_ov import SegEarthOV
from frugalvl.segment.text_store import TextStore, default_text_store
from frugalvl.vocab import Vocabulary
from tests.conftest import landsat_rgb


def test_round_trip_is_bit_exact(tmp_path):
    store = TextStore(tmp_path)
    row = torch.randn(512)
    pair = (torch.randn(32, 8)[:, 2], torch.ones(32, dtype=torch.bool))  # a view: saved on its own
    store[("clip-id", "torch.float32", "imagenet80", "road")] = row
    store[("sam3", "fp32", "road")] = pair
    again = TextStore(tmp_path)  # another run
    assert ("clip-id", "torch.float32", "imagenet80", "road") in again
    assert ("clip-id", "torch.float32", "imagenet80", "tree") not in again
    assert torch.equal(again[("clip-id", "torch.float32", "imagenet80", "road")], row)
    back = again[("sam3", "fp32", "road")]
    assert torch.equal(back[0], pair[0]) and torch.equal(back[1], pair[1])
    assert len(again) == 2
    del again[("sam3", "fp32", "road")]
    assert ("sam3", "fp32", "road") not in store


def test_a_damaged_entry_is_a_miss(tmp_path):
    store = TextStore(tmp_path)
    store[("m", "q")] = torch.zeros(3)
    path = next(tmp_path.glob("*/*.pt"))
    path.write_bytes(b"not a tensor file")
    assert ("m", "q") in store  # the file is there ...
    try:
        store[("m", "q")]
    except KeyError:
        pass
    else:
        raise AssertionError("a damaged entry must read as missing")


def test_a_second_run_encodes_no_text_and_gives_the_same_scores(tiny_clip_file, tmp_path):
    from frugalvl.models.clip import load_clip

    vocab = Vocabulary.parse("road;building,roof;tree")
    rgb = landsat_rgb(224)
    first_clip = load_clip(str(tiny_clip_file))
    first = SegEarthOV(first_clip, vocab, text_cache=TextStore(tmp_path))
    second_clip = load_clip(str(tiny_clip_file))  # a new run: a new model object, an empty memory cache
    calls = []
    original = second_clip.encode_text
    second_clip.encode_text = lambda texts, **k: calls.append(len(texts)) or original(texts, **k)
    second = SegEarthOV(second_clip, vocab, text_cache=TextStore(tmp_path))
    assert calls == []
    assert torch.equal(first.query_features, second.query_features)
    assert torch.equal(first.query_features, SegEarthOV(load_clip(str(tiny_clip_file)), vocab).query_features)
    assert torch.equal(first.class_scores(np.ascontiguousarray(rgb)), second.class_scores(np.ascontiguousarray(rgb)))


def test_on_by_default_in_the_user_cache_and_set_or_turned_off_through_the_environment(
    monkeypatch, tmp_path, tiny_clip_model
):
    from frugalvl.segment.text_store import default_text_folder

    monkeypatch.delenv("FRUGALVL_TEXT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_text_folder() == tmp_path / "xdg" / "frugalvl" / "text-features"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_text_folder() == tmp_path / "home" / ".cache" / "frugalvl" / "text-features"
    for off in ("", "off", "OFF", " 0 ", "none"):
        monkeypatch.setenv("FRUGALVL_TEXT_CACHE", off)
        assert default_text_store() is None, off
    monkeypatch.setenv("FRUGALVL_TEXT_CACHE", str(tmp_path))
    store = default_text_store()
    assert isinstance(store, TextStore) and store.folder == tmp_path
    entry = method("segearth-ov")
    seg = entry.build({"clip": tiny_clip_model, "upsampler": None}, Vocabulary.parse("road;tree"), entry.settings())
    assert isinstance(seg.text_cache, TextStore)
    assert len(TextStore(tmp_path)) == 2  # one entry per query


def test_the_app_reads_and_fills_the_same_store(tiny_clip_file, tmp_path):
    """The server's memory cache falls back on the store the CLI uses, and writes what it encodes to it."""
    from frugalvl.app.engine import QueryCache
    from frugalvl.models.clip import load_clip

    vocab = Vocabulary.parse("road;building,roof")
    cli_run = SegEarthOV(load_clip(str(tiny_clip_file)), vocab, text_cache=TextStore(tmp_path))  # a CLI run
    clip = load_clip(str(tiny_clip_file))
    calls = []
    original = clip.encode_text
    clip.encode_text = lambda texts, **k: calls.append(len(texts)) or original(texts, **k)
    cache = QueryCache(max_items=8, backing=TextStore(tmp_path))  # a new server
    app_run = SegEarthOV(clip, Vocabulary.parse("road;building,roof;tree"), text_cache=cache)
    assert calls == [80]  # only "tree" (80 templates) was encoded; the others came from the CLI's entries
    assert torch.equal(app_run.query_features[:3], cli_run.query_features)
    assert len(TextStore(tmp_path)) == 4  # the server wrote "tree" for the next CLI run
    key = next(iter(cache))
    fresh = QueryCache(max_items=8, backing=TextStore(tmp_path))
    assert torch.equal(fresh[key], cache[key])  # a plain look-up reads the store too
    try:
        QueryCache(max_items=8)[key]
    except KeyError:
        pass
    else:
        raise AssertionError("without a store a missing query is a KeyError")
