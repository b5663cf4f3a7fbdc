"""Per-sample features and quality scores for all N samples (docs/methods/coido.md#features-and-quality-scores).

* CLIP features: the L2-normalised image embedding and the L2-normalised embedding of the flattened
  conversation (77 tokens), concatenated: ``[N, 2D]`` (1536 for ViT-L-14). Samples without a usable
  image get zeros in the image half.
* Scores, in the official order: ``clipscore`` (cosine of the two halves, from the same pass),
  ``imagereward`` (optional package) and ``text_quality`` (an OpenAI-compatible endpoint or a local
  causal LM). Each is min-max scaled to [-1, 1] over the set; a score that does not apply to a sample
  (no image for the image scores) is 0 after scaling, the middle of the range.

Everything long is resumable: CLIP and ImageReward run in shards written atomically, text answers
are cached per sample as they arrive; a rerun computes only what is missing.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_path
from ..precision import FIXED
from .data import flatten_conversation
from .prompting import IMAGE_TAG
from .streaming import assemble_shards

SCORE_ORDER = ("clipscore", "imagereward", "text_quality")
RATING_REQUEST = (
    "Rate the overall quality of the conversation above as training data for a visual "
    "assistant, on a scale from 0 (useless) to 10 (excellent). Give the rating alone on the first line."
)
ShardHook = Callable[[str, int], None]  # (what, shard index), called after each shard is saved
ClipShards = Callable[[Sequence[dict[str, Any]], Path], None]  # (samples, folder): writes the CLIP shards there


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class EndpointSettings:
    """An OpenAI-compatible chat endpoint; the defaults are the official query settings."""

    base_url: str | None = None  # e.g. https://api.deepseek.com/v1 (env OPENAI_BASE_URL)
    model: str | None = None  # e.g. deepseek-chat (env FRUGALVL_TEXT_MODEL)
    api_key: str | None = None  # env OPENAI_API_KEY
    concurrency: int = 8
    retries: int = 5
    backoff_s: float = 1.0  # first retry wait, doubled each time
    timeout_s: float = 60.0
    temperature: float = 1.3
    max_tokens: int = 10
    seed: int = 42

    def resolved(self) -> EndpointSettings:
        """Settings with the environment filling what options left out."""
        from dataclasses import replace

        return replace(
            self,
            base_url=self.base_url or os.environ.get("OPENAI_BASE_URL"),
            model=self.model or os.environ.get("FRUGALVL_TEXT_MODEL"),
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY"),
        )


@dataclass(frozen=True)
class FeatureSettings:
    clip: str = "ViT-L-14"  # any spec load_clip accepts; ViT-L-14 gets the openai weights
    device: str = "cpu"
    precision: str | None = None  # fp16 on CUDA, fp32 elsewhere
    batch_size: int = 64
    workers: int = 4  # image-decoding processes
    shard_size: int = 10000
    imagereward: str = "auto"  # auto (when installed with weights) | on | off
    text_quality: str = "auto"  # auto (endpoint if configured, else local LM if given) | endpoint | local | off
    text_lm: str | None = None  # transformers causal LM id or folder for the local backend
    text_lm_batch: int = 8
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)
    progress: bool = True


CLIP_PRECISIONS = FIXED
CHOICES = {"imagereward": ("auto", "on", "off"), "text_quality": ("auto", "endpoint", "local", "off")}


def check_feature_settings(s: FeatureSettings) -> None:
    """One line for the first bad setting, before any model is loaded or any result replaced: numbers
    in range, and a CLIP or local LM named by a path that exists."""
    for name in ("batch_size", "shard_size", "text_lm_batch"):
        if getattr(s, name) < 1:
            raise UserError(f"--{_flag(name)} must be at least 1, got {getattr(s, name)}")
    if s.workers < 0:
        raise UserError(f"--workers must be at least 0, got {s.workers}")
    if s.endpoint.concurrency < 1 or s.endpoint.retries < 0:
        raise UserError(
            f"--text-concurrency must be at least 1 and --text-retries at least 0, "
            f"got {s.endpoint.concurrency} and {s.endpoint.retries}"
        )
    if s.precision is not None and s.precision not in CLIP_PRECISIONS:
        raise UserError(f"--clip-precision {s.precision!r}: choose one of {', '.join(CLIP_PRECISIONS)}")
    for name, choices in CHOICES.items():
        if getattr(s, name) not in choices:
            raise UserError(f"--{_flag(name)} {getattr(s, name)!r}: choose one of {', '.join(choices)}")
    check_clip_path(s.clip)


def _flag(name: str) -> str:
    return {"batch_size": "clip-batch-size"}.get(name, name.replace("_", "-"))


def check_clip_path(spec: str) -> None:
    """A ``--clip`` that names a checkpoint file or folder (``name:path`` included) that does not exist."""
    spec = spec.strip()
    if spec.startswith(("hf-hub:", "local-dir:")) or Path(os.path.expanduser(spec)).exists():
        return
    path = spec.split(":", 1)[1] if ":" in spec else spec
    looks_like_path = (
        path.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors")) or os.sep in path or path.startswith((".", "~"))
    )
    if looks_like_path and not Path(os.path.expanduser(path)).exists():
        raise UserError(f"--clip {spec}: {path} does not exist: check the path, or give an open_clip model name")


# ---------------------------------------------------------------- sharded work


def run_sharded(
    n: int,
    shard_size: int,
    folder: Path,
    what: str,
    compute: Callable[[int, int], dict[str, np.ndarray]],
    hook: ShardHook | None = None,
    progress: bool = True,
    keep: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``compute(lo, hi)`` over shards of [0, n), saving each to ``folder`` atomically and
    reusing saved shards; return the arrays concatenated (only those named in ``keep``, when given: large
    arrays stay on disk and are assembled by :func:`frugalvl.select.streaming.assemble_shards`)."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, shard_size))
    parts: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=n, desc=what, unit="sample", disable=not progress)
    for k, lo in enumerate(starts):
        hi = min(n, lo + shard_size)
        path = folder / f"shard-{k:05d}-{lo}-{hi}.npz"
        if not path.is_file():
            arrays = compute(lo, hi)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
            if hook:
                hook(what, k)
        with np.load(path) as z:
            parts.append({key: z[key] for key in z.files if keep is None or key in keep})
        bar.update(hi - lo)
    bar.close()
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# ---------------------------------------------------------------- CLIP


class _Images(torch.utils.data.Dataset):
    """Images through the CLIP transform; a zero tensor and ok=False for missing or broken ones."""

    def __init__(self, paths: Sequence[str | None], transform, size: int):
        self.paths, self.transform, self.size = list(paths), transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.paths[i]
        if path is not None:
            try:
                with Image.open(path) as im:
                    return self.transform(im), True
            except Exception:  # noqa: BLE001 - decoded late; reported as corrupt
                pass
        return torch.zeros(3, self.size, self.size), False


def clip_transform(clip) -> tuple[Callable, int]:
    """open_clip's evaluation transform for this model (shortest side resize, centre crop, its mean/std)."""
    from open_clip.transform import image_transform

    size = clip.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return image_transform(size, is_train=False, mean=clip.mean, std=clip.std), size


