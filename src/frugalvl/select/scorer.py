"""The CoIDO scorer: per-sample features -> one raw score r (docs/methods/coido.md#scorer-network).

Input of sample i: ``[CLIP image ‖ CLIP text] ‖ [enabled quality scores]`` (the contract's scorer
input). The network is the HEAD one, generalised in two ways: the CLIP projector's input width is the
CLIP feature width (1536 for ViT-L/14), and there is one score projector sized to the enabled score
list (0 scores: no score branch, the fusion then sees only the CLIP projection).

    clip_projector    D -> 768 -> 512 -> 384
    scores_projector  n -> 128 -> 256 -> 384
    fusion_network    concat -> 768 -> 384 -> 384, final LayerNorm
    feature_enhancer  384 -> 768 -> 384 -> 384, final LayerNorm, used residually
    classifier        384 -> 256 -> 128 -> 1 (dropouts 0.2 then 0.1)

Hidden layers are Linear -> LayerNorm -> GELU -> Dropout. r is raw: no squashing. Low r marks a hard
sample (#why-a-low-r-is-kept), so selection keeps the lowest r.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..fileio import atomic_path

HIDDEN = 384
INTERMEDIATE = 768
DROPOUT = 0.2
FORMAT = "frugalvl.coido.scorer/1"  # marks our checkpoints apart from any other .pt file


def _block(d_in: int, d_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.GELU(), nn.Dropout(dropout)]


def _mlp(widths: Sequence[int], dropouts: Sequence[float], final_norm: bool) -> nn.Sequential:
    """Hidden blocks between ``widths``; the last layer is a plain Linear (+ LayerNorm if asked)."""
    layers: list[nn.Module] = []
    for d_in, d_out, p in zip(widths[:-2], widths[1:-1], dropouts):
        layers += _block(d_in, d_out, p)
    layers.append(nn.Linear(widths[-2], widths[-1]))
    if final_norm:
        layers.append(nn.LayerNorm(widths[-1]))
    return nn.Sequential(*layers)


class Scorer(nn.Module):
    """Maps ``x = [clip features ‖ scores]`` of shape ``[B, feature_dim + n_scores]`` to ``r`` ``[B]``."""

    def __init__(
        self,
        feature_dim: int = 1536,
        score_names: Sequence[str] = ("clipscore", "imagereward", "text_quality"),
        dropout: float = DROPOUT,
    ):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.score_names = list(score_names)
        n = len(self.score_names)
        self.clip_projector = _mlp([self.feature_dim, 768, 512, HIDDEN], [dropout] * 2, final_norm=False)
        self.scores_projector = _mlp([n, 128, 256, HIDDEN], [dropout] * 2, final_norm=False) if n else None
        fused = HIDDEN * (2 if n else 1)
        self.fusion_network = _mlp([fused, INTERMEDIATE, HIDDEN, HIDDEN], [dropout] * 2, final_norm=True)
        self.feature_enhancer = _mlp([HIDDEN, INTERMEDIATE, HIDDEN, HIDDEN], [dropout] * 2, final_norm=True)
        self.classifier = _mlp([HIDDEN, 256, 128, 1], [dropout, dropout / 2], final_norm=False)
        self.apply(_init_weights)

    @property
    def input_dim(self) -> int:
        return self.feature_dim + len(self.score_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"scorer expects {self.input_dim} input features "
                f"({self.feature_dim} CLIP + {len(self.score_names)} scores), got {x.shape[-1]}"
            )
        h = self.clip_projector(x[:, : self.feature_dim])
        if self.scores_projector is not None:
            h = torch.cat([h, self.scores_projector(x[:, self.feature_dim :])], dim=1)
        f = self.fusion_network(h)
        f = f + self.feature_enhancer(f)
        return self.classifier(f).squeeze(-1)


def _init_weights(module: nn.Module) -> None:
    # The official heads are initialised by HF post_init, i.e. the LLaMA initialiser (std 0.02).
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def save_scorer(path: str | os.PathLike, scorer: Scorer, extra: dict[str, Any] | None = None) -> None:
    """Write the scorer atomically: state dict, ``feature_dim``, ``score_names`` and ``extra``.

    ``extra`` carries what the trainer knows: ``s1``, ``s2``, the settings, the step count.
    """
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in scorer.state_dict().items()},
        "feature_dim": scorer.feature_dim,
        "score_names": list(scorer.score_names),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_scorer_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (with ``s1``, ``s2``, ``settings`` when the trainer wrote it)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"scorer checkpoint {path} does not exist: run `frugalvl select train` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(
            f"cannot read scorer checkpoint {path} ({type(exc).__name__}): "
            "pass the train/scorer.pt written by `frugalvl select train`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a CoIDO scorer checkpoint: pass the train/scorer.pt written by `frugalvl select train`"
        )
    return payload


def load_scorer(path: str | os.PathLike, device: str | torch.device = "cpu") -> Scorer:
    """Rebuild the scorer from :func:`save_scorer`'s file, in eval mode on ``device``."""
    payload = read_scorer_checkpoint(path)
    scorer = Scorer(payload["feature_dim"], payload["score_names"])
    try:
        scorer.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise UserError(
            f"{path}: the scorer weights do not match its recorded shape "
            f"({payload['feature_dim']} features, scores {payload['score_names']}): "
            "re-run `frugalvl select train`"
        ) from exc
    return scorer.to(device).eval()


def check_score_names(scorer: Scorer, names: Sequence[str]) -> None:
    """Refuse to score with a list of quality scores other than the one the scorer was trained on.

    The order matters too: the score projector reads the scores by position
    (docs/methods/coido.md#features-and-quality-scores).
    """
    if list(names) != list(scorer.score_names):
        raise UserError(
            f"the scorer was trained with scores {scorer.score_names} but the features have "
            f"{list(names)}: recompute the features with the same scores, or retrain the scorer"
        )
