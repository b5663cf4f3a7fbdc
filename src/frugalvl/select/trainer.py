"""Stage 4 of CoIDO: the scorer and the MLLM trained together on the subset S (spec §1.3, §1.4, §2.4).

Per per-device micro-batch of B samples (all image or all text when grouping by modality):

    r = scorer([CLIP ‖ scores])            [B]
    w = softmax(r)                         Σw = 1
    logits = LLaVA(prompt, image)          Vicuna v1 prompt, labels −100 outside the answers
    L_I, L_D, total (losses.py)            total = L_I·e^{−2 s1} + L_D·e^{−2 s2}/2 + s1 + s2

and AdamW steps the LM + projector (or a LoRA adapter), the scorer and s1/s2 (own lr option). The
vision tower is frozen. Devices, mixed precision and multi-GPU (DDP, DeepSpeed, FSDP) come from
accelerate: ``accelerate launch -m frugalvl select train ...``.

Checkpoints (``train/checkpoints/step-N/``: accelerate state + ``trainer_state.json``) are written
to a temporary folder and renamed; a run restarted on the same work folder continues from the
latest one and ends where the uninterrupted run would: the data order is a function of the seed and
the epoch, and the RNG states are restored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..fileio import write_json
from . import losses as L
from .scorer import Scorer, save_scorer

# Vicuna v1 conversation template (LLaVA's conv_vicuna_v1): system, "USER: … ASSISTANT: …</s>"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ROLES = {"human": "USER", "gpt": "ASSISTANT"}
IMAGE_TAG = "<image>"
USABLE = ("ok", "text")           # sample statuses that can be trained on (prepare's policy)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class TrainSettings:
    """Stage-1 settings; defaults from the official run_stage1.sh (spec §1.4)."""

    mllm: str = ""                        # folder, hub id or lm=...,projector=...,vision=... (models/llava.py)
    loss: str = "coido"                   # one of losses.LOSS_VARIANTS
    lam: float | None = None              # λ for importance+diversity / weighted
    lr: float = 2e-5
    uncertainty_lr: float | None = None   # lr of s1/s2; None = lr (one group, as the paper's code)
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: int = 1
    batch_size: int = 16                  # per device; the softmax runs over this micro-batch
    grad_accum: int = 1
    max_grad_norm: float = 1.0            # HF Trainer's default, in force in the official run
    max_length: int = 2048
    precision: str = "auto"               # auto = bf16 on GPU, fp32 on CPU
    tf32: bool = True
    gradient_checkpointing: bool = True
    group_by_modality: bool = True
    image_aspect_ratio: str = "pad"       # LLaVA-1.5: pad to a square with the mean colour
    lora: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    save_steps: int = 1000
    keep_checkpoints: int = 1             # newest checkpoints kept (0 = all)
    seed: int = 42
    num_workers: int = 2
    save_mllm: bool = False               # also write the trained MLLM (or adapter) to train/mllm/

    @property
    def s_lr(self) -> float:
        return self.lr if self.uncertainty_lr is None else self.uncertainty_lr


# Settings that do not change the result: a checkpoint made under other values still resumes.
_RESUME_FREE = {"save_steps", "keep_checkpoints", "num_workers", "save_mllm", "gradient_checkpointing"}


# ----------------------------------------------------------------------------------------- inputs

@dataclass
class Subset:
    """The training subset S as read from the work folder (docs/coido_contract.md)."""

    samples: list[dict[str, Any]]     # prepare/samples.json rows of S, in subset order
    features: np.ndarray              # [|S|, D + n_scores] scorer inputs
    clusters: np.ndarray              # [|S|] cluster labels (−1: none)
    feature_dim: int
    score_names: list[str]


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path} is missing: run `frugalvl select {stage}` on this work folder first")
    return path


def read_subset(work: Path) -> Subset:
    """Scorer inputs, cluster labels and samples of S; unusable samples dropped (prepare's status,
    ``features/image_ok.npy`` when present)."""
    samples = json.loads(_need(work / "prepare/samples.json", "prepare").read_text(encoding="utf-8"))
    clip = np.load(_need(work / "features/clip.npy", "features"), mmap_mode="r")
    scores = json.loads(_need(work / "features/scores.json", "features").read_text(encoding="utf-8"))
    indices = np.load(_need(work / "subset/indices.npy", "cluster")).astype(np.int64)
    clusters = np.load(_need(work / "subset/clusters.npy", "cluster")).astype(np.int64)
    names = list(scores.get("names", []))
    if clip.shape[0] != len(samples) or any(len(scores["scaled"][n]) != len(samples) for n in names):
        raise UserError(f"{work}: features and prepare/samples.json disagree on N: re-run `frugalvl select features --force`")
    if len(indices) != len(clusters) or (len(indices) and (indices.min() < 0 or indices.max() >= len(samples))):
        raise UserError(f"{work}/subset: indices.npy and clusters.npy do not fit the samples: re-run `frugalvl select cluster --force`")
    # prepare's status, and the features stage's image_ok (an image that failed to decode there)
    image_ok = np.load(work / "features/image_ok.npy") if (work / "features/image_ok.npy").is_file() else None
    keep = [k for k, i in enumerate(indices) if samples[i].get("status", "ok") in USABLE
            and (image_ok is None or samples[i].get("status") == "text" or bool(image_ok[i]))]
    if not keep:
        raise UserError(f"{work}: no usable sample in the training subset: check prepare/report.json")
    indices, clusters = indices[keep], clusters[keep]
    score_cols = np.stack([np.asarray(scores["scaled"][n], dtype=np.float32)[indices] for n in names], 1) \
        if names else np.zeros((len(indices), 0), np.float32)
    features = np.concatenate([np.asarray(clip[indices], dtype=np.float32), score_cols], axis=1)
    return Subset([samples[i] for i in indices], features, clusters, int(clip.shape[1]), names)


def has_image(sample: dict[str, Any]) -> bool:
    return sample.get("status", "ok") == "ok" and bool(sample.get("image_path"))


def estimated_length(sample: dict[str, Any], image_tokens: int) -> int:
    """Length for length grouping, as LLaVA's ``modality_lengths``: words (+ image tokens), signed
    positive for image samples and negative for text-only ones."""
    words = sum(len(str(t.get("value", "")).split()) for t in sample["conversations"])
    return words + image_tokens if has_image(sample) else -max(words, 1)


def build_prompt(conversations: Sequence[dict[str, Any]], image_tokens: str | None) -> tuple[str, list[tuple[int, int]]]:
    """Vicuna v1 prompt text and the character spans of the targets (each answer plus ``</s>``).

    The first human turn gets the image tokens in front, as LLaVA moves ``<image>`` there; a sample
    without a usable image gets no image tokens (``<image>`` is removed from its text).
    """
    text, spans = VICUNA_SYSTEM + " ", []
    turns = list(conversations)
    if turns and turns[0].get("from") != "human":   # LLaVA drops a leading non-human turn
        turns = turns[1:]
    for k, turn in enumerate(turns):
        value = str(turn.get("value", "")).replace(IMAGE_TAG, "").strip()
        role = ROLES.get(turn.get("from"), "USER")
        if role == "USER":
            if k == 0 and image_tokens:
                value = image_tokens + "\n" + value
            text += f"USER: {value} "
        else:
            text += "ASSISTANT: "
            start = len(text)
            text += value + "</s>"
            spans.append((start, len(text)))
    return text, spans


def tokenize_sample(tokenizer, conversations, image_tokens: str | None, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (−100 on system, human turns, image tokens and role names)."""
    text, spans = build_prompt(conversations, image_tokens)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    labels = [tid if any(s < b and e > a for a, b in spans) else L.IGNORE_INDEX
              for tid, (s, e) in zip(ids, offsets)]
    if tokenizer.bos_token_id is not None:
        ids, labels = [tokenizer.bos_token_id] + ids, [L.IGNORE_INDEX] + labels
    return ids[:max_length], labels[:max_length]


