"""LoRA instruction tuning of LLaVA-1.5 on a selected subset (docs/methods/coido_finetune.md).

The recipe of LLaVA-1.5's ``finetune_lora.sh`` as the peers use it (COINCIDE: 4/device × 8
accumulation; ICONS: 16/device × 1 on several GPUs): LoRA r = 128, α = 256 (dropout 0.05, every linear
map of the LM's blocks) with lr 2e-4, the ``mlp2x_gelu`` projector trained in full with lr 2e-5, the
CLIP ViT-L/14-336 vision tower frozen, AdamW without weight decay, cosine schedule with 3 % warm-up,
one epoch, an effective batch of 128 (per-device batch × accumulation × processes), Vicuna v1
prompts of at most 2048 tokens, images padded to a square with the mean colour, micro-batches of one
modality (``group_by_modality_length``). The loss is the mean token cross-entropy of a micro-batch,
divided by the accumulation steps, as LLaVA's (transformers 4.37) Trainer; like that Trainer, a last
accumulation group that is not full is not stepped.

Runs on one device, or on several with ``accelerate launch`` (DDP), optionally under DeepSpeed
ZeRO-2/3 with the configs shipped in ``frugalvl/select/configs/`` (their ``auto`` values are filled
here from the settings and the model).

Output folder::

    OUT/checkpoints/step-N/   trainable weights only (adapter + projector), optimiser, scheduler,
                              each process's RNG state, finetune_state.json (step, batches done, losses)
    OUT/adapter/              PEFT adapter (LoRA + projector) + tokenizer + image processor
    OUT/history.json          loss and learning rates per optimiser step
    OUT/finetune.json         settings, base model, data, steps
    OUT/merged/               with merge: a plain LlavaForConditionalGeneration folder (+ processor)

A run restarted on the same folder continues from the newest checkpoint and ends where the
uninterrupted run would (data order = f(seed, epoch); RNG states restored).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import write_json

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("configs")
ZERO_CONFIGS = {"zero2": CONFIG_DIR / "zero2.json", "zero3": CONFIG_DIR / "zero3.json"}
STATE_FILE = "finetune_state.json"
CHECKPOINTS = "checkpoints"
PROJECTOR = "multi_modal_projector"
# LLaVA-1.5's base: what the recipe expects of --mllm (checked, not enforced: tests use a tiny model)
RECIPE_VISION_PX = 336
RECIPE_PROJECTOR = "mlp2x_gelu"


@dataclass(frozen=True)
class FinetuneSettings:
    """LLaVA-1.5 LoRA fine-tuning (docs/methods/coido_finetune.md#recipe-and-where-each-number-comes-from); defaults
    = ``finetune_lora.sh``."""

    mllm: str = ""  # llava-hf folder, hub id, or lm=...,projector=...,vision=...
    image_root: str | None = None  # folder the records' ``image`` paths are relative to
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lr: float = 2e-4  # LoRA
    projector_lr: float = 2e-5  # mm_projector_lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: int = 1
    global_batch: int = 128  # per-device batch × accumulation × processes
    batch_size: int = 16  # per device
    max_grad_norm: float = 1.0
    max_length: int = 2048
    image_aspect_ratio: str = "pad"
    group_by_modality: bool = True
    precision: str = "auto"  # auto = bf16 on a GPU, fp32 on the CPU
    tf32: bool = True
    gradient_checkpointing: bool = True
    deepspeed: str | None = None  # zero2, zero3 or a DeepSpeed JSON file
    seed: int = 42
    save_steps: int = 500  # checkpoint every N optimiser steps (0: only at the end)
    keep_checkpoints: int = 1  # newest kept (0: all)
    num_workers: int = 2
    progress: bool = True


# Settings that do not change the result: a checkpoint made under other values still resumes.
RESUME_FREE = frozenset({"save_steps", "keep_checkpoints", "num_workers", "progress", "gradient_checkpointing"})


def result_key(settings: FinetuneSettings, world: int) -> dict[str, Any]:
    """What decides the result: the settings (less the resume-free ones) and the number of processes."""
    key = {k: v for k, v in asdict(settings).items() if k not in RESUME_FREE}
    key["world"] = world
    return key


def grad_accum(settings: FinetuneSettings, world: int) -> int:
    """Accumulation steps giving the effective batch; one line when it does not divide."""
    per_step = settings.batch_size * world
    if settings.global_batch % per_step:
        raise UserError(
            f"--global-batch {settings.global_batch} is not a multiple of --batch-size {settings.batch_size} "
            f"× {world} processes: choose sizes that divide it (e.g. --batch-size 16 on 8 GPUs, 4 on 4 × 8)"
        )
    return settings.global_batch // per_step


def check_settings(s: FinetuneSettings) -> None:
    """One line for the first setting out of its range, before anything is loaded."""
    from ..precision import PRECISIONS
    from .train_settings import ASPECT_RATIOS, check_mllm_paths

    if not s.mllm:
        raise UserError(
            "no base model: pass --mllm with a llava-hf folder, a hub id, or lm=...,projector=...,vision=..."
        )
    check_mllm_paths(s.mllm)
    for name in ("lora_r", "lora_alpha", "epochs", "global_batch", "batch_size", "max_length"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(s, name)}")
    for name in ("lr", "projector_lr"):
        if not (getattr(s, name) > 0 and math.isfinite(getattr(s, name))):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(s, name)}")
    if not 0 <= s.warmup_ratio <= 1 or not 0 <= s.lora_dropout < 1:
        raise UserError("--warmup-ratio must be in [0, 1] and --lora-dropout in [0, 1)")
    if s.precision not in PRECISIONS:
        raise UserError(f"--precision {s.precision!r} is unknown: choose one of {', '.join(PRECISIONS)}")
    if s.image_aspect_ratio not in ASPECT_RATIOS:
        raise UserError(f"--image-aspect-ratio {s.image_aspect_ratio!r}: choose one of {', '.join(ASPECT_RATIOS)}")
    if s.deepspeed is not None:
        deepspeed_config_path(s.deepspeed)


# ------------------------------------------------------------------------------------ DeepSpeed


def deepspeed_config_path(name: str) -> Path:
    """The shipped ``zero2``/``zero3`` config, or a user's JSON file."""
    path = ZERO_CONFIGS.get(name, Path(name))
    if not path.is_file():
        raise UserError(f"--deepspeed {name}: give zero2, zero3 or an existing DeepSpeed JSON file")
    return path


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == "auto"


def fill_deepspeed_config(
    config: dict[str, Any],
    *,
    micro_batch: int,
    grad_accum_steps: int,
    world: int,
    max_grad_norm: float,
    mixed_precision: str,
    hidden_size: int,
) -> dict[str, Any]:
    """A copy of a DeepSpeed config with every ``"auto"`` replaced from the run (as HF Trainer does)."""
    out = json.loads(json.dumps(config))
    fills = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum_steps,
        "train_batch_size": micro_batch * grad_accum_steps * world,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in fills.items():
        if _is_auto(out.get(key, "auto")):
            out[key] = value
    for key, on in (("fp16", mixed_precision == "fp16"), ("bf16", mixed_precision == "bf16")):
        if key in out and _is_auto(out[key].get("enabled")):
            out[key]["enabled"] = on
    zero = out.get("zero_optimization", {})
    sizes = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "allgather_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in sizes.items():
        if _is_auto(zero.get(key)):
            zero[key] = value
    left = [k for k, v in _walk(out) if _is_auto(v)]
    if left:
        raise UserError(f"DeepSpeed config: cannot fill 'auto' for {', '.join(left)}: give numbers there")
    return out


def _walk(tree: dict[str, Any], prefix: str = ""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def launch_command(
    args: Sequence[str],
    num_processes: int,
    launcher: str = "accelerate",
    python: str | None = None,
    port: int | None = None,
) -> list[str]:
    """The command line that runs ``frugalvl select finetune ARGS`` in ``num_processes`` processes.

    ``args`` are the finetune arguments without the launch options; ``--deepspeed`` among them is
    applied by the processes themselves (a DeepSpeed plugin from the filled config).
    """
    python = python or sys.executable
    if launcher == "accelerate":
        cmd = [
            python,
            "-m",
            "accelerate.commands.launch",
            "--num_machines",
            "1",
            "--num_processes",
            str(num_processes),
            "--dynamo_backend",
            "no",
            "--mixed_precision",
            "no",
        ]
        if num_processes > 1:
            cmd.append("--multi_gpu")
        if port is not None:
            cmd += ["--main_process_port", str(port)]
    elif launcher == "torchrun":
        cmd = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes)]
        if port is not None:
            cmd = [
                python,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "1",
                "--nproc_per_node",
                str(num_processes),
                "--master_port",
                str(port),
            ]
    else:
        raise UserError(f"--launcher {launcher!r}: choose accelerate or torchrun")
    return cmd + ["-m", "frugalvl", "select", "finetune", *args]


