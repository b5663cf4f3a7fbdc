"""Per-sample losses of a reference LLaVA: EL2N and perplexity (docs/methods/coido_baselines.md#baselines), and the
stage-1 CE that D2-Pruning and Self-Filter can use as difficulty.

For each eligible sample, one forward pass (Vicuna v1 prompt, image tokens, labels −100 outside the
answers, exactly as training builds it) gives, over its answer tokens t:

* ``ce``    mean token cross-entropy −log p(y_t) (the stage-1 CE);
* ``ppl``   exp(ce), the perplexity;
* ``el2n``  mean ‖softmax(logits_t) − onehot(y_t)‖₂ (EL2N, data_diet).

The reference is the stage-1 model by default (``WORK/train/mllm``, written by ``select train
--save-mllm``) or any LLaVA ``load_llava`` reads. Results stream to ``WORK/reference/<model id>/`` in
shards (a killed run resumes) and are shared by every baseline that asks for the same model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError
from ...settings import FieldError
from .common import Inputs

log = logging.getLogger(__name__)
STATS = ("ce", "ppl", "el2n")


def resolve_reference(work: Path, reference: str | None) -> str:
    """The reference model spec: the one given, else the stage-1 model saved in the work folder."""
    if reference:
        return reference
    saved = work / "train" / "mllm"
    if not (saved / "config.json").is_file():
        raise FieldError(
            ("reference", "save_mllm"),
            f"no stage-1 model in {saved}: give {{reference}} LLAVA (a LLaVA folder or hub id), or train "
            "with `frugalvl select train` and {save_mllm}",
        )
    return str(saved)


def sample_stats(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean answer-token CE and EL2N from ``logits`` [B, T, V] and ``labels`` [B, T] (−100 ignored;
    nan for a sample with no answer token)."""
    import torch
    import torch.nn.functional as F

    from ..losses import IGNORE_INDEX

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    safe = target.masked_fill(~mask, 0)
    ce = F.cross_entropy(logits.transpose(1, 2), safe, reduction="none")
    prob = torch.softmax(logits, dim=-1)
    onehot = F.one_hot(safe, prob.shape[-1]).to(prob.dtype)
    el2n = (prob - onehot).norm(dim=-1)
    count = mask.sum(dim=1).clamp(min=1).float()
    mean = lambda v: ((v * mask).sum(dim=1) / count).masked_fill(mask.sum(dim=1) == 0, float("nan"))  # noqa: E731
    return mean(ce).cpu().numpy().astype(np.float64), mean(el2n).cpu().numpy().astype(np.float64)


def _batch(llava: Any, samples: Sequence[dict[str, Any]], max_length: int, aspect: str):
    import torch

    from ..batching import load_pixels
    from ..losses import IGNORE_INDEX
    from ..prompting import has_image, tokenize_sample

    image_tokens = llava.tokenizer.convert_ids_to_tokens(llava.image_token_id) * llava.image_seq_length
    rows, pixels = [], []
    for s in samples:
        image = has_image(s)
        if image:
            pixels.append(load_pixels(s["image_path"], llava.image_processor, aspect))
        rows.append(tokenize_sample(llava.tokenizer, s["conversations"], image_tokens if image else None, max_length))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), llava.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (i, lab) in enumerate(rows):
        ids[b, : len(i)], labels[b, : len(lab)], mask[b, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    return ids, mask, labels, (torch.stack(pixels) if pixels else None)


def compute_stats(
    llava: Any, samples: Sequence[dict[str, Any]], batch_size: int = 4, max_length: int = 2048, aspect: str = "pad"
) -> dict[str, np.ndarray]:
    """``ce``, ``el2n`` [n] for ``samples``, image and text-only samples batched apart (as training does)."""
    import torch

    model = llava.model.eval()
    device = next(model.parameters()).device
    ce, el2n = np.full(len(samples), np.nan), np.full(len(samples), np.nan)
    from ..prompting import has_image

    for group in (True, False):
        where = [i for i, s in enumerate(samples) if has_image(s) == group]
        for lo in range(0, len(where), batch_size):
            part = where[lo : lo + batch_size]
            ids, mask, labels, pixels = _batch(llava, [samples[i] for i in part], max_length, aspect)
            with torch.no_grad():
                kwargs = {"pixel_values": pixels.to(device, model.dtype)} if pixels is not None else {}
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
            c, e = sample_stats(logits, labels.to(device))
            ce[part], el2n[part] = c, e
    return {"ce": ce, "el2n": el2n}


def reference_stats(
    inputs: Inputs,
    reference: str | None,
    batch_size: int = 4,
    device: str = "cpu",
    shard_size: int = 2000,
    progress: bool = False,
    positions: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``ce``, ``ppl``, ``el2n`` [N] for ``positions`` (default: every eligible sample; nan elsewhere),
    cached per reference model and set of positions."""
    from ...models.llava import load_llava
    from ..features import run_sharded
    from ..workdir import model_identity

    spec = resolve_reference(inputs.work, reference)
    ident = model_identity(spec) or spec
    pool = np.flatnonzero(inputs.eligible) if positions is None else np.asarray(positions, dtype=np.int64)
    key = hashlib.sha256(ident.encode() + np.ascontiguousarray(pool).tobytes()).hexdigest()[:16]
    folder = inputs.work / "reference" / key
    state: dict[str, Any] = {}

    def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
        if "llava" not in state:
            log.info("reference losses from %s (%d samples)", spec, len(pool))
            state["llava"] = load_llava(spec, device)
        out = compute_stats(state["llava"], [inputs.samples[i] for i in pool[lo:hi]], batch_size)
        return {"position": pool[lo:hi], **out}

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.txt").write_text(f"{spec}\n{ident}\n")
    got = run_sharded(len(pool), shard_size, folder / "shards", "reference", compute, progress=progress)
    if len(pool) and not np.array_equal(got["position"], pool):
        raise UserError(f"{folder} holds reference losses for other samples: delete it and run again")
    stats = {name: np.full(len(inputs.samples), np.nan) for name in STATS}
    if len(pool):
        stats["ce"][pool], stats["el2n"][pool] = got["ce"], got["el2n"]
        stats["ppl"][pool] = np.exp(got["ce"])
    return stats