def load_pixels(path: str, image_processor, aspect: str) -> torch.Tensor:
    """One image as the processor's pixel tensor; 'pad' squares it with the mean colour first."""
    from PIL import Image

    with Image.open(path) as im:
        image = im.convert("RGB")
    if aspect == "pad" and image.width != image.height:
        mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), tuple(int(255 * m) for m in mean))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    return image_processor(images=image, return_tensors="pt")["pixel_values"][0]


@dataclass
class Batch:
    """One micro-batch, ready for the coupled model."""

    input_ids: torch.Tensor        # [B, T]
    attention_mask: torch.Tensor   # [B, T]
    labels: torch.Tensor           # [B, T]
    pixel_values: torch.Tensor | None   # [n_images, 3, H, W], image samples only, in order
    features: torch.Tensor         # [B, D + n_scores]
    clusters: torch.Tensor         # [B]
    unique_idx: torch.Tensor       # [B]

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(*(move(getattr(self, f.name)) for f in fields(self)))


class MicroBatches(torch.utils.data.Dataset):
    """Item j = this process's micro-batch in global batch j of a plan (see :func:`plan_batches`)."""

    def __init__(self, subset: Subset, plan: list[list[int]], tokenizer, image_processor, image_seq_length: int,
                 image_token: str, pad_id: int, settings: TrainSettings):
        self.subset, self.plan, self.tokenizer, self.image_processor = subset, plan, tokenizer, image_processor
        self.image_tokens = image_token * image_seq_length
        self.image_seq_length, self.pad_id, self.settings = image_seq_length, pad_id, settings

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, j: int) -> Batch:
        rows, pixels = [], []
        for k in self.plan[j]:
            sample = self.subset.samples[k]
            image = has_image(sample)
            if image:
                try:
                    pixels.append(load_pixels(sample["image_path"], self.image_processor, self.settings.image_aspect_ratio))
                except (OSError, ValueError):
                    # The official reader skips an unreadable image; prepare should have caught it.
                    print(f"[coido train] skipping sample {sample.get('unique_idx')}: cannot read {sample['image_path']}")
                    continue
            ids, labels = tokenize_sample(self.tokenizer, sample["conversations"],
                                          self.image_tokens if image else None, self.settings.max_length)
            if image and ids.count(self.tokenizer.convert_tokens_to_ids(IMAGE_TAG)) != self.image_seq_length:
                raise UserError(f"--max-length {self.settings.max_length} cuts into the image tokens of sample "
                                f"{sample.get('unique_idx')}: raise it above {self.image_seq_length}")
            rows.append((k, ids, labels))
        return self._collate(rows, pixels)

    def _collate(self, rows, pixels) -> Batch:
        width = max(len(ids) for _, ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), L.IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (_, ids, lab) in enumerate(rows):   # right padding, as LLaVA's collator
            input_ids[b, :len(ids)], labels[b, :len(lab)], mask[b, :len(ids)] = torch.tensor(ids), torch.tensor(lab), 1
        ks = [k for k, _, _ in rows]
        return Batch(input_ids, mask, labels, torch.stack(pixels) if pixels else None,
                     torch.from_numpy(self.subset.features[ks]), torch.from_numpy(self.subset.clusters[ks]),
                     torch.tensor([int(self.subset.samples[k]["unique_idx"]) for k in ks]))


