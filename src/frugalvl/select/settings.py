"""Settings of the CoIDO stages (prepare, features, cluster, score, pick), with the official defaults.

Free of torch and numpy, so that ``frugalvl select`` builds its options from these fields without
loading a model library; the stage modules re-export their own class. Every value is checked when the
settings are made: a :class:`~frugalvl.settings.FieldError` names the field (the CLI shows its option).
The coupled training's settings are in :mod:`.train_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..precision import FIXED
from ..settings import FieldError, check_above, check_at_least, check_choice, option

MISSING_POLICIES = ("exclude", "error")
CLIP_PRECISIONS = FIXED
IMAGEREWARD_MODES = ("auto", "on", "off")
TEXT_QUALITY_MODES = ("auto", "endpoint", "local", "off")
SOLVERS = ("auto", "exact", "fast")
PICK_MODES = ("quota", "global")
INPUT_FORMATS = ("auto", "llava", "jsonl", "sharegpt", "parquet", "hf-disk", "webdataset")


def default_workers(most: int) -> int:
    """``most`` worker processes, or the CPUs this process may use when fewer (no DataLoader warning
    about more workers than CPUs on a small machine)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(most, cpus))


@dataclass(frozen=True)
class PrepareSettings:
    """Stage 1: how the samples and their images are checked."""

    image_root: str | None = option(None, "folder the samples' 'image' paths are relative to", metavar="DIR")
    format: str = option(
        "auto",
        "input format (auto: detected from the input's name and first records)",
        choices=INPUT_FORMATS,
    )
    missing_images: str = option(
        "exclude",
        "samples whose image is missing or corrupt, or that are invalid: exclude them from training and "
        "selection, listed in the report, or stop with an error",
        choices=MISSING_POLICIES,
    )
    verify_images: bool = option(True, "only check that image files exist (faster)")
    workers: int = option(8, "threads for the image checks", cli=False)
    allow_absolute_images: bool = option(
        False, "accept absolute image paths and paths leading out of the image root ('..'); refused by default"
    )

    def __post_init__(self) -> None:
        check_choice(self, "missing_images", MISSING_POLICIES)
        check_choice(self, "format", INPUT_FORMATS)
        check_at_least(self, ("workers",), 1)


@dataclass(frozen=True)
class EndpointSettings:
    """An OpenAI-compatible chat endpoint; the defaults are the official query settings."""

    base_url: str | None = option(
        None,
        "OpenAI-compatible base URL (env OPENAI_BASE_URL), e.g. https://api.deepseek.com/v1",
        flag="--text-endpoint",
        metavar="URL",
    )
    model: str | None = option(
        None, "chat model at the endpoint (env FRUGALVL_TEXT_MODEL), e.g. deepseek-chat", flag="--text-model"
    )
    api_key: str | None = option(
        None, "API key (env OPENAI_API_KEY; prefer the environment)", flag="--text-api-key", metavar="KEY"
    )
    concurrency: int = option(8, "parallel endpoint requests", flag="--text-concurrency")
    retries: int = option(5, "retries per request, with exponential backoff", flag="--text-retries")
    backoff_s: float = option(1.0, "first retry wait in seconds, doubled each time", cli=False)
    timeout_s: float = option(60.0, "seconds before a request is given up", cli=False)
    temperature: float = option(1.3, "sampling temperature of the rating", cli=False)
    max_tokens: int = option(10, "longest answer", cli=False)
    seed: int = option(42, "sampling seed", cli=False)

    def __post_init__(self) -> None:
        check_at_least(self, ("concurrency", "max_tokens"), 1)
        check_at_least(self, ("retries",), 0)
        check_at_least(self, ("backoff_s",), 0.0)
        check_above(self, ("timeout_s",))

    def resolved(self) -> EndpointSettings:
        """Settings with the environment filling what options left out."""
        return replace(
            self,
            base_url=self.base_url or os.environ.get("OPENAI_BASE_URL"),
            model=self.model or os.environ.get("FRUGALVL_TEXT_MODEL"),
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY"),
        )


@dataclass(frozen=True)
class FeatureSettings:
    """Stage 2: the CLIP and the quality scorers."""

    clip: str = option(
        "ViT-L-14",
        "CLIP: open_clip name[:tag], hf-hub:ID, folder or OpenAI-format checkpoint file",
        shown="ViT-L-14, openai weights",
    )
    device: str = option("cpu", "cpu, cuda or cuda:N")
    precision: str | None = option(
        None, "CLIP precision", flag="--clip-precision", choices=CLIP_PRECISIONS, shown="fp16 on CUDA, else fp32"
    )
    batch_size: int = option(64, "images per CLIP batch", flag="--clip-batch-size")
    workers: int = option(
        default_factory=lambda: default_workers(4),
        help="image-decoding processes",
        shown="4, or this machine's CPUs when fewer",
    )
    shard_size: int = option(10000, "samples per saved shard")
    imagereward: str = option(
        "auto",
        "ImageReward score: auto = when the image-reward package and weights are present",
        choices=IMAGEREWARD_MODES,
    )
    text_quality: str = option(
        "auto",
        "LLM text-quality score: auto = the endpoint when configured, else the local LM when given",
        choices=TEXT_QUALITY_MODES,
    )
    text_lm: str | None = option(None, "local transformers causal LM (hub id or folder) for the local text quality")
    text_lm_batch: int = option(8, "conversations per local LM batch", cli=False)
    endpoint: EndpointSettings = option(default_factory=EndpointSettings, help="the text endpoint", cli=False)
    progress: bool = option(True, "no progress bars")  # the switch turns them off

    def __post_init__(self) -> None:
        check_at_least(self, ("batch_size", "shard_size", "text_lm_batch"), 1)
        check_at_least(self, ("workers",), 0)
        check_choice(self, "precision", CLIP_PRECISIONS, optional=True)
        check_choice(self, "imagereward", IMAGEREWARD_MODES)
        check_choice(self, "text_quality", TEXT_QUALITY_MODES)