@torch.no_grad()
def clip_features(clip, samples: Sequence[dict[str, Any]], settings: FeatureSettings) -> dict[str, np.ndarray]:
    """``feature`` [n, 2D], ``clipscore`` [n] (nan without a usable image) and ``image_ok`` [n] for a slice."""
    transform, size = clip_transform(clip)
    paths = [s["image_path"] if s["status"] == "ok" else None for s in samples]
    loader = torch.utils.data.DataLoader(
        _Images(paths, transform, size), batch_size=settings.batch_size, num_workers=settings.workers, shuffle=False
    )
    image_parts, ok_parts = [], []
    for pixels, ok in loader:
        emb = clip.model.encode_image(pixels.to(clip.device, clip.dtype)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        image_parts.append(emb * ok[:, None].to(emb))
        ok_parts.append(ok)
    image = torch.cat(image_parts).cpu()
    ok = torch.cat(ok_parts).numpy()
    texts = [flatten_conversation(s["conversations"]) for s in samples]
    text = clip.encode_text(texts, batch_size=settings.batch_size).float().cpu()
    score = (image * text).sum(-1).numpy()
    score[~ok] = np.nan
    return {
        "feature": torch.cat([image, text], dim=1).numpy().astype(np.float32),
        "clipscore": score.astype(np.float64),
        "image_ok": ok,
    }


# ---------------------------------------------------------------- quality scorers


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
            raise UserError(
                "text quality from an endpoint needs a base URL and a model: pass --text-endpoint URL "
                "--text-model NAME (or set OPENAI_BASE_URL and FRUGALVL_TEXT_MODEL)"
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
                    raise UserError(
                        f"text endpoint {self.url} refused the request (HTTP {exc.code}): "
                        "check --text-endpoint, --text-model and the API key"
                    ) from None
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = type(exc).__name__ + (f" {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")
            except (KeyError, IndexError, TypeError, json.JSONDecodeError):
                last = "a reply that is not a chat completion"
        raise UserError(
            f"text endpoint {self.url} failed after {s.retries + 1} tries ({last}; no network?): "
            "check the URL, or pass --text-quality off; answers so far are cached and a rerun resumes"
        )


class LocalChatLM:
    """A transformers causal LM answering the same messages through its chat template."""

    def __init__(self, name: str, device: str, settings: EndpointSettings):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            self.model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
        except OSError as exc:
            raise UserError(
                f"cannot load the text LM {name!r} ({type(exc).__name__}): give a local folder or a "
                "downloaded hub id to --text-lm"
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


def minmax_scale(values: np.ndarray) -> np.ndarray:
    """Min-max to [-1, 1] over the finite values; nan (score not applicable) becomes 0, a constant 0."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.zeros_like(values)
    if finite.any():
        lo, hi = values[finite].min(), values[finite].max()
        if hi > lo:
            out[finite] = 2.0 * (values[finite] - lo) / (hi - lo) - 1.0
    return out


def quality_scorers(settings: FeatureSettings) -> tuple[list[QualityScorer], dict[str, str]]:
    """The enabled quality scorers in the official order, and why each other one is off."""
    scorers: list[QualityScorer] = []
    off: dict[str, str] = {}
    if settings.imagereward == "off":
        off["imagereward"] = "turned off (--imagereward off)"
    else:
        try:
            scorers.append(ImageRewardScorer(settings.device, settings.shard_size, settings.progress))
        except Exception as exc:  # noqa: BLE001 - package or weights absent
            if settings.imagereward == "on":
                raise UserError(
                    f"ImageReward is not usable ({type(exc).__name__}: {exc}): pip install image-reward "
                    "and make the ImageReward-v1.0 weights available, or pass --imagereward off"
                ) from None
            off["imagereward"] = (
                f"not available ({type(exc).__name__}): install image-reward with its weights to use it"
            )
    mode = settings.text_quality
    endpoint = settings.endpoint.resolved()
    if mode == "auto":
        mode = "endpoint" if endpoint.base_url and endpoint.model else "local" if settings.text_lm else "off"
        if mode == "off":
            off["text_quality"] = "no endpoint (--text-endpoint/--text-model) and no local LM (--text-lm) configured"
    elif mode == "off":
        off["text_quality"] = "turned off (--text-quality off)"
    if mode == "endpoint":
        scorers.append(TextQualityScorer(EndpointClient(endpoint), progress=settings.progress))
    elif mode == "local":
        if not settings.text_lm:
            raise UserError("--text-quality local needs --text-lm MODEL (a transformers causal LM id or folder)")
        scorers.append(
            TextQualityScorer(
                LocalChatLM(settings.text_lm, settings.device, settings.endpoint),
                settings.text_lm_batch,
                settings.progress,
            )
        )
    return scorers, off


# ---------------------------------------------------------------- the stage


def extract_features(
    samples: Sequence[dict[str, Any]],
    folder: Path,
    settings: FeatureSettings,
    hook: ShardHook | None = None,
    clip_shards: ClipShards | None = None,
) -> dict[str, Any]:
    """CLIP features and every enabled score for ``samples``, cached under ``folder``.

    ``clip_shards(samples, shard_folder)``, when given, computes the CLIP shards first (elsewhere: the
    Ray engine); the local pass then finds them done. Returns ``clip`` [N, 2D] float32, ``names``,
    ``raw`` and ``scaled`` score dicts, ``report``.
    """
    from ..models.clip import load_clip

    scorers, off = quality_scorers(settings)  # first: a bad endpoint setting fails before the long pass
    if clip_shards is not None:
        clip_shards(samples, folder / "clip_shards")
    clip = load_clip(settings.clip, settings.device, settings.precision)
    clip_out = run_sharded(
        len(samples),
        settings.shard_size,
        folder / "clip_shards",
        "clip",
        lambda lo, hi: clip_features(clip, samples[lo:hi], settings),
        hook,
        settings.progress,
        keep=("clipscore", "image_ok"),
    )
    # the [N, 2D] features go from the shards into clip.npy one shard at a time: never held whole
    features = assemble_shards(folder / "clip_shards", "feature", folder / "clip.npy", len(samples))
    raw = {"clipscore": clip_out["clipscore"]}
    for scorer in scorers:
        raw[scorer.name] = scorer.raw_scores(samples, folder / scorer.name, hook)
    names = [n for n in SCORE_ORDER if n in raw]
    report = {
        "clip": clip.identity,
        "embed_dim": clip.embed_dim,
        "feature_dim": int(features.shape[1]),
        "scores": names,
        "disabled": off,
        "image_decode_failed": [
            s["id"] for s, ok in zip(samples, clip_out["image_ok"]) if s["status"] == "ok" and not ok
        ],
        "note": "no quality scorer configured: the CLIP score alone is used" if names == ["clipscore"] else None,
    }
    return {
        "clip": features,
        "names": names,
        "image_ok": clip_out["image_ok"],
        "raw": {n: raw[n] for n in names},
        "scaled": {n: minmax_scale(raw[n]) for n in names},
        "report": report,
    }