def plan_batches(lengths: Sequence[int], batch_size: int, world: int, seed: int, epoch: int,
                 group_by_modality: bool) -> list[list[list[int]]]:
    """Global batches for one epoch: each a list of ``world`` micro-batches of subset positions.

    As LLaVA's modality-length grouping: samples are shuffled within each modality, cut into
    megabatches of ``world × batch_size``, sorted by length inside a megabatch and dealt to the
    devices; megabatches are then shuffled. Unlike LLaVA, the two modalities' remainders are not
    merged into one mixed batch, so every softmax and L_D compares same-modality samples. A remainder
    smaller than ``world`` cannot give every device a sample and is dropped.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    lengths = list(lengths)
    everything = list(range(len(lengths)))
    groups = ([[i for i in everything if lengths[i] > 0], [i for i in everything if lengths[i] < 0]]
              if group_by_modality else [everything])
    megabatches = []
    size = batch_size * world
    for group in groups:
        order = [group[i] for i in torch.randperm(len(group), generator=g).tolist()]
        for start in range(0, len(order), size):
            mega = sorted(order[start:start + size], key=lambda i: abs(lengths[i]), reverse=True)
            if len(mega) >= world:
                megabatches.append([mega[d::world] for d in range(world)])
    return [megabatches[i] for i in torch.randperm(len(megabatches), generator=g).tolist()]


# ------------------------------------------------------------------------------------------ model

class CoupledModel(nn.Module):
    """The MLLM, the scorer and s1/s2 (log σ) in one module, so one optimiser and one DDP wrapper
    cover them; ``forward`` returns the objective of the chosen loss variant and its parts."""

    def __init__(self, mllm: nn.Module, scorer: Scorer, loss: str = "coido", lam: float | None = None):
        super().__init__()
        self.mllm, self.scorer, self.loss, self.lam = mllm, scorer, loss, lam
        self.s1 = nn.Parameter(torch.zeros(()), requires_grad=loss == "coido")
        self.s2 = nn.Parameter(torch.zeros(()), requires_grad=loss == "coido")

    def forward(self, batch: Batch) -> L.Losses:
        out = self.mllm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        pixel_values=batch.pixel_values, use_cache=False)
        r = self.scorer(batch.features.to(next(self.scorer.parameters()).dtype))
        return L.coido_losses(r, out.logits, batch.labels, batch.clusters, self.loss,
                              self.s1.float(), self.s2.float(), self.lam)


def prepare_mllm(model: nn.Module, settings: TrainSettings) -> nn.Module:
    """Freeze the vision tower; train LM + projector, or a LoRA adapter on the LM + the projector."""
    model.model.vision_tower.requires_grad_(False)
    if settings.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):      # transformers ≥ 5.2x name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not settings.lora:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
                        modules_to_save=["multi_modal_projector"], bias="none")
    if settings.gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, config)


def param_groups(coupled: CoupledModel, settings: TrainSettings) -> list[dict[str, Any]]:
    """AdamW groups: weights (wd), biases and norms (no wd), and s1/s2 at ``uncertainty_lr``."""
    decay, no_decay = [], []
    for name, p in coupled.named_parameters():
        if p.requires_grad and name not in ("s1", "s2"):
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if settings.loss == "coido":
        groups.append({"params": [coupled.s1, coupled.s2], "weight_decay": 0.0, "lr": settings.s_lr})
    return groups


# ------------------------------------------------------------------------------------ checkpoints

def clear_training(work: Path) -> None:
    """Forget a previous run (scorer, history, checkpoints), so that the next :func:`train` starts
    afresh instead of resuming; what ``--force`` should do before training."""
    shutil.rmtree(Path(work) / "train", ignore_errors=True)


def checkpoint_dirs(work: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted save are ignored)."""
    root = work / "train/checkpoints"
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _result_settings(settings: TrainSettings) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if k not in _RESUME_FREE}