def in_launched_process() -> bool:
    """Whether this process was started by accelerate launch / torchrun (one of several)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_LAUNCH" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


# ------------------------------------------------------------------------------------ data


def read_records(data: Path, image_root: str | None) -> list[dict[str, Any]]:
    """The subset JSON as samples for :mod:`.batching`: ``image_path`` resolved, ``status`` ok / text."""
    from .data import read_llava_json

    data = Path(data)
    if not data.is_file():
        raise UserError(f"subset file {data} does not exist: give the JSON written by `frugalvl select pick -o`")
    records = read_llava_json(data)
    root = Path(image_root) if image_root else data.parent
    samples, missing = [], []
    for k, rec in enumerate(records):
        image = rec.get("image")
        path = (root / image) if image else None
        if path is not None and not path.is_file():
            missing.append(str(path))
        samples.append(
            {
                "unique_idx": k,
                "id": str(rec.get("id", k)),
                "image": image,
                "image_path": str(path) if path is not None else None,
                "status": "ok" if image else "text",
                "conversations": rec.get("conversations", []),
            }
        )
    if missing:
        raise UserError(
            f"{len(missing)} images of {data} are missing (e.g. {missing[0]}): pass --image-root, the "
            "folder their 'image' paths are relative to"
        )
    if not samples:
        raise UserError(f"{data} holds no samples: give a non-empty LLaVA JSON")
    return samples


def as_subset(samples: list[dict[str, Any]]):
    """The samples in the shape :class:`.batching.MicroBatches` reads (no scorer features, no clusters)."""
    from .workdir import Subset

    n = len(samples)
    return Subset(samples, np.zeros((n, 0), np.float32), np.full(n, -1, np.int64), 0, [])


def plans_for(
    samples: list[dict[str, Any]], image_seq_length: int, settings: FinetuneSettings, world: int
) -> list[list[list[list[int]]]]:
    """Per epoch, the global batches (one micro-batch per process), LLaVA's modality-length grouping."""
    from .batching import plan_batches
    from .prompting import estimated_length

    lengths = [estimated_length(s, image_seq_length) for s in samples]
    return [
        plan_batches(lengths, settings.batch_size, world, settings.seed, e, settings.group_by_modality)
        for e in range(settings.epochs)
    ]


