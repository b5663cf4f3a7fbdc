"""Settings of the baselines, with the published defaults (docs/methods/coido_baselines.md).

Free of numpy and torch, so that ``frugalvl select baseline`` builds its options from these fields
without loading the baselines. Fields of the same name in several baselines share one option; each
baseline module re-exports its own class. Values are checked when the settings are made
(:class:`~frugalvl.settings.FieldError` naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import check_above, check_at_least, check_choice, option

DIFFICULTIES = ("clipscore", "ce", "r")
BANDS = ("top", "middle", "bottom")
TRAIN_ON = ("subset", "full")
DEVICE_HELP = "reference model / scorer device: cpu, cuda or cuda:N"
REFERENCE_HELP = "reference LLaVA (folder or hub id)"
REFERENCE_SHOWN = "WORK/train/mllm, the stage-1 model saved by the train stage"


@dataclass(frozen=True)
class RandomSettings:
    seed: int = option(42, "seed of the draw")


@dataclass(frozen=True)
class ClipScoreSettings:
    score: str = option("clipscore", "which scaled score to rank by")  # any enabled score ranks the same way


@dataclass(frozen=True)
class SemDedupSettings:
    clusters: int | None = option(None, "k-means centroids", parse=int, shown="ceil(N/66): 10,000 for 665K")
    seed: int = option(42, "k-means seed")
    iters: int = option(20, "k-means iterations", cli=False)
    block: int = option(2048, "columns per similarity block inside a large cluster", cli=False)

    def __post_init__(self) -> None:
        check_at_least(self, ("clusters",), 1, optional=True)
        check_at_least(self, ("iters", "block"), 1)


@dataclass(frozen=True)
class D2Settings:
    difficulty: str = option(
        "clipscore",
        "node difficulty: CLIP score, stage-1 CE of the reference, or -r of the scorer",
        choices=DIFFICULTIES,
    )
    k: int = option(5, "kNN")
    gamma: float = option(0.4, "message decay")  # γ of the forward and the reverse pass
    reference: str | None = option(None, REFERENCE_HELP, shown=REFERENCE_SHOWN)  # the CE of difficulty ce
    batch_size: int = option(4, "reference model forward batch")
    device: str = option("cpu", DEVICE_HELP)

    def __post_init__(self) -> None:
        check_choice(self, "difficulty", DIFFICULTIES)
        check_at_least(self, ("k", "batch_size"), 1)
        check_above(self, ("gamma",))


@dataclass(frozen=True)
class SelfFilterSettings:
    scorer: str | None = option(
        None,
        "a scorer.pt trained with the importance loss",
        shown="fit a linear scorer here with L_I on the reference's CE",
    )
    train_on: str = option("subset", "fit on S (from the cluster stage) or every sample", choices=TRAIN_ON)
    reference: str | None = option(None, REFERENCE_HELP, shown=REFERENCE_SHOWN)  # the CE of the linear fit
    gamma: float = option(1.0, "penalty")
    k: int = option(10, "neighbours")
    epochs: int = option(3, "epochs of the linear fit (Self-Filter's stage 1 runs 3)", cli=False)
    lr: float = option(1e-3, "learning rate of the linear fit", cli=False)
    batch: int = option(16, "batch of the linear fit", cli=False)
    seed: int = option(42, "seed of the linear fit")
    batch_size: int = option(4, "reference model forward batch")
    device: str = option("cpu", DEVICE_HELP)

    def __post_init__(self) -> None:
        check_choice(self, "train_on", TRAIN_ON)
        check_at_least(self, ("k", "epochs", "batch", "batch_size"), 1)
        check_above(self, ("gamma", "lr"))


@dataclass(frozen=True)
class LossBandSettings:
    band: str | None = option(
        None, "the band of values kept", choices=BANDS, shown="top for el2n, middle for perplexity"
    )
    reference: str | None = option(None, REFERENCE_HELP, shown=REFERENCE_SHOWN)
    batch_size: int = option(4, "reference model forward batch")
    device: str = option("cpu", DEVICE_HELP)

    def __post_init__(self) -> None:
        check_choice(self, "band", BANDS, optional=True)
        check_at_least(self, ("batch_size",), 1)


@dataclass(frozen=True)
class CoincideSettings:
    clusters: int | None = option(None, "k-means centroids", parse=int, shown="ceil(pool/66)")
    temperature: float = option(0.1, "T of the budget softmax")
    sigma: float = option(1.0, "kernel width", cli=False)
    transfer_cap: float = option(
        0.9, "centroids more similar than this are not counted in the transferability", cli=False
    )
    seed: int = option(42, "k-means seed")
    iters: int = option(20, "k-means iterations", cli=False)

    def __post_init__(self) -> None:
        check_at_least(self, ("clusters",), 1, optional=True)
        check_at_least(self, ("iters",), 1)
        check_above(self, ("temperature", "sigma"))