def save_checkpoint(accelerator, work: Path, step: int, done: int, history: list[dict], settings: TrainSettings) -> Path:
    """accelerate state + trainer_state.json under a temporary name, renamed when complete."""
    root = work / "train/checkpoints"
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()          # every process has written its RNG state
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, {"step": step, "batches_done": done, "history": history,
                                      "settings": _result_settings(settings)})
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_dirs(work)[:-settings.keep_checkpoints or None] if settings.keep_checkpoints else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_state(accelerator, work: Path, settings: TrainSettings) -> tuple[int, int, list[dict]]:
    """Restore the latest checkpoint; (optimiser steps, global batches done, history), zeros if none."""
    found = checkpoint_dirs(work)
    if not found:
        return 0, 0, []
    state = json.loads((found[-1] / STATE_FILE).read_text())
    wanted = _result_settings(settings)
    changed = sorted(k for k in wanted if state["settings"].get(k) != wanted[k])
    if changed:
        raise UserError(f"{found[-1]} was made with other settings ({', '.join(changed)}): "
                        f"rerun with the same ones, or delete {work / 'train'} (--force) to start over")
    accelerator.load_state(str(found[-1]))
    accelerator.print(f"[coido train] resuming from {found[-1]}")
    return int(state["step"]), int(state["batches_done"]), list(state["history"])


# --------------------------------------------------------------------------------------- training

def _accelerator(settings: TrainSettings):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    if precision != "fp32" and not torch.cuda.is_available():
        raise UserError(f"--precision {precision} needs a GPU here: use fp32 on CPU")
    if settings.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # text-only micro-batches leave the projector and the vision path unused: DDP must allow that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # cpu=True without CUDA: accelerate then sets up gloo for several CPU processes (torchrun)
    # step_scheduler_with_optimizer=False: our schedule already counts global steps, so accelerate must
    # not step it once per process
    return Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision), cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[ddp], step_scheduler_with_optimizer=False)


