"""``self-filter``: Self-Filter's stage 2 on a scorer trained with L_I only
(docs/methods/coido_baselines.md#baselines; the "L_I only" ablation of CoIDO).

Difficulty = −r of a scorer trained with the importance loss alone:

* ``scorer``: a ``scorer.pt`` written by ``frugalvl select train --loss importance`` (co-trained with the
  MLLM, as Self-Filter; any work folder), or else
* a **linear, bias-free** scorer (Self-Filter's own network) fitted here with L_I = Σ_i B·softmax(r)_i·CE_i
  per micro-batch of B = 16 against the per-sample answer CE of a **frozen** reference LLaVA (the stage-1
  model by default) on the p% subset S (``train_on subset``) or on every eligible sample (``full``). A
  frozen MLLM is a documented simplification: Self-Filter updates the MLLM at the same time.

Selection: the nearest-neighbour filter of Self-Filter's ``dist_filter``: take the highest difficulty, then
lower each of its k = 10 nearest CLIP neighbours j by γ·cos(i, j)²·difficulty_i (γ = 1); repeat. The
difficulty is min–max scaled to [0, 1] over the pool first, so a penalty always lowers a neighbour.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...settings import FieldError
from .common import Inputs, select_with_quotas, unit_rows
from .geometry import knn, penalised_greedy, unit_interval
from .settings import SelfFilterSettings as SelfFilterSettings

log = logging.getLogger(__name__)


def scorer_inputs(inputs: Inputs, rows: np.ndarray) -> np.ndarray:
    """The scorer's input rows: CLIP features ‖ scaled scores (docs/coido_contract.md)."""
    return np.concatenate([np.asarray(inputs.clip[rows], dtype=np.float32), inputs.scaled[rows]], axis=1)


def fit_linear(x: np.ndarray, ce: np.ndarray, settings: SelfFilterSettings) -> np.ndarray:
    """Weights w [F] of r = x·w (no bias) minimising L_I = Σ_i B·softmax(r)_i·CE_i / B over shuffled
    micro-batches (Adam)."""
    import torch

    torch.manual_seed(settings.seed)
    xt, ct = torch.from_numpy(x), torch.from_numpy(ce.astype(np.float32))
    layer = torch.nn.Linear(x.shape[1], 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    opt = torch.optim.Adam(layer.parameters(), lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    for _ in range(settings.epochs):
        order = rng.permutation(len(x))
        for lo in range(0, len(order), settings.batch):
            b = torch.from_numpy(order[lo : lo + settings.batch])
            w = torch.softmax(layer(xt[b]).reshape(-1), dim=0)
            loss = (len(b) * w * ct[b]).sum() / len(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return layer.weight.detach().reshape(-1).numpy()


def raw_scores(inputs: Inputs, settings: SelfFilterSettings) -> tuple[np.ndarray, dict]:
    """r [N] for every eligible sample (nan elsewhere), streamed in chunks, and how it was made."""
    pool = np.flatnonzero(inputs.eligible)
    r = np.full(len(inputs.samples), np.nan)
    if settings.scorer:
        from ..ranking import score_all
        from ..scorer import load_scorer, read_scorer_checkpoint

        loss = (read_scorer_checkpoint(settings.scorer).get("settings") or {}).get("loss")
        if loss not in (None, "importance"):
            log.warning(
                "self-filter: %s was trained with the %s loss, not importance (L_I only)", settings.scorer, loss
            )
        scorer = load_scorer(settings.scorer, settings.device)
        for lo in range(0, len(pool), 65536):
            rows = pool[lo : lo + 65536]
            r[rows] = score_all(scorer, scorer_inputs(inputs, rows), 256, settings.device)
        return r, {"scorer": str(Path(settings.scorer).resolve()), "scorer_loss": loss}
    train = _training_rows(inputs, settings.train_on)
    from .reference import reference_stats

    ce = reference_stats(inputs, settings.reference, settings.batch_size, settings.device, positions=train)["ce"][train]
    keep = np.isfinite(ce)
    w = fit_linear(scorer_inputs(inputs, train[keep]), ce[keep], settings)
    for lo in range(0, len(pool), 65536):
        rows = pool[lo : lo + 65536]
        r[rows] = scorer_inputs(inputs, rows) @ w
    return r, {
        "scorer": "linear (fitted here, frozen reference MLLM)",
        "train_on": settings.train_on,
        "n_train": int(keep.sum()),
    }


def _training_rows(inputs: Inputs, train_on: str) -> np.ndarray:
    if train_on == "full":
        return np.flatnonzero(inputs.eligible)
    if train_on != "subset":
        raise FieldError("train_on", f"{train_on!r} is unknown: choose subset or full", SelfFilterSettings)
    path = inputs.work / "subset" / "indices.npy"
    if not path.is_file():
        raise FieldError(
            "train_on",
            f"{path} is missing: run `frugalvl select cluster` first, or set {{train_on}} full",
            SelfFilterSettings,
        )
    idx = np.load(path).astype(np.int64)
    return idx[inputs.eligible[idx]]


def nn_filter(x: np.ndarray, difficulty: np.ndarray, budget: int, k: int = 10, gamma: float = 1.0) -> np.ndarray:
    """Local indices of ``budget`` rows chosen by Self-Filter's greedy nearest-neighbour filter."""
    nbr, sim = knn(x, k)
    return penalised_greedy(unit_interval(difficulty), nbr, gamma * sim.astype(np.float64) ** 2, budget)


def run(inputs: Inputs, settings: SelfFilterSettings, mode: str):
    r, how = raw_scores(inputs, settings)
    difficulty = -r

    def greedy(pool: np.ndarray, budget: int) -> np.ndarray:
        return pool[nn_filter(unit_rows(inputs.clip[pool]), difficulty[pool], budget, settings.k, settings.gamma)]

    chosen, quotas = select_with_quotas(inputs, greedy, mode)
    return chosen, quotas, difficulty, how
