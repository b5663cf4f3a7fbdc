"""The quality scores of CoIDO's features stage: ImageReward and an LLM's rating
(docs/methods/coido.md#features-and-quality-scores).

* ``imagereward``: ImageReward-v1.0 (the optional ``image-reward`` package) on each sample with an image;
* ``text_quality``: a 0-10 rating of each conversation by a chat LLM, asked through an OpenAI-compatible
  endpoint (official: DeepSeek) or a local transformers causal LM; answers are cached per sample as they
  arrive, so a killed run resumes.

:func:`quality_scorers` turns the feature settings into the enabled scorers, in the official order.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..settings import FieldError
from .data import flatten_conversation
from .prompting import IMAGE_TAG
from .settings import EndpointSettings, FeatureSettings
from .streaming import ShardHook, run_sharded

RATING_REQUEST = (
    "Rate the overall quality of the conversation above as training data for a visual "
    "assistant, on a scale from 0 (useless) to 10 (excellent). Give the rating alone on the first line."
)


class QualityScorer(Protocol):
    """One scalar per sample; nan where the score does not apply. ``folder`` holds its cache."""

    name: str

    def raw_scores(self, samples: Sequence[dict[str, Any]], folder: Path, hook: ShardHook | None) -> np.ndarray: ...


class ImageRewardScorer:
    """ImageReward-v1.0 (``image-reward`` package): ``model.score(text, [image_path])``."""

    name = "imagereward"

    def __init__(self, device: str, shard_size: int, progress: bool):
        import ImageReward as RM  # noqa: N813 - the package's own spelling

        self.model = RM.load("ImageReward-v1.0", device=device)
        self.shard_size, self.progress = shard_size, progress

    def raw_scores(self, samples, folder, hook=None):
        def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
            out = np.full(hi - lo, np.nan)
            for j, s in enumerate(samples[lo:hi]):
                if s["status"] == "ok":
                    value = self.model.score(flatten_conversation(s["conversations"]), [s["image_path"]])
                    out[j] = float(value[0] if isinstance(value, (list, tuple)) else value)
            return {"score": out}

        return run_sharded(len(samples), self.shard_size, folder, "imagereward", compute, hook, self.progress)["score"]


def rating_messages(conversations: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation as user/assistant chat messages, then the request for a 0-10 rating."""
    messages = [
        {
            "role": "user" if t.get("from") == "human" else "assistant",
            "content": str(t.get("value", "")).replace(IMAGE_TAG, "").strip(),
        }
        for t in conversations
    ]
    return messages + [{"role": "user", "content": RATING_REQUEST}]


def parse_rating(answer: str | None) -> float | None:
    """The official rule: the last word of the first line, before any '/', as a float; else None."""
    if not answer or not answer.strip():
        return None
    first = answer.strip().splitlines()[0].split("/")[0].split()
    try:
        value = float(first[-1]) if first else None
    except ValueError:
        return None
    return value if value is not None and np.isfinite(value) else None