@dataclass(frozen=True)
class ClusterSettings:
    """Stage 3: the random subset S and its spectral clustering (the official recipe)."""

    ratio: float = option(0.2, "p: fraction drawn as the training subset S, in (0, 1]", flag="--subset-ratio")
    seed: int = option(42, "seed of the draw", flag="--subset-seed")
    n_clusters: int = option(20, "spectral clusters K", flag="--clusters")
    knn: int = option(30, "neighbours in the affinity graph, self included (capped at n - 1)")
    clip_weight: float = option(0.7, "weight of the CLIP half of a clustered row", cli=False)
    score_weight: float = option(0.3, "weight of the scores' z-scores in a clustered row", cli=False)
    random_state: int = option(42, "the clusterer's seed", cli=False)
    block: int = option(4096, "rows per similarity block (memory ~ block x |S| floats)", cli=False)
    device: str = option("cpu", "device of the kNN search: cpu, cuda or cuda:N")
    solver: str = option(
        "auto",
        "auto: exact kNN and eigensolver up to 20K points, faiss kNN + AMG/LOBPCG above; exact or fast to force one",
        flag="--cluster-solver",
        choices=SOLVERS,
    )
    exact_max: int = option(20000, "auto: the exact solver up to this many points", cli=False)
    flat_max: int = option(30000, "fast: exact kNN up to this many points, HNSW candidates above", cli=False)
    pca_dim: int = option(128, "fast, large n: HNSW over this PCA projection ...", cli=False)
    pca_sample: int = option(20000, "... fitted on this many rows", cli=False)
    candidates: int = option(2, "... returning candidates x k, re-ranked by the exact cosine", cli=False)
    hnsw_m: int = option(16, "HNSW graph degree", cli=False)
    hnsw_ef: int = option(64, "HNSW search and construction breadth", cli=False)
    eigen_tol: float = option(1e-5, "fast: LOBPCG tolerance ...", cli=False)
    eigen_maxiter: int = option(200, "... and iteration limit", cli=False)

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:  # nan fails too
            raise FieldError("ratio", f"must be in (0, 1], got {self.ratio}", ClusterSettings)
        check_at_least(self, ("n_clusters", "knn", "block", "exact_max", "flat_max", "pca_dim"), 1)
        check_at_least(self, ("pca_sample", "candidates", "hnsw_m", "hnsw_ef", "eigen_maxiter"), 1)
        check_at_least(self, ("clip_weight", "score_weight"), 0.0)
        check_above(self, ("eigen_tol",))
        check_choice(self, "solver", SOLVERS)


@dataclass(frozen=True)
class ScoreSettings:
    """Stage 5: scoring every sample with the trained scorer."""

    batch_size: int = option(256, "samples per scorer batch", flag="--score-batch-size")
    device: str = option("cpu", "cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        check_at_least(self, ("batch_size",), 1)


def budgets(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser of one value, or of several separated by commas (a tuple: one selection each)."""

    def parse(text: str) -> Any:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        try:
            values = tuple(kind(p) for p in parts)
        except ValueError:
            raise ValueError(f"{text!r} is not a {kind.__name__} or a comma-separated list of them") from None
        if not values:
            raise ValueError("give a value")
        return values[0] if len(values) == 1 else values

    return parse


@dataclass(frozen=True)
class PickSettings:
    """Stage 6: how many samples are kept, and how."""

    ratio: float = option(
        0.2, "keep this fraction of N, in (0, 1]; pick takes several, comma-separated", parse=budgets(float)
    )
    count: int | None = option(
        None, "keep exactly this many samples (overrides the ratio); pick takes several", parse=budgets(int)
    )
    mode: str = option(
        "quota",
        "keep the lowest r overall instead of per-source proportional quotas",
        flag="--global",
        const="global",
    )
    exclude_text: bool = option(False, "never select text-only samples (official behaviour)")
    add_fields: bool = option(False, "add unique_idx and dataset to the written records")
    full_finetune_hours: float | None = option(
        None, "hours a full fine-tuning on all the data takes: the report gives the selection's cost as a fraction"
    )

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise FieldError("count", f"must be at least 1, got {self.count}", PickSettings)
        if self.count is None and not 0 < self.ratio <= 1:  # nan fails too; a count overrides the ratio
            raise FieldError("ratio", f"must be in (0, 1], got {self.ratio}", PickSettings)
        check_choice(self, "mode", PICK_MODES)
        if self.full_finetune_hours is not None and not self.full_finetune_hours > 0:
            raise FieldError("full_finetune_hours", f"must be above 0, got {self.full_finetune_hours}", PickSettings)
