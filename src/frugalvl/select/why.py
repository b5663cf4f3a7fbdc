"""Why a sample is in or out of a selection (docs/coido_contract.md): one line per sample.

* unusable: its image is missing or corrupt, the sample is invalid (the reason prepare gave), or its
  image did not decode in the features stage;
* not eligible: a text-only sample when text-only samples are excluded;
* ranked: its value and rank within its source group against the group's quota (``quota`` mode) or
  overall against K (``global``), and the value at the cut. CoIDO ranks by r, lowest first; a
  baseline by its score, highest first;
* SemDeDup adds the duplicate test: M, the largest cosine to an earlier member of its k-means
  cluster, against 1 − ε.

The reasons of the last ``pick`` are the ``reason`` column of ``scores.parquet``; :func:`explain`
recomputes them for one id from any selection folder's record (ids, report, settings, scores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .workdir import load_samples, usable_mask

UNUSABLE = {"missing": "its image is missing", "corrupt": "its image does not decode", "text": "", "ok": ""}


def _order(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    return pool[np.lexsort((pool, values[pool]))]


def reasons(
    work: Path,
    samples: list[dict[str, Any]],
    key: np.ndarray,
    eligible: np.ndarray,
    chosen: np.ndarray,
    quotas: dict[str, int],
    mode: str,
    label: str = "r",
    higher_first: bool = False,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """One reason per sample. ``key``: the ranked value (r, or a baseline's score with
    ``higher_first``)."""
    work = Path(work)
    report = json.loads((work / "prepare" / "report.json").read_text())
    invalid = report.get("invalid", {})
    usable = usable_mask(work, samples)
    order_key = -np.nan_to_num(key, nan=-np.inf) if higher_first else np.nan_to_num(key, nan=np.inf)
    selected = np.zeros(len(samples), bool)
    selected[chosen] = True
    sources = np.asarray([s["dataset"] for s in samples], dtype=object)
    groups = {g: np.flatnonzero(eligible & (sources == g)) for g in set(sources[eligible])} if mode == "quota" else {}
    rank = np.zeros(len(samples), np.int64)
    cut: dict[str, float] = {}
    if mode == "quota":
        for g, pool in groups.items():
            ordered = _order(order_key, pool)
            rank[ordered] = np.arange(1, len(ordered) + 1)
            kept = ordered[selected[ordered]]
            cut[g] = float(key[kept[-1]]) if len(kept) else float("nan")
    else:
        ordered = _order(order_key, np.flatnonzero(eligible))
        rank[ordered] = np.arange(1, len(ordered) + 1)
        kept = ordered[selected[ordered]]
        cut[""] = float(key[kept[-1]]) if len(kept) else float("nan")
    k = int(len(chosen))
    eps = (extra or {}).get("epsilon_per_source") or {}
    out = []
    for i, s in enumerate(samples):
        status = s["status"]
        if status == "invalid":
            out.append(f"out: invalid sample ({invalid.get(s['id'], 'see prepare/report.json')})")
        elif status in ("missing", "corrupt"):
            out.append(f"out: {UNUSABLE[status]} ({s.get('image_path') or s.get('image')})")
        elif not usable[i]:
            out.append("out: its image did not decode in the features stage")
        elif not eligible[i]:
            out.append("out: text-only samples are excluded (exclude_text)")
        else:
            where = "in" if selected[i] else "out"
            if mode == "quota":
                g = s["dataset"]
                n, q = len(groups[g]), quotas.get(g, 0)
                scope = f"in source {g!r}, {'within' if selected[i] else 'beyond'} its quota {q}"
                c = cut[g]
            else:
                n, c = int(eligible.sum()), cut[""]
                scope = f"overall, {'within' if selected[i] else 'beyond'} K = {k}"
            line = f"{where}: {label} = {key[i]:.6g}, rank {rank[i]} of {n} {scope} (cut at {label} = {c:.6g})"
            if extra is not None and "epsilon_note" in extra and np.isfinite(key[i]):
                m = -float(key[i])
                e = extra.get("epsilon") if mode == "global" else eps.get(s["dataset"])
                if e is not None and m > 1 - e:
                    line += f"; a near-duplicate: cosine {m:.4g} to an earlier member of its cluster > 1 - eps = {1 - e:.4g}"
            out.append(line)
    return out


def folder_reasons(work: Path, folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every sample and its reason for the selection in ``folder`` (pick's, a budget's or a baseline's),
    recomputed from what the folder recorded."""
    if not (folder / "report.json").is_file() or not (folder / "selected_ids.npy").is_file():
        raise UserError(
            f"{folder} is not a selection folder (no report.json and selected_ids.npy): give pick's or a baseline's"
        )
    report = json.loads((folder / "report.json").read_text())
    samples = load_samples(work)
    if "baseline" in report:
        key, label, higher, pick = np.load(folder / "score.npy").astype(np.float64), "score", True, report["pick"]
    else:
        key, label, higher = np.load(work / "score" / "r.npy").astype(np.float64), "r", False
        pick = json.loads((folder / "meta.json").read_text())["settings"]
    eligible = usable_mask(work, samples)
    if pick.get("exclude_text"):
        eligible &= np.array([s["status"] != "text" for s in samples])
    chosen = np.load(folder / "selected_ids.npy")
    why = reasons(
        work, samples, key, eligible, chosen, report.get("quotas") or {}, report["mode"], label, higher, report
    )
    return samples, why


def explain(work: str | Path, sample: str, selection: str | Path | None = None) -> list[str]:
    """The reason for sample id (or position) ``sample`` in a selection folder (default: the last
    pick; a baseline's name stands for its folder)."""
    work = Path(work)
    folder = work / "pick" if selection is None else Path(selection)
    if selection is not None and not folder.is_dir() and (work / f"baseline-{selection}").is_dir():
        folder = work / f"baseline-{selection}"
    samples, why = folder_reasons(work, folder)
    hits = [k for k, s in enumerate(samples) if s["id"] == sample]
    if not hits and sample.isdigit() and int(sample) < len(samples):
        hits = [int(sample)]
    if not hits:
        raise UserError(f"no sample with id {sample!r} in {work} ({len(samples)} samples): give an id or a position")
    return [f"{samples[k]['id']} (position {k}): {why[k]}" for k in hits]
