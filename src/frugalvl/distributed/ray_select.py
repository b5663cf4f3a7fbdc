"""``frugalvl select features|score --engine ray``: CoIDO's per-sample stages on a Ray cluster (docs/ray.md).

* **features** (docs/methods/coido.md#features-and-quality-scores): the stage runs as always
  (:func:`frugalvl.select.pipeline.features`: checks, record, quality scorers, ``clip.npy``, ``scores.json`` and
  the report); through its ``compute=`` hook the CLIP shards ``features/clip_shards/shard-KKKKK-LO-HI.npz`` are
  computed by an actor pool (one CLIP per actor, one shard per row, written atomically by the worker under the same
  name and with the same arrays as the single-process :func:`frugalvl.select.features.run_sharded`), so the local
  pass finds every CLIP shard done.
* **score** (docs/methods/coido.md#scorer-network): the N rows of ``[features, scaled scores]`` go to the actors in
  chunks that are whole multiples of the batch size, so every batch the scorer sees is the one the single-process
  path sees; ``pipeline.score`` (through its ``compute=`` hook) writes ``r.npy`` and ``difficulty.json``.

``cluster``, ``train`` and ``pick`` read these files unchanged.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .cluster import map_with_pool, plan_pool, ray_session

log = logging.getLogger(__name__)

SCORE_CHUNK_BATCHES = 64  # scorer batches per score row


# ---------------------------------------------------------------------------------------------
# features: CLIP shards
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ShardRow:
    path: str
    samples: list


def shard_path(folder: Path, k: int, lo: int, hi: int) -> Path:
    """The name :func:`frugalvl.select.features.run_sharded` gives shard ``k`` of ``[lo, hi)``."""
    return folder / f"shard-{k:05d}-{lo}-{hi}.npz"


class ClipShardWorker:
    """A Ray Data actor: one CLIP, one shard per row, saved as the single-process path saves it."""

    def __init__(self, settings: Any) -> None:
        from ..models.clip import load_clip

        self.settings = settings
        self.clip = load_clip(settings.clip, settings.device, settings.precision)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from ..fileio import atomic_path
        from ..select.features import clip_features

        done = []
        for blob in batch["row"]:
            row: _ShardRow = pickle.loads(blob)
            path = Path(row.path)
            if not path.is_file():
                arrays = clip_features(self.clip, row.samples, self.settings)
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.savez(f, **arrays)
            done.append(row.path)
        return {"path": done}


def features_ray(
    work: str | Path,
    settings: Any,
    force: bool = False,
    hook: Any = None,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`frugalvl.select.pipeline.features` with its CLIP shards computed on Ray; returns the report.

    The stage runs as always (checks, record, the other scorers, ``clip.npy``); only its CLIP pass goes
    to the actors, through the stage's ``compute=`` hook.
    """
    from ..select import pipeline

    def on_ray(samples: Sequence[dict[str, Any]], shards: Path) -> None:
        shards.mkdir(parents=True, exist_ok=True)
        rows = []
        for k, lo in enumerate(range(0, len(samples), settings.shard_size)):
            hi = min(len(samples), lo + settings.shard_size)
            path = shard_path(shards, k, lo, hi)
            if not path.is_file():
                rows.append({"row": pickle.dumps(_ShardRow(str(path), list(samples[lo:hi])))})
        log.info("features: %d CLIP shard(s) to compute on Ray", len(rows))
        if rows:
            with ray_session(ray_address) as ray:
                pool = plan_pool(ray, workers, gpus_per_worker, device or settings.device)
                results = map_with_pool(ray, rows, ClipShardWorker, (settings,), pool)
                _drain(ray, results, len(rows), "clip (ray)", progress)

    return pipeline.features(work, settings, force, hook, compute=on_ray)


# ---------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------


class ScoreWorker:
    """A Ray Data actor: the trained scorer and the memory-mapped features; one chunk of rows per row."""

    def __init__(self, work: str, device: str, batch_size: int) -> None:
        from ..select.scorer import load_scorer
        from ..select.workdir import load_features

        self.clip, _, self.scaled = load_features(work)
        self.scorer = load_scorer(Path(work) / "train" / "scorer.pt", device)
        self.device, self.batch_size = device, batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from ..select.ranking import score_all

        out_lo, out_r = [], []
        for lo, hi in zip(batch["lo"], batch["hi"]):
            lo, hi = int(lo), int(hi)
            inputs = np.concatenate([np.asarray(self.clip[lo:hi], dtype=np.float32), self.scaled[lo:hi]], axis=1)
            out_lo.append(lo)
            out_r.append(score_all(self.scorer, inputs, self.batch_size, self.device).astype(np.float32).tobytes())
        return {"lo": out_lo, "r": out_r}


def score_ray(
    work: str | Path,
    batch_size: int = 256,
    device: str = "cpu",
    force: bool = False,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    progress: bool = True,
    chunk_batches: int = SCORE_CHUNK_BATCHES,
) -> np.ndarray:
    """:func:`frugalvl.select.pipeline.score` on Ray: the same checks, ``r.npy`` and ``difficulty.json``.

    ``chunk_batches``: scorer batches per Ray row (rows are whole batches, so the arithmetic is the same).
    """
    from ..select import pipeline

    def on_ray(scorer: Any, clip: np.ndarray, scaled: np.ndarray) -> np.ndarray:
        n, chunk = len(clip), batch_size * max(1, chunk_batches)
        rows = [{"lo": lo, "hi": min(n, lo + chunk)} for lo in range(0, n, chunk)]
        parts: dict[int, np.ndarray] = {}
        with ray_session(ray_address) as ray:
            pool = plan_pool(ray, workers, gpus_per_worker, device)
            results = map_with_pool(ray, rows, ScoreWorker, (str(work), device, batch_size), pool)
            for row in _drain(ray, results, len(rows), "score (ray)", progress):
                parts[int(row["lo"])] = np.frombuffer(row["r"], dtype=np.float32)
        return np.concatenate([parts[lo] for lo in sorted(parts)]) if parts else np.zeros(0, np.float32)

    return pipeline.score(work, batch_size, device, force, compute=on_ray)


def _drain(ray: Any, results: Any, total: int, desc: str, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    out = []
    try:
        for row in tqdm(results, total=total, desc=desc, unit="row", disable=not progress):
            out.append(row)
    except ray.exceptions.RayError as exc:
        raise UserError(
            f"the Ray job stopped ({str(exc).splitlines()[0][:160]}): finished shards are kept; "
            "run the same command again to resume"
        ) from None
    return out