def step_ends(plans: Sequence[Sequence[Any]], accum: int) -> list[int]:
    """Global batch numbers after which the optimiser steps: full accumulation groups of each epoch
    (a last group that is not full is left out, as transformers 4.37's Trainer does)."""
    ends, first = [], 0
    for plan in plans:
        ends += [first + k + accum - 1 for k in range(0, len(plan) - accum + 1, accum)]
        first += len(plan)
    return ends


# ------------------------------------------------------------------------------------ model


def build_model(llava, settings: FinetuneSettings):
    """Frozen base (vision tower, LM, embeddings, head) + LoRA on the LM + the projector in full."""
    from .mllm import prepare_mllm
    from .train_settings import TrainSettings

    cfg = llava.model.config
    vision = getattr(cfg.vision_config, "image_size", None)
    if vision != RECIPE_VISION_PX:
        log.warning(
            "the recipe uses a %d-px CLIP (clip-vit-large-patch14-336); this model's vision tower takes %s px",
            RECIPE_VISION_PX,
            vision,
        )
    if getattr(cfg, "projector_hidden_act", "gelu") != "gelu":
        log.warning(
            "the recipe uses the %s projector (Linear, GELU, Linear); this one has %s",
            RECIPE_PROJECTOR,
            cfg.projector_hidden_act,
        )
    llava.model.requires_grad_(False)
    as_train = TrainSettings(
        mllm=settings.mllm,
        lora=True,
        lora_r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        gradient_checkpointing=settings.gradient_checkpointing,
    )
    return prepare_mllm(llava.model, as_train)