def _check_settings(settings: TrainSettings) -> None:
    if not settings.mllm:
        raise UserError("no MLLM given: pass --mllm with a LLaVA folder, a hub id, or lm=...,projector=...,vision=...")
    if settings.loss not in L.LOSS_VARIANTS:
        raise UserError(f"--loss {settings.loss!r} is unknown: choose one of {', '.join(L.LOSS_VARIANTS)}")
    if settings.scheduler != "cosine":
        raise UserError(f"--scheduler {settings.scheduler!r}: only cosine (the official one) is implemented")
    if settings.batch_size < 1 or settings.grad_accum < 1 or settings.epochs < 1:
        raise UserError("--batch-size, --grad-accum and --epochs must be at least 1")


def _cosine_scheduler(optimizer, total: int, warmup_ratio: float):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total), total)


def build_training(work: Path, settings: TrainSettings, accelerator):
    """Everything a run needs: coupled model, optimiser, scheduler, data, plans per epoch."""
    from ..models.llava import load_llava

    subset = read_subset(work)
    llava = load_llava(settings.mllm)
    torch.manual_seed(settings.seed)                 # the scorer's initialisation
    scorer = Scorer(subset.feature_dim, subset.score_names)
    coupled = CoupledModel(prepare_mllm(llava.model, settings), scorer, settings.loss, settings.lam)
    lengths = [estimated_length(s, llava.image_seq_length) for s in subset.samples]
    plans = [plan_batches(lengths, settings.batch_size, accelerator.num_processes, settings.seed, e,
                          settings.group_by_modality) for e in range(settings.epochs)]
    total_steps = sum(math.ceil(len(p) / settings.grad_accum) for p in plans)
    if total_steps == 0:
        raise UserError(f"the subset ({len(subset.samples)} usable samples) is too small for one batch")
    optimizer = torch.optim.AdamW(param_groups(coupled, settings), lr=settings.lr)
    scheduler = _cosine_scheduler(optimizer, total_steps, settings.warmup_ratio)
    return subset, llava, coupled, optimizer, scheduler, plans, total_steps


def _batches(subset, plans, llava, settings, accelerator, done: int) -> Iterator[tuple[int, Batch]]:
    """(global batch number, this process's micro-batch), from ``done`` on, over all epochs."""
    first = 0
    rank = accelerator.process_index
    for plan in plans:
        if done < first + len(plan):
            mine = [mega[rank] for mega in plan[max(0, done - first):]]
            data = MicroBatches(subset, mine, llava.tokenizer, llava.image_processor, llava.image_seq_length,
                                IMAGE_TAG, llava.pad_token_id, settings)
            # own generator: a loader draws a seed when iterated, which must not move the global
            # RNG (dropout), or a resumed run would diverge from the uninterrupted one
            loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, collate_fn=_identity,
                                                 num_workers=settings.num_workers, generator=torch.Generator())
            for j, batch in enumerate(loader, start=max(first, done)):
                yield j, batch
        first += len(plan)


def _identity(batch: Batch) -> Batch:
    return batch


def _step_bounds(plans, grad_accum: int) -> list[int]:
    """Global batch numbers after which the optimiser steps (accumulation restarts each epoch)."""
    ends, first = [], 0
    for plan in plans:
        ends += [min(first + k + grad_accum, first + len(plan)) - 1 for k in range(0, len(plan), grad_accum)]
        first += len(plan)
    return ends


