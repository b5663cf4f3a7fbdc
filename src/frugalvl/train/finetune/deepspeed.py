"""Several processes: the launcher line, and DeepSpeed ZeRO-2/3 configs filled from the run.

``frugalvl select finetune`` with more than one process re-runs itself under ``accelerate launch``
(or ``torchrun``), :func:`launch_command`; each launched process then builds its accelerator from
the settings, under DeepSpeed when asked, with the shipped ``configs/zero{2,3}.json`` (or a user's
file) whose ``"auto"`` values are filled here as the Hugging Face Trainer fills them
(docs/methods/coido_finetune.md#several-processes-deepspeed).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError

CONFIG_DIR = Path(__file__).with_name("configs")
ZERO_CONFIGS = {"zero2": CONFIG_DIR / "zero2.json", "zero3": CONFIG_DIR / "zero3.json"}
LAUNCHERS = ("accelerate", "torchrun")


def deepspeed_config_path(name: str) -> Path:
    """The shipped ``zero2``/``zero3`` config, or a user's JSON file."""
    path = ZERO_CONFIGS.get(name, Path(name))
    if not path.is_file():
        raise UserError(f"deepspeed {name}: give zero2, zero3 or an existing DeepSpeed JSON file")
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


def _walk(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def run_deepspeed_config(settings: Any, accum: int, mixed_precision: str) -> dict[str, Any] | None:
    """The filled DeepSpeed config of a run (None without DeepSpeed); the processes are ``WORLD_SIZE``."""
    if settings.deepspeed is None:
        return None
    config = json.loads(deepspeed_config_path(settings.deepspeed).read_text())
    return fill_deepspeed_config(
        config,
        micro_batch=settings.batch_size,
        grad_accum_steps=accum,
        world=int(os.environ.get("WORLD_SIZE", "1")),
        max_grad_norm=settings.max_grad_norm,
        mixed_precision=mixed_precision,
        hidden_size=hidden_size(settings.mllm) or 4096,
    )


def hidden_size(mllm: str) -> int | None:
    """The LM width from a local llava folder's config (DeepSpeed bucket sizes), None if unknown."""
    config = Path(os.path.expanduser(mllm)) / "config.json"
    if not config.is_file():
        return None
    text = json.loads(config.read_text()).get("text_config", {})
    return text.get("hidden_size")


def launch_command(
    args: Sequence[str],
    num_processes: int,
    launcher: str = "accelerate",
    python: str | None = None,
    port: int | None = None,
) -> list[str]:
    """The command line that runs ``frugalvl select finetune ARGS`` in ``num_processes`` processes.

    ``args`` are the finetune arguments without the launch options; a DeepSpeed choice among them is
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
        raise UserError(f"launcher {launcher!r}: choose {' or '.join(LAUNCHERS)}")
    return cmd + ["-m", "frugalvl", "select", "finetune", *args]


def in_launched_process() -> bool:
    """Whether this process was started by accelerate launch / torchrun (one of several)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_LAUNCH" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1