def param_groups(model, settings: FinetuneSettings) -> list[dict[str, Any]]:
    """LoRA weights at ``lr``, the projector at ``projector_lr``; no decay on biases and norms."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((PROJECTOR in name, p.ndim >= 2), []).append(p)
    out = []
    for (projector, matrix), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": settings.projector_lr if projector else settings.lr,
                "weight_decay": settings.weight_decay if matrix else 0.0,
                "name": ("projector" if projector else "lora") + ("" if matrix else "_no_decay"),
            }
        )
    return out


def make_accelerator(settings: FinetuneSettings, accum: int, hidden_size: int | None = None):
    """accelerate's Accelerator: devices, processes, mixed precision, accumulation, optional DeepSpeed."""
    import torch
    from accelerate import Accelerator, DistributedDataParallelKwargs

    from .mllm import mixed_precision

    precision = mixed_precision(settings)  # reads settings.precision only
    if settings.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    kwargs: dict[str, Any] = {}
    if settings.deepspeed is not None:
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("--deepspeed needs the deepspeed package: pip install deepspeed (on the GPU machine)")
        from accelerate.utils import DeepSpeedPlugin

        world = int(os.environ.get("WORLD_SIZE", "1"))
        config = json.loads(deepspeed_config_path(settings.deepspeed).read_text())
        config = fill_deepspeed_config(
            config,
            micro_batch=settings.batch_size,
            grad_accum_steps=accum,
            world=world,
            max_grad_norm=settings.max_grad_norm,
            mixed_precision=precision,
            hidden_size=hidden_size or 4096,
        )
        stage3 = config.get("zero_optimization", {}).get("stage") == 3
        # ZeRO-3: the base is partitioned while it loads, not materialised whole in every process
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=stage3)
    # text-only micro-batches leave the projector unused: DDP must allow that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(
        mixed_precision=precision,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[ddp],
        gradient_accumulation_steps=accum,
        step_scheduler_with_optimizer=False,
        **kwargs,
    )


def _hidden_size(mllm: str) -> int | None:
    """The LM width from a local llava folder's config (DeepSpeed bucket sizes), None if unknown."""
    config = Path(os.path.expanduser(mllm)) / "config.json"
    if not config.is_file():
        return None
    text = json.loads(config.read_text()).get("text_config", {})
    return text.get("hidden_size")


# ------------------------------------------------------------------------------------ checkpoints


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (folders of a save cut short are ignored)."""
    root = Path(out) / CHECKPOINTS
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _trainable_only(models, weights, _output_dir) -> None:
    """accelerate save hook: keep only trainable parameters (adapter + projector) of each state dict."""
    from .checkpoints import frozen_names

    for i, model in enumerate(models):
        if i < len(weights):
            frozen = frozen_names(model)
            weights[i] = {k: v for k, v in weights[i].items() if k not in frozen}


def save_checkpoint(
    accelerator, out: Path, step: int, done: int, history: list[dict], key: dict[str, Any], keep: int
) -> Path:
    """Trainable weights, optimiser, scheduler, RNG states and the loop state, renamed into place."""
    root = Path(out) / CHECKPOINTS
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(_trainable_only)
    try:
        extra = {"exclude_frozen_parameters": True} if accelerator.state.deepspeed_plugin is not None else {}
        accelerator.save_state(str(tmp), **extra)
    finally:
        hook.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, {"step": step, "batches_done": done, "history": history, "key": key})
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_dirs(out)[:-keep] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log.info("checkpoint saved: %s", final)
    return final


def resume(accelerator, out: Path, key: dict[str, Any]) -> tuple[int, int, list[dict]]:
    """Restore the newest checkpoint: (optimiser steps, global batches done, history); zeros if none."""
    found = checkpoint_dirs(out)
    if not found:
        return 0, 0, []
    state = json.loads((found[-1] / STATE_FILE).read_text())
    changed = sorted(k for k in set(key) | set(state["key"]) if state["key"].get(k) != key.get(k))
    if changed:
        raise UserError(
            f"{found[-1]} was made with other settings ({', '.join(changed)}): rerun with the same "
            f"ones, or pass --force to start over in {out}"
        )
    extra = {"load_module_strict": False} if accelerator.state.deepspeed_plugin is not None else {"strict": False}
    accelerator.load_state(str(found[-1]), **extra)  # the frozen base weights are absent by design
    log.info("resuming from %s", found[-1])
    return int(state["step"]), int(state["batches_done"]), list(state["history"])


# ------------------------------------------------------------------------------------ training


def finetune(
    data: str | Path,
    out: str | Path,
    settings: FinetuneSettings,
    merge: bool = False,
    force: bool = False,
    merge_dtype: str = "auto",
) -> Path:
    """Fine-tune ``settings.mllm`` with LoRA on the subset JSON ``data``; returns ``OUT/adapter``
    (and writes ``OUT/merged`` with ``merge``)."""
    import torch
    from accelerate.utils import set_seed

    from ..models.llava import load_llava
    from .batching import iterate_batches

    out = Path(out)
    check_settings(settings)
    samples = read_records(Path(data), settings.image_root)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = grad_accum(settings, world)
    key = {**result_key(settings, world), "data": _data_digest(Path(data))}
    adapter = out / "adapter"
    accelerator = make_accelerator(settings, accum, _hidden_size(settings.mllm))
    if force and accelerator.is_main_process:
        shutil.rmtree(out, ignore_errors=True)
    accelerator.wait_for_everyone()
    if _finished(out, key):
        log.info("finetune: done already (%s); skipping training", adapter)
    else:
        set_seed(settings.seed)  # LoRA initialisation, dropout
        llava = load_llava(settings.mllm, dtype=_base_dtype_for(accelerator))
        model = build_model(llava, settings)
        _trainable_in_fp32(model)
        plans = plans_for(samples, llava.image_seq_length, settings, accelerator.num_processes)
        ends = step_ends(plans, accum)
        if not ends:
            raise UserError(
                f"{data}: {len(samples)} samples give no full step of {settings.global_batch}: "
                "lower --global-batch (and --batch-size)"
            )
        optimizer = torch.optim.AdamW(param_groups(model, settings), lr=settings.lr)
        scheduler = _scheduler(optimizer, len(ends), settings.warmup_ratio)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        step, done, history = resume(accelerator, out, key)
        _loop(
            accelerator,
            model,
            optimizer,
            scheduler,
            llava,
            samples,
            plans,
            ends,
            settings,
            out,
            key,
            step,
            done,
            history,
            iterate_batches,
        )
        _save_adapter(accelerator, model, llava, adapter)
        if accelerator.is_main_process:
            write_json(
                out / "finetune.json",
                {
                    "key": key,
                    "base": llava.source,
                    "n_samples": len(samples),
                    "steps": len(ends),
                    "grad_accum": accum,
                    "data": str(Path(data).resolve()),
                    "recipe": "LLaVA-1.5 LoRA (finetune_lora.sh)",
                },
            )
        accelerator.wait_for_everyone()
        del model, optimizer
    if merge and accelerator.is_main_process:
        merge_adapter(settings.mllm, adapter, out / "merged", merge_dtype)
    accelerator.wait_for_everyone()
    return adapter


def _base_dtype_for(accelerator):
    """The frozen base in the mixed-precision dtype on a GPU (as LLaVA loads it), fp32 otherwise."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision))


