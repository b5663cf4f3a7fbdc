"""The cost ledger: what each stage cost (docs/coido_contract.md).

``WORK/ledger.json`` holds one entry per stage run: wall time, CPU-seconds (this process and the
children it waited for), the device, device-seconds (the wall time of a stage that ran on an
accelerator, else 0), and the process's peak resident memory so far (the operating system keeps
only a process-wide peak, so a later stage's value includes earlier ones run in the same process).
:func:`summary` puts them side by side and, given the hours a full fine-tuning takes, the
selection's cost as a fraction of it; device time is also set against the recipe's known cost.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..fileio import write_json

LEDGER = "ledger.json"
# the recipe's known cost: LLaVA-1.5-7B fine-tuned on the 665K mixture, about 10 h on 8 A100-40G
# (docs/methods/coido.md#cost)
RECIPE_GPU_HOURS = 80.0


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def read(work: str | Path) -> dict[str, Any]:
    path = Path(work) / LEDGER
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


@contextmanager
def record(work: str | Path, stage: str, device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Measure the block and store it as ``stage``'s entry (replacing an earlier run's); a stage found
    done already (or marked ``skipped`` in the yielded dict) keeps the earlier cost."""
    from .workdir import SKIPPED

    start, cpu, skips = time.perf_counter(), _cpu_seconds(), len(SKIPPED)
    state: dict[str, Any] = {}
    yield state
    if state.get("skipped") or stage in SKIPPED[skips:]:
        return
    wall = time.perf_counter() - start
    entry = {
        "wall_s": round(wall, 3),
        "cpu_s": round(_cpu_seconds() - cpu, 3),
        "device": device,
        "device_s": round(wall, 3) if not device.startswith("cpu") else 0.0,
        "peak_rss_mib": round(_peak_mib(), 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    work = Path(work)
    if not work.is_dir():
        return
    ledger = read(work)
    ledger[stage] = entry
    write_json(work / LEDGER, ledger)


def summary(work: str | Path, full_finetune_hours: float | None = None) -> dict[str, Any]:
    """Every stage's cost, the totals, and the fraction of a full fine-tuning's hours when given."""
    stages = read(work)
    wall = sum(e["wall_s"] for e in stages.values())
    out: dict[str, Any] = {
        "stages": stages,
        "total_wall_s": round(wall, 3),
        "total_cpu_s": round(sum(e["cpu_s"] for e in stages.values()), 3),
        "total_device_s": round(sum(e["device_s"] for e in stages.values()), 3),
    }
    if full_finetune_hours:
        out["full_finetune_hours"] = full_finetune_hours
        out["fraction_of_full_finetune"] = wall / (full_finetune_hours * 3600.0)
    if out["total_device_s"] > 0:
        out["fraction_of_recipe_gpu_hours"] = out["total_device_s"] / (RECIPE_GPU_HOURS * 3600.0)
        out["recipe_note"] = "device-seconds against LLaVA-1.5-7B's full fine-tuning, ~10 h on 8 A100-40G"
    return out


def table(summary_: dict[str, Any]) -> str:
    """The ledger as aligned text lines."""
    lines = [f"{'stage':<12}{'wall s':>10}{'CPU s':>10}{'device':>10}{'device s':>10}{'peak MiB':>10}"]
    for name, e in summary_["stages"].items():
        lines.append(
            f"{name:<12}{e['wall_s']:>10.1f}{e['cpu_s']:>10.1f}{e['device']:>10}{e['device_s']:>10.1f}{e['peak_rss_mib']:>10.0f}"
        )
    lines.append(
        f"{'total':<12}{summary_['total_wall_s']:>10.1f}{summary_['total_cpu_s']:>10.1f}{'':>10}{summary_['total_device_s']:>10.1f}"
    )
    if "fraction_of_recipe_gpu_hours" in summary_:
        lines.append(
            f"device time = {100 * summary_['fraction_of_recipe_gpu_hours']:.3g}% of LLaVA-1.5-7B's full fine-tuning "
            f"({RECIPE_GPU_HOURS:g} GPU-hours)"
        )
    if "fraction_of_full_finetune" in summary_:
        lines.append(
            f"selection cost = {100 * summary_['fraction_of_full_finetune']:.3g}% of a full fine-tuning "
            f"({summary_['full_finetune_hours']} h)"
        )
    return "\n".join(lines)


def costed(stage_fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
    """The stage function, its cost recorded when it runs: the work folder is its ``work`` argument,
    the device its ``device`` argument or its settings' ``device`` (CPU otherwise)."""
    import functools
    import inspect

    signature = inspect.signature(stage_fn)

    @functools.wraps(stage_fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        device = given.get("device") or getattr(given.get("settings"), "device", None) or "cpu"
        with record(given["work"], stage, str(device)):
            return stage_fn(*args, **kwargs)

    return run