def train(work: Path, settings: TrainSettings) -> Path:
    """Run stage 4 on ``work``; returns the path of ``train/scorer.pt``."""
    work = Path(work)
    _check_settings(settings)
    accelerator = _accelerator(settings)
    subset, llava, coupled, optimizer, scheduler, plans, total_steps = build_training(work, settings, accelerator)
    coupled, optimizer, scheduler = accelerator.prepare(coupled, optimizer, scheduler)
    step, done, history = resume_state(accelerator, work, settings)
    ends = _step_bounds(plans, settings.grad_accum)
    bar = _progress(accelerator, total_steps, step)
    coupled.train()
    pending: list[L.Losses] = []
    for j, batch in _batches(subset, plans, llava, settings, accelerator, done):
        end = ends[step]
        n_micro = end - (ends[step - 1] if step else -1)
        sync = j == end
        with accelerator.no_sync(coupled) if not sync else contextlib.nullcontext():
            with accelerator.autocast():
                parts = coupled(batch.to(accelerator.device))
            accelerator.backward(parts.total / n_micro)
        pending.append(L.Losses(*(t.detach() for t in parts)))
        if not sync:
            continue
        if settings.max_grad_norm > 0:
            accelerator.clip_grad_norm_(coupled.parameters(), settings.max_grad_norm)
        lr = float(scheduler.get_last_lr()[0])       # the lr this step uses
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step, done = step + 1, j + 1
        history.append(_record(step, pending, accelerator.unwrap_model(coupled), lr))
        pending = []
        bar.update(1)
        bar.set_postfix({k: f"{history[-1][k]:.4g}" for k in ("L_I", "L_D", "s1", "s2")})
        if settings.save_steps > 0 and step % settings.save_steps == 0 and step < total_steps:
            save_checkpoint(accelerator, work, step, done, history, settings)
    bar.close()
    return _finish(accelerator, coupled, llava, work, settings, step, history)


def _progress(accelerator, total: int, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="coido train", disable=not accelerator.is_main_process,
                dynamic_ncols=True)


def _record(step: int, pending: Sequence[L.Losses], coupled: CoupledModel, lr: float) -> dict[str, float]:
    mean = lambda xs: float(torch.stack([x.float() for x in xs]).mean())  # noqa: E731
    return {"step": step, "loss": mean([p.total for p in pending]), "L_I": mean([p.importance for p in pending]),
            "L_D": mean([p.diversity for p in pending]), "s1": float(coupled.s1.detach()), "s2": float(coupled.s2.detach()),
            "lr": lr}


def _finish(accelerator, coupled, llava, work: Path, settings: TrainSettings, step: int, history) -> Path:
    out = work / "train/scorer.pt"
    accelerator.wait_for_everyone()
    model: CoupledModel = accelerator.unwrap_model(coupled)
    if accelerator.is_main_process:
        save_scorer(out, model.scorer, {"s1": float(model.s1.detach()), "s2": float(model.s2.detach()), "steps": step,
                                        "settings": asdict(settings), "mllm_source": llava.source})
        write_json(work / "train/history.json", history)
    if settings.save_mllm:
        _save_mllm(accelerator, model, llava, work / "train/mllm")
    accelerator.wait_for_everyone()
    return out


