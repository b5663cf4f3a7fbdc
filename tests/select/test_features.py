"""CLIP features, min-max scaling, the rating parser, the endpoint client (local stub server only)
and the ImageReward hook (a stub package)."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.select.features import EndpointSettings, FeatureSettings, clip_features, minmax_scale
from frugalvl.select.quality import (
    RATING_REQUEST,
    EndpointClient,
    ImageRewardScorer,
    TextQualityScorer,
    parse_rating,
    rating_messages,
    ratings_from_answers,
)


def test_minmax_scale_hand_case():
    np.testing.assert_allclose(minmax_scale(np.array([1.0, 3.0, 5.0, np.nan, 2.0])), [-1.0, 0.0, 1.0, 0.0, -0.5])
    np.testing.assert_array_equal(minmax_scale(np.array([4.0, 4.0])), [0.0, 0.0])


@pytest.mark.parametrize(
    "answer,value",
    [
        ("8", 8.0),
        ("Score: 7/10", 7.0),
        ("7.5\nbecause it is clear", 7.5),
        ("8/10 good", 8.0),
        ("Rating 6", 6.0),
        ("**8**", None),
        ("", None),
        ("excellent", None),
        ("nan", None),
    ],
)
def test_parse_rating_official_rule(answer, value):
    assert parse_rating(answer) == value


def test_unparsable_answers_become_the_mean():
    np.testing.assert_allclose(ratings_from_answers(["4", "oops", "8"]), [4.0, 6.0, 8.0])


def test_rating_messages_resplit_the_conversation():
    conv = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]
    assert rating_messages(conv) == [
        {"role": "user", "content": "What colour?"},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": RATING_REQUEST},
    ]


# ---------------------------------------------------------------- endpoint against a stub server


class _Stub:
    """A chat-completions stub on 127.0.0.1: records requests, fails the first tries of each sample."""

    def __init__(self, fail_first: int = 0, status: int = 200):
        self.requests, self.lock, self.active, self.peak = [], threading.Lock(), 0, 0
        self.fail_first, self.status, self.seen = fail_first, status, {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.active += 1
                    stub.peak = max(stub.peak, stub.active)
                    stub.requests.append((self.path, dict(self.headers), body))
                    question = body["messages"][0]["content"]
                    stub.seen[question] = stub.seen.get(question, 0) + 1
                    fail = stub.seen[question] <= stub.fail_first
                time.sleep(0.02)
                with stub.lock:
                    stub.active -= 1
                if stub.status != 200 or fail:
                    self.send_response(stub.status if stub.status != 200 else 503)
                    self.end_headers()
                    return
                rating = str(len(question) % 11)
                out = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"{rating}\nok"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _samples(n):
    return [
        {
            "unique_idx": i,
            "status": "text",
            "conversations": [{"from": "human", "value": "q" * (i + 1)}, {"from": "gpt", "value": "a"}],
        }
        for i in range(n)
    ]


def test_endpoint_client_settings_retries_concurrency_and_cache(tmp_path):
    stub = _Stub(fail_first=1)
    try:
        settings = EndpointSettings(
            base_url=stub.url, model="stub-chat", api_key="k-123", backoff_s=0.01, concurrency=4
        )
        scorer = TextQualityScorer(EndpointClient(settings), progress=False)
        raw = scorer.raw_scores(_samples(12), tmp_path)
        np.testing.assert_allclose(raw, [(i + 1) % 11 for i in range(12)])
        path, headers, body = stub.requests[-1]
        assert path == "/v1/chat/completions"
        assert headers["Authorization"] == "Bearer k-123"
        assert (body["model"], body["temperature"], body["max_tokens"], body["seed"]) == ("stub-chat", 1.3, 10, 42)
        assert body["messages"][-1] == {"role": "user", "content": RATING_REQUEST}
        assert len(stub.requests) == 24  # every sample failed once, then succeeded
        assert 1 < stub.peak <= 4
        before = len(stub.requests)
        np.testing.assert_allclose(scorer.raw_scores(_samples(12), tmp_path), raw)
        assert len(stub.requests) == before  # all answers came from the cache
    finally:
        stub.close()


def test_endpoint_failures_are_user_errors(tmp_path):
    stub = _Stub(status=401)
    try:
        client = EndpointClient(EndpointSettings(base_url=stub.url, model="m", backoff_s=0.0))
        with pytest.raises(UserError, match="HTTP 401"):
            client.ask([{"role": "user", "content": "hi"}])
    finally:
        stub.close()
    dead = EndpointClient(EndpointSettings(base_url=stub.url, model="m", retries=1, backoff_s=0.0, timeout_s=2))
    with pytest.raises(UserError, match="failed after 2 tries"):
        dead.ask([{"role": "user", "content": "hi"}])
    with pytest.raises(UserError, match="base URL"):
        EndpointClient(EndpointSettings(base_url=None, model=None))


# ---------------------------------------------------------------- CLIP and ImageReward


def _manual_pixels(path, size, mean, std):
    """Independent preprocessing: shortest side to ``size`` (bicubic), centre crop, normalise."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_clip_features_match_independent_preprocessing(tmp_path, select_clip):
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(path)
    conv = [{"from": "human", "value": "<image>\nwhat shape?"}, {"from": "gpt", "value": "circle"}]
    samples = [
        {"status": "ok", "image_path": str(path), "conversations": conv},
        {"status": "text", "image_path": None, "conversations": conv},
        {"status": "missing", "image_path": str(tmp_path / "gone.png"), "conversations": conv},
    ]
    out = clip_features(select_clip, samples, FeatureSettings(workers=0, batch_size=2))
    d = select_clip.embed_dim
    feat = out["feature"]
    assert feat.shape == (3, 2 * d) and feat.dtype == np.float32
    with torch.no_grad():
        ref = select_clip.model.encode_image(_manual_pixels(path, 32, select_clip.mean, select_clip.std)[None]).float()
    ref = (ref / ref.norm()).numpy()[0]
    np.testing.assert_allclose(feat[0, :d], ref, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(feat[:, d:], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(feat[1:, :d], 0.0)  # text-only and missing: zero image half
    assert out["clipscore"][0] == pytest.approx(float(feat[0, :d] @ feat[0, d:]), abs=1e-5)
    assert np.isnan(out["clipscore"][1:]).all()
    np.testing.assert_array_equal(out["image_ok"], [True, False, False])


def test_imagereward_hook_with_a_stub_package(tmp_path, monkeypatch):
    calls = []

    class Model:
        def score(self, text, paths):
            calls.append((text, paths))
            return float(len(text))

    fake = types.ModuleType("ImageReward")
    fake.load = lambda name, device="cpu": Model() if name == "ImageReward-v1.0" else None
    monkeypatch.setitem(sys.modules, "ImageReward", fake)
    conv = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "ab"}]
    samples = [
        {"status": "ok", "image_path": "/x/1.png", "conversations": conv},
        {"status": "text", "image_path": None, "conversations": conv},
    ]
    raw = ImageRewardScorer("cpu", shard_size=1, progress=False).raw_scores(samples, tmp_path)
    assert calls == [("USER: q ASSISTANT: ab", ["/x/1.png"])]
    assert raw[0] == len("USER: q ASSISTANT: ab") and np.isnan(raw[1])
    assert minmax_scale(raw)[1] == 0.0


