"""Per-sample features and quality scores for all N samples (docs/methods/coido.md#features-and-quality-scores).

* CLIP features: the L2-normalised image embedding and the L2-normalised embedding of the flattened
  conversation (77 tokens), concatenated: ``[N, 2D]`` (1536 for ViT-L-14). Samples without a usable
  image get zeros in the image half.
* Scores, in the official order: ``clipscore`` (cosine of the two halves, from the same pass),
  ``imagereward`` (optional package) and ``text_quality`` (an OpenAI-compatible endpoint or a local
  causal LM). Each is min-max scaled to [-1, 1] over the set; a score that does not apply to a sample
  (no image for the image scores) is 0 after scaling, the middle of the range.

Everything long is resumable: CLIP and ImageReward run in shards written atomically, text answers
are cached per sample as they arrive; a rerun computes only what is missing. The settings are in
:mod:`.settings`, the quality scorers in :mod:`.quality`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..settings import FieldError
from .data import flatten_conversation
from .formats.images import open_image
from .quality import quality_scorers
from .settings import CLIP_PRECISIONS as CLIP_PRECISIONS
from .settings import EndpointSettings as EndpointSettings
from .settings import FeatureSettings
from .streaming import ShardHook, assemble_shards, run_sharded

SCORE_ORDER = ("clipscore", "imagereward", "text_quality")
ClipShards = Callable[[Sequence[dict[str, Any]], Path], None]  # (samples, folder): writes the CLIP shards there


# ---------------------------------------------------------------- checks


def check_feature_settings(s: FeatureSettings) -> None:
    """Before any model is loaded or any result replaced: a CLIP named by a path exists (the values
    themselves were checked when the settings were made)."""
    check_clip_path(s.clip)


def check_clip_path(spec: str) -> None:
    """A CLIP spec that names a checkpoint file or folder (``name:path`` included) that does not exist."""
    spec = spec.strip()
    if spec.startswith(("hf-hub:", "local-dir:")) or Path(os.path.expanduser(spec)).exists():
        return
    path = spec.split(":", 1)[1] if ":" in spec else spec
    looks_like_path = (
        path.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors")) or os.sep in path or path.startswith((".", "~"))
    )
    if looks_like_path and not Path(os.path.expanduser(path)).exists():
        raise FieldError(
            "clip", f"{spec}: {path} does not exist: check the path, or give an open_clip model name", FeatureSettings
        )


# ---------------------------------------------------------------- CLIP


class _Images(torch.utils.data.Dataset):
    """Images through the CLIP transform; a zero tensor and ok=False for missing or broken ones."""

    def __init__(self, paths: Sequence[str | None], transform, size: int):
        self.paths, self.transform, self.size = list(paths), transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        if path is not None:
            try:
                with open_image(path) as im:  # a file, or bytes inside the input
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
    # every image of every usable sample; a multi-image sample's embedding is the mean of its images'
    # (docs/methods/coido.md#input-formats), usable when all of them decode
    owners, paths = [], []
    for j, s in enumerate(samples):
        if s["status"] == "ok":
            for source in s.get("image_paths") or [s["image_path"]]:
                owners.append(j)
                paths.append(source)
    loader = torch.utils.data.DataLoader(
        _Images(paths, transform, size), batch_size=settings.batch_size, num_workers=settings.workers, shuffle=False
    )
    total = torch.zeros(len(samples), int(clip.embed_dim))
    decoded = torch.zeros(len(samples))
    owner = torch.as_tensor(owners, dtype=torch.long)
    start = 0
    for pixels, ok in loader:
        emb = clip.model.encode_image(pixels.to(clip.device, clip.dtype)).float().cpu()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        rows = owner[start : start + len(emb)]
        total.index_add_(0, rows, emb * ok[:, None].to(emb))
        decoded.index_add_(0, rows, ok.float())
        start += len(emb)
    wanted = torch.bincount(owner, minlength=len(samples)).float() if len(owners) else torch.zeros(len(samples))
    ok_t = (wanted > 0) & (decoded == wanted)
    image = total / decoded.clamp_min(1)[:, None]
    multi = decoded > 1  # a mean of unit vectors, scaled back to unit length
    image[multi] = image[multi] / image[multi].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    image = image * ok_t[:, None].to(image)
    ok = ok_t.numpy()
    texts = [flatten_conversation(s["conversations"]) for s in samples]
    text = clip.encode_text(texts, batch_size=settings.batch_size).float().cpu()
    score = (image * text).sum(-1).numpy()
    score[~ok] = np.nan
    return {
        "feature": torch.cat([image, text], dim=1).numpy().astype(np.float32),
        "clipscore": score.astype(np.float64),
        "image_ok": ok,
    }


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