def _save_mllm(accelerator, model: CoupledModel, llava, folder: Path) -> None:
    """The trained MLLM (or its LoRA adapter) beside tokenizer and image processor, renamed when done."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    state = accelerator.get_state_dict(model.mllm)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        model.mllm.save_pretrained(tmp, state_dict=state)
        llava.tokenizer.save_pretrained(tmp)
        llava.image_processor.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)


# ------------------------------------------------------------------------------------- step cost

@dataclass
class StepCost:
    """Seconds per training step (forward + backward + AdamW), medians over repeats."""

    mllm_step_s: float          # the MLLM alone, standard LM loss
    coupled_step_s: float       # MLLM + scorer + CoIDO losses (the real step)
    scorer_losses_s: float      # scorer forward/backward + losses from given logits, alone
    batch_size: int
    seq_len: int

    @property
    def overhead(self) -> float:
        """Relative extra cost of the coupled step over the MLLM step."""
        return self.coupled_step_s / self.mllm_step_s - 1.0


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def step_cost(coupled: CoupledModel, batch: Batch, repeats: int = 3, bf16: bool = False) -> StepCost:
    """Time one training step with and without the scorer + losses on ``batch`` (lr 0: weights stay).

    ``bf16`` runs the forward passes under bf16 autocast, as training does on a GPU.
    """
    mllm, scorer = coupled.mllm, coupled.scorer
    coupled.train()
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values)
    opt_mllm = torch.optim.AdamW([p for p in mllm.parameters() if p.requires_grad], lr=0.0)
    opt_all = torch.optim.AdamW([p for p in coupled.parameters() if p.requires_grad], lr=0.0)
    opt_scorer = torch.optim.AdamW([p for p in scorer.parameters()] + [coupled.s1, coupled.s2], lr=0.0)

    device_type = batch.input_ids.device.type
    autocast = lambda: torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

    def mllm_step():
        with autocast():
            loss = mllm(**inputs, labels=batch.labels, use_cache=False).loss
        loss.backward()
        opt_mllm.step()
        opt_mllm.zero_grad(set_to_none=True)

    def coupled_step():
        with autocast():
            total = coupled(batch).total
        total.backward()
        opt_all.step()
        opt_all.zero_grad(set_to_none=True)

    with torch.no_grad(), autocast():
        logits = mllm(**inputs, use_cache=False).logits.detach()

    def scorer_step():
        with autocast():
            total = L.coido_losses(scorer(batch.features), logits, batch.labels, batch.clusters, coupled.loss,
                                   coupled.s1, coupled.s2, coupled.lam).total
        total.backward()
        opt_scorer.step()
        opt_scorer.zero_grad(set_to_none=True)

    return StepCost(_median_time(mllm_step, repeats), _median_time(coupled_step, repeats),
                    _median_time(scorer_step, repeats), int(batch.input_ids.shape[0]), int(batch.input_ids.shape[1]))


def step_cost_from_work(work: Path, settings: TrainSettings, repeats: int = 3) -> StepCost:
    """:func:`step_cost` on the first micro-batch of ``work``'s training plan (single process)."""
    work = Path(work)
    _check_settings(settings)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    subset = read_subset(work)
    from ..models.llava import load_llava

    llava = load_llava(settings.mllm, device=device)
    torch.manual_seed(settings.seed)
    scorer = Scorer(subset.feature_dim, subset.score_names)
    coupled = CoupledModel(prepare_mllm(llava.model, settings), scorer, settings.loss, settings.lam).to(device)
    lengths = [estimated_length(s, llava.image_seq_length) for s in subset.samples]
    plan = plan_batches(lengths, settings.batch_size, 1, settings.seed, 0, settings.group_by_modality)
    plan.sort(key=lambda mega: -sum(lengths[i] > 0 for i in mega[0]))   # an image batch when there is one
    data = MicroBatches(subset, [m[0] for m in plan[:1]], llava.tokenizer, llava.image_processor,
                        llava.image_seq_length, IMAGE_TAG, llava.pad_token_id, settings)
    bf16 = device == "cuda" and settings.precision in ("auto", "bf16")
    return step_cost(coupled, data[0].to(device), repeats, bf16=bf16)


# ------------------------------------------------------------------------------------------- CLI

def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``frugalvl select train`` (the work folder and --force belong to the caller)."""
    d = TrainSettings()
    g = parser.add_argument_group("coupled training (spec §1.3-1.4)")
    g.add_argument("--mllm", required=True,
                   help="LLaVA: a llava-hf folder, a hub id, or lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR")
    g.add_argument("--loss", choices=L.LOSS_VARIANTS, default=d.loss,
                   help="coido (uncertainty-weighted, default) | importance (L_I) | importance+diversity "
                        "(L_I + lam·L_D) | weighted ((1-lam)·L_I + lam·L_D)")
    g.add_argument("--lam", type=float, default=None, help="λ of importance+diversity (default 1) / weighted (0.5)")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--uncertainty-lr", type=float, default=None, help="lr of s1/s2 (default: --lr)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="per device: the softmax micro-batch")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum)
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="0 disables clipping")
    g.add_argument("--max-length", type=int, default=d.max_length)
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    g.add_argument("--no-tf32", dest="tf32", action="store_false")
    g.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    g.add_argument("--no-group-by-modality", dest="group_by_modality", action="store_false")
    g.add_argument("--image-aspect-ratio", choices=("pad", "resize"), default=d.image_aspect_ratio)
    g.add_argument("--lora", action="store_true", help="train a LoRA adapter (+ projector) instead of the full LM")
    g.add_argument("--lora-r", type=int, default=d.lora_r)
    g.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    g.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps (0: never)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--num-workers", type=int, default=d.num_workers, help="image-loading processes")
    g.add_argument("--save-mllm", action="store_true", help="also write the trained MLLM to train/mllm/")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in vars(args).items() if k in names})