def _tiny_chat_lm(folder):
    """A random 2-layer LLaMA with a word-level tokenizer and a chat template, saved offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<s>", "</s>", "user:", "assistant:", "q", "a", "7", "8", "/", "10", "good"]
    words += RATING_REQUEST.replace(",", " ").replace(".", " ").replace("(", " ").replace(")", " ").split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def test_local_lm_backend_answers_through_the_chat_template(tmp_path):
    from frugalvl.select.quality import AnswerCache, LocalChatLM

    folder = _tiny_chat_lm(tmp_path / "lm")
    samples = _samples(5)
    runs = []
    for name in ("a", "b"):
        scorer = TextQualityScorer(LocalChatLM(str(folder), "cpu", EndpointSettings()), batch=2, progress=False)
        runs.append(scorer.raw_scores(samples, tmp_path / name))
        answers = AnswerCache(tmp_path / name / "answers.jsonl").answers
        assert sorted(answers) == list(range(5))
    assert np.isfinite(runs[0]).all()
    np.testing.assert_array_equal(runs[0], runs[1])  # seeded sampling: same answers
    with pytest.raises(UserError, match=r"\btext_lm\b") as err:  # the library names the setting...
        LocalChatLM(str(tmp_path / "nothing"), "cpu", EndpointSettings())
    assert "to --text-lm" in render_error(err.value)  # ...and the CLI shows its option


def test_a_refused_request_stops_the_queue(tmp_path):
    stub = _Stub(status=403)
    try:
        scorer = TextQualityScorer(
            EndpointClient(EndpointSettings(base_url=stub.url, model="m", concurrency=2)), progress=False
        )
        with pytest.raises(UserError, match="HTTP 403"):
            scorer.raw_scores(_samples(300), tmp_path)
        assert len(stub.requests) < 20  # the other queued samples were never sent
    finally:
        stub.close()