def _trainable_in_fp32(model) -> None:
    """Adapter and projector weights in fp32 (AdamW state and updates in full precision); autocast
    runs the forward pass in the mixed dtype."""
    import torch

    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def _data_digest(path: Path) -> str:
    from ..identity import file_digest

    return file_digest(path)


def _finished(out: Path, key: dict[str, Any]) -> bool:
    meta = out / "finetune.json"
    if not (meta.is_file() and (out / "adapter/adapter_config.json").is_file()):
        return False
    old = json.loads(meta.read_text())["key"]
    if old != key:
        changed = sorted(k for k in set(key) | set(old) if old.get(k) != key.get(k))
        raise UserError(
            f"{out} holds a fine-tune made with other settings ({', '.join(changed)}): pass --force to "
            "redo it, or use another output folder"
        )
    return True


def _scheduler(optimizer, total: int, warmup_ratio: float):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total), total)


def _loop(
    accelerator,
    model,
    optimizer,
    scheduler,
    llava,
    samples,
    plans,
    ends,
    settings: FinetuneSettings,
    out: Path,
    key,
    step: int,
    done: int,
    history: list[dict],
    iterate_batches,
) -> None:
    """Micro-batches from ``done`` on; an optimiser step after each full accumulation group."""
    import torch
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(ends),
        initial=step,
        desc="finetune",
        dynamic_ncols=True,
        disable=not (settings.progress and accelerator.is_main_process),
    )
    model.train()
    losses: list[torch.Tensor] = []
    subset = as_subset(samples)
    batches = iterate_batches(
        subset,
        plans,
        llava,
        settings.max_length,
        settings.image_aspect_ratio,
        accelerator.process_index,
        settings.num_workers,
        done,
    )
    started = time.monotonic()
    for j, batch in batches:
        if step >= len(ends):
            break
        if j > ends[step]:  # a micro-batch past the last full group of an epoch: skipped
            continue
        sync = j == ends[step]
        with accelerator.accumulate(model):
            if accelerator.sync_gradients != sync:  # the groups are full, so accelerate's count agrees
                raise RuntimeError(f"accumulation out of step at global batch {j}")
            batch = batch.to(accelerator.device)
            out_ = model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                pixel_values=batch.pixel_values,
                labels=batch.labels,
                use_cache=False,
            )
            accelerator.backward(out_.loss)
            losses.append(out_.loss.detach().float())
            if sync:
                if settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                lrs = [float(x) for x in scheduler.get_last_lr()]
            optimizer.step()  # accelerate skips it (and zero_grad) inside a group
            if sync:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not sync:
            continue
        loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean")
        step, done, losses = step + 1, j + 1, []
        history.append({"step": step, "loss": float(loss), "lr": lrs[0], "projector_lr": _projector_lr(optimizer, lrs)})
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")
        if settings.save_steps > 0 and step % settings.save_steps == 0 and step < len(ends):
            save_checkpoint(accelerator, out, step, done, history, key, settings.keep_checkpoints)
    bar.close()
    if accelerator.is_main_process:
        log.info("finetune: %d steps in %.0f s", step, time.monotonic() - started)
        write_json(out / "history.json", history)