class AnswerCache:
    """Answers per ``unique_idx`` in a JSON-lines file, appended as they arrive (thread safe)."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()
        self.answers: dict[int, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.answers[int(row["idx"])] = str(row["answer"])
                except (json.JSONDecodeError, KeyError, ValueError):
                    continue  # a line cut short by a kill
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, idx: int, answer: str) -> None:
        with self.lock:
            self.answers[idx] = answer
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"idx": idx, "answer": answer}, ensure_ascii=False) + "\n")
                f.flush()


class EndpointClient:
    """Chat completions from an OpenAI-compatible endpoint over the standard library's HTTP."""

    def __init__(self, settings: EndpointSettings):
        s = settings.resolved()
        if not s.base_url or not s.model:
            raise FieldError(
                ("base_url", "model"),
                "text quality from an endpoint needs a base URL ({base_url} URL) and a model ({model} NAME), "
                "or OPENAI_BASE_URL and FRUGALVL_TEXT_MODEL set",
                EndpointSettings,
            )
        self.settings = s
        self.url = s.base_url.rstrip("/") + (
            "" if s.base_url.rstrip("/").endswith("/chat/completions") else "/chat/completions"
        )

    def ask(self, messages: list[dict[str, str]]) -> str:
        s = self.settings
        body = json.dumps(
            {
                "model": s.model,
                "messages": messages,
                "temperature": s.temperature,
                "max_tokens": s.max_tokens,
                "seed": s.seed,
                "stream": False,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        last = ""
        for attempt in range(s.retries + 1):
            if attempt:
                time.sleep(s.backoff_s * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=s.timeout_s) as response:
                    reply = json.loads(response.read().decode("utf-8"))
                return str(reply["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as exc:
                if exc.code in (400, 401, 403, 404):
                    raise FieldError(
                        ("base_url", "model"),
                        f"text endpoint {self.url} refused the request (HTTP {exc.code}): "
                        "check {base_url}, {model} and the API key",
                        EndpointSettings,
                    ) from None
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = type(exc).__name__ + (f" {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")
            except (KeyError, IndexError, TypeError, json.JSONDecodeError):
                last = "a reply that is not a chat completion"
        raise FieldError(
            "text_quality",
            f"text endpoint {self.url} failed after {s.retries + 1} tries ({last}; no network?): "
            "check the URL, or set {text_quality} off; answers so far are cached and a rerun resumes",
            FeatureSettings,
        )


class LocalChatLM:
    """A transformers causal LM answering the same messages through its chat template."""

    def __init__(self, name: str, device: str, settings: EndpointSettings):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            self.model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
        except OSError as exc:
            raise FieldError(
                "text_lm",
                f"cannot load the text LM {name!r} ({type(exc).__name__}): give a local folder or a "
                "downloaded hub id to {text_lm}",
                FeatureSettings,
            ) from None
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.settings, self.device = settings, device

    @torch.no_grad()
    def ask_batch(self, batch: list[list[dict[str, str]]], seed: int) -> list[str]:
        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(seed)
        out = self.model.generate(
            **enc,
            do_sample=True,
            temperature=self.settings.temperature,
            max_new_tokens=self.settings.max_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


class TextQualityScorer:
    """0-10 ratings of each conversation (text only), unparsable answers replaced by the mean."""

    name = "text_quality"

    def __init__(self, backend: EndpointClient | LocalChatLM, batch: int = 8, progress: bool = True):
        self.backend, self.batch, self.progress = backend, batch, progress

    def raw_scores(self, samples, folder, hook=None):
        from tqdm.auto import tqdm

        cache = AnswerCache(folder / "answers.jsonl")
        todo = [s for s in samples if s["unique_idx"] not in cache.answers]
        bar = tqdm(
            total=len(samples),
            initial=len(samples) - len(todo),
            desc="text_quality",
            unit="sample",
            disable=not self.progress,
        )
        backend = self.backend
        if isinstance(backend, EndpointClient):

            def one(s: dict[str, Any]) -> None:
                cache.add(s["unique_idx"], backend.ask(rating_messages(s["conversations"])))
                bar.update(1)

            pool = ThreadPoolExecutor(self.backend.settings.concurrency)
            try:
                step = 64 * self.backend.settings.concurrency  # bounded number of queued requests
                for i in range(0, len(todo), step):
                    for _ in pool.map(one, todo[i : i + step]):
                        pass
            finally:  # on an error, drop the queued requests instead of sending them all
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for i in range(0, len(todo), self.batch):
                chunk = todo[i : i + self.batch]
                answers = self.backend.ask_batch(
                    [rating_messages(s["conversations"]) for s in chunk],
                    self.backend.settings.seed + chunk[0]["unique_idx"],
                )
                for s, a in zip(chunk, answers):
                    cache.add(s["unique_idx"], a)
                bar.update(len(chunk))
        bar.close()
        return ratings_from_answers([cache.answers[s["unique_idx"]] for s in samples])


def ratings_from_answers(answers: Sequence[str]) -> np.ndarray:
    """Parsed ratings, unparsable ones replaced by the mean of the parsed (0 when none parse)."""
    values = np.array([np.nan if (v := parse_rating(a)) is None else v for a in answers], dtype=np.float64)
    fill = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    values[~np.isfinite(values)] = fill
    return values


def quality_scorers(settings: FeatureSettings) -> tuple[list[QualityScorer], dict[str, str]]:
    """The enabled quality scorers in the official order, and why each other one is off."""
    scorers: list[QualityScorer] = []
    off: dict[str, str] = {}
    if settings.imagereward == "off":
        off["imagereward"] = "turned off (imagereward: off)"
    else:
        try:
            scorers.append(ImageRewardScorer(settings.device, settings.shard_size, settings.progress))
        except Exception as exc:  # noqa: BLE001 - package or weights absent
            if settings.imagereward == "on":
                raise FieldError(
                    "imagereward",
                    f"ImageReward is not usable ({type(exc).__name__}: {exc}): pip install image-reward "
                    "and make the ImageReward-v1.0 weights available, or set {imagereward} off",
                    FeatureSettings,
                ) from None
            off["imagereward"] = (
                f"not available ({type(exc).__name__}): install image-reward with its weights to use it"
            )
    mode = settings.text_quality
    endpoint = settings.endpoint.resolved()
    if mode == "auto":
        mode = "endpoint" if endpoint.base_url and endpoint.model else "local" if settings.text_lm else "off"
        if mode == "off":
            off["text_quality"] = "no endpoint (base URL and model) and no local LM (text_lm) configured"
    elif mode == "off":
        off["text_quality"] = "turned off (text_quality: off)"
    if mode == "endpoint":
        scorers.append(TextQualityScorer(EndpointClient(endpoint), progress=settings.progress))
    elif mode == "local":
        if not settings.text_lm:
            raise FieldError(
                ("text_quality", "text_lm"),
                "{text_quality} local needs {text_lm} MODEL (a transformers causal LM id or folder)",
                FeatureSettings,
            )
        scorers.append(
            TextQualityScorer(
                LocalChatLM(settings.text_lm, settings.device, settings.endpoint),
                settings.text_lm_batch,
                settings.progress,
            )
        )
    return scorers, off