def _projector_lr(optimizer, lrs: list[float]) -> float | None:
    names = [g.get("name", "") for g in optimizer.param_groups]
    for name, lr in zip(names, lrs):
        if name.startswith("projector"):
            return lr
    return None


def _save_adapter(accelerator, model, llava, folder: Path) -> None:
    """The PEFT adapter (LoRA + projector) beside tokenizer and image processor, renamed when done."""
    state = accelerator.get_state_dict(model)  # gathers ZeRO-3 shards; every process calls it
    if accelerator.is_main_process:
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state)
        llava.tokenizer.save_pretrained(tmp)
        llava.image_processor.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------ merge

MERGE_DTYPES = ("auto", "fp32", "bf16", "fp16")


def _base_dtype(mllm: str) -> str:
    config = Path(os.path.expanduser(mllm)) / "config.json"
    if config.is_file():
        meta = json.loads(config.read_text())
        name = str(meta.get("dtype") or meta.get("torch_dtype") or "float32")
        return {"float16": "fp16", "bfloat16": "bf16"}.get(name, "fp32")
    return "fp16"  # llava-hf checkpoints on the hub are float16


def merge_adapter(mllm: str, adapter: str | Path, folder: str | Path, dtype: str = "auto") -> Path:
    """Fold the LoRA adapter and the trained projector into the base weights and write a plain
    ``LlavaForConditionalGeneration`` folder (+ processor) that transformers and lmms-eval load.

    The merge runs in fp32 on the CPU; the weights are saved in ``dtype`` (auto = the base's).
    """
    import torch
    from peft import PeftModel

    from ..models.llava import load_llava

    adapter, folder = Path(adapter), Path(folder)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds no adapter: run `frugalvl select finetune` first")
    if dtype not in MERGE_DTYPES:
        raise UserError(f"--merge-dtype {dtype!r}: choose one of {', '.join(MERGE_DTYPES)}")
    dtype = _base_dtype(mllm) if dtype == "auto" else dtype
    llava = load_llava(mllm)
    merged = PeftModel.from_pretrained(llava.model, str(adapter)).merge_and_unload()
    merged = merged.to({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    _save_processor(llava, mllm, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info("merged model: %s (%s)", folder, dtype)
    return folder


VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}"
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. {% endif %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _save_processor(llava, mllm: str, folder: Path) -> None:
    """The base's own LlavaProcessor when it ships one (``processor_config.json``, as llava-hf
    models do); else one built from its tokenizer and image processor. Either way with a chat
    template (Vicuna v1 when the base has none), which lmms-eval's ``llava_hf`` model applies."""
    from transformers import AutoProcessor, LlavaProcessor

    base = Path(os.path.expanduser(mllm))
    processor = None
    if "=" not in mllm and (not base.exists() or (base / "processor_config.json").is_file()):
        try:
            candidate = AutoProcessor.from_pretrained(str(base) if base.exists() else mllm)
            processor = candidate if isinstance(candidate, LlavaProcessor) else None
        except (OSError, ValueError, TypeError):
            processor = None
    if processor is None:
        vision = llava.model.config.vision_config
        strategy = getattr(llava.model.config, "vision_feature_select_strategy", "default")
        processor = LlavaProcessor(
            image_processor=llava.image_processor,
            tokenizer=llava.tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the 'default' strategy
        )
    if not getattr(processor, "chat_template", None):
        processor.chat_template = VICUNA_CHAT_TEMPLATE
    processor.save_pretrained(folder)
