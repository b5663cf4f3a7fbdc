"""The CoIDO work folder: reading what earlier stages wrote, and the bookkeeping of each stage's run.

One reader for every stage (docs/coido_contract.md): samples, features, the usable mask and the
training subset S. Each stage folder holds a ``meta.json`` naming the settings, the identity of the
models used (:func:`model_identity`) and the upstream results that produced it; :func:`begin_stage`
compares it with the run asked for and decides: skip, resume, recompute, or stop with one line.

A finished result is never deleted before its replacement is complete: a forced or out-of-date run
writes beside the old folder (``.NAME.new``) and :meth:`StageRun.commit` swaps them at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import write_json
from ..identity import weights_identity
from ..settings import FieldError
from .data import USABLE
from .formats import JSON_FORMATS, input_digest, jsonfile, write_selection

log = logging.getLogger(__name__)

META = "meta.json"
SKIPPED: list[str] = []  # stages found done, in order (read by the cost ledger)


# ---------------------------------------------------------------- reading stage outputs


def need(path: Path, stage: str) -> Path:
    """``path``, or one line naming the stage that writes it."""
    if not path.exists():
        raise UserError(f"{path} is missing: run `frugalvl select {stage}` on this work folder first")
    return path


def digest(path: Path) -> str | None:
    """Short sha256 of a file's content (None when absent): how a stage names its upstream."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def load_samples(work: str | Path) -> list[dict[str, Any]]:
    """``prepare/samples.json``: every sample of the input, in input order."""
    path = need(Path(work) / "prepare" / "samples.json", "prepare")
    return json.loads(path.read_text(encoding="utf-8"))


def checked_input(work: str | Path) -> tuple[Path, str]:
    """The input prepare saw (checked unchanged) and its format."""
    rep = json.loads(need(Path(work) / "prepare" / "report.json", "prepare").read_text())
    path = Path(rep["input"])
    if not path.exists() or input_digest(path) != rep["input_sha256"]:
        raise FieldError(
            "force",
            f"the input {path} is gone or changed since `select prepare`: restore it, or prepare again with {{force}}",
        )
    return path, rep.get("format", "llava")


def input_records(work: str | Path) -> list[dict[str, Any]]:
    """The original records of a JSON input (LLaVA, JSON lines, ShareGPT), checked unchanged."""
    path, fmt = checked_input(work)
    if fmt not in JSON_FORMATS:
        raise UserError(f"{path} is a {fmt} input, not a list of JSON records: read it with frugalvl.select.formats")
    return jsonfile.load(path)


def write_subset(
    work: str | Path, out: str | Path, chosen: np.ndarray, samples: list[dict[str, Any]], add_fields: bool
) -> None:
    """A selection in the input's format at ``out`` (``add_fields``: ``unique_idx`` and ``dataset``
    added to JSON records; a table or shard copy is written unchanged)."""
    path, fmt = checked_input(work)
    extra = [{"unique_idx": samples[i]["unique_idx"], "dataset": samples[i]["dataset"]} for i in chosen]
    if add_fields and fmt not in JSON_FORMATS:
        log.warning("add_fields applies to JSON inputs; the %s copy is written unchanged", fmt)
    write_selection(path, fmt, out, [int(i) for i in chosen], extra if add_fields else None)


def load_features(work: str | Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``clip`` [N, 2D] (memory-mapped), score names, scaled scores [N, n_scores] (the scorer's input parts)."""
    work = Path(work)
    clip = np.load(need(work / "features" / "clip.npy", "features"), mmap_mode="r")
    scores = json.loads(need(work / "features" / "scores.json", "features").read_text(encoding="utf-8"))
    names = list(scores.get("names", []))
    if any(len(scores["scaled"][n]) != len(clip) for n in names):
        raise FieldError(
            "force",
            f"{work / 'features'}: clip.npy and scores.json disagree on N: re-run the features stage with {{force}}",
        )
    scaled = (
        np.stack([np.asarray(scores["scaled"][n], dtype=np.float32) for n in names], axis=1)
        if names
        else np.zeros((len(clip), 0), np.float32)
    )
    return clip, names, scaled


def usable_mask(work: str | Path, samples: list[dict[str, Any]]) -> np.ndarray:
    """Samples that can be trained on and selected: a usable status (prepare), and for image samples an
    image that decoded in the features stage (``features/image_ok.npy``, when present)."""
    path = Path(work) / "features" / "image_ok.npy"
    status = np.array([s.get("status", "ok") for s in samples])
    usable = np.isin(status, USABLE)
    if path.is_file():
        usable &= (status == "text") | np.load(path).astype(bool)
    return usable


@dataclass
class Subset:
    """The training subset S as read from the work folder (docs/coido_contract.md)."""

    samples: list[dict[str, Any]]  # prepare/samples.json rows of S, in subset order
    features: np.ndarray  # [|S|, D + n_scores] scorer inputs
    clusters: np.ndarray  # [|S|] cluster labels (−1: none)
    feature_dim: int
    score_names: list[str]


def read_subset(work: str | Path) -> Subset:
    """Scorer inputs, cluster labels and samples of S; unusable samples dropped (:func:`usable_mask`)."""
    work = Path(work)
    samples = load_samples(work)
    clip, names, scaled = load_features(work)
    indices = np.load(need(work / "subset" / "indices.npy", "cluster")).astype(np.int64)
    clusters = np.load(need(work / "subset" / "clusters.npy", "cluster")).astype(np.int64)
    if clip.shape[0] != len(samples):
        raise FieldError(
            "force",
            f"{work}: features and prepare/samples.json disagree on N: re-run the features stage with {{force}}",
        )
    if len(indices) != len(clusters) or (len(indices) and (indices.min() < 0 or indices.max() >= len(samples))):
        raise FieldError(
            "force",
            f"{work}/subset: indices.npy and clusters.npy do not fit the samples: re-run the cluster stage with {{force}}",
        )
    keep = usable_mask(work, samples)[indices]
    if not keep.any():
        raise UserError(f"{work}: no usable sample in the training subset: check prepare/report.json")
    indices, clusters = indices[keep], clusters[keep]
    features = np.concatenate([np.asarray(clip[indices], dtype=np.float32), scaled[indices]], axis=1)
    return Subset([samples[i] for i in indices], features, clusters, int(clip.shape[1]), names)


# ---------------------------------------------------------------- identity of models


def model_identity(spec: str | None) -> str | None:
    """What a model option names, as results record it (see :func:`frugalvl.identity.weights_identity`)."""
    return weights_identity(spec)


# ---------------------------------------------------------------- stage bookkeeping


@dataclass
class StageRun:
    """A stage that must run: it writes into ``out``; :meth:`commit` makes that the stage's folder."""

    folder: Path  # where the result lives once complete
    out: Path  # where this run writes: ``folder``, or a staging folder beside a finished result

    def commit(self) -> None:
        """Put the new result in place of the old one (which stays until the new one is complete)."""
        if self.out == self.folder:
            return
        old = self.folder.with_name(f".{self.folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            self.folder.rename(old)
        self.out.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / META
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def has_work(folder: Path) -> bool:
    """Whether a stage folder holds any result or partial result besides its meta.json."""
    return folder.is_dir() and any(p.is_file() and p.name != META for p in folder.rglob("*"))


def _differences(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))


def begin_stage(
    folder: Path,
    name: str,
    settings: dict[str, Any],
    upstream: dict[str, str | None],
    outputs: list[Path],
    force: bool,
    resumable: bool = False,
) -> StageRun | None:
    """None when the stage is done already for these settings and upstream results; else where to write.

    * same settings, outputs complete: skipped;
    * same settings, outputs incomplete: resumed in place (``resumable``: a stage keeping partial
      results), else restarted;
    * upstream changed: recomputed;
    * own settings changed: one line naming them and ``force`` (unless nothing was produced yet);
    * ``force``: recomputed.

    A complete result is replaced only when the new one is complete (see :class:`StageRun`).
    """
    meta = {"stage": name, "settings": settings, "upstream": upstream}
    old = _read_meta(folder)
    complete = all(p.exists() for p in outputs)
    if old is None:
        _refuse_foreign(folder, name, outputs)
    if old is not None and not force:
        if not complete and not resumable:
            force = True  # an earlier attempt stopped: start over
        elif old.get("upstream") != upstream:
            log.info("%s: earlier results are out of date (an upstream stage changed); recomputing", name)
            force = True
        elif old.get("settings") != settings and not has_work(folder):
            force = True  # an earlier attempt stopped before producing anything: start over
        elif old.get("settings") != settings:
            changed = _differences(settings, old.get("settings") or {})
            raise FieldError(
                "force",
                f"{folder} holds {name} results made with other settings ({', '.join(changed)}): "
                "recompute them with {force}, or use another work folder",
            )
        elif complete:
            log.info("%s: done already (%s); skipping", name, folder)
            SKIPPED.append(name)
            return None
        else:
            log.info("%s: resuming", name)
            return StageRun(folder, folder)
    elif old is None and complete and not force:
        raise FieldError(
            "force",
            f"{folder} holds {name} results without a record of the settings that made them: "
            "recompute them with {force}, or use another work folder",
        )
    if complete and folder.exists():
        return _staging(folder, name, meta, resumable)
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / META, meta)
    return StageRun(folder, folder)


def _refuse_foreign(folder: Path, name: str, outputs: list[Path]) -> None:
    """A stage folder without a ``meta.json`` that holds files other than the stage's outputs is someone
    else's: never cleared, ``force`` or not (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make)."""
    if not folder.is_dir():
        return
    expected = {p.absolute() for p in outputs}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.absolute() not in expected and not path.name.startswith("."):
            raise UserError(
                f"{folder} holds {path.relative_to(folder)}, which no {name} stage wrote: move it, or use "
                "another work folder"
            )


def _staging(folder: Path, name: str, meta: dict[str, Any], resumable: bool) -> StageRun:
    """A folder beside the finished result for its replacement; a staged run of the same settings
    that was cut short is resumed (``resumable``), anything else there is cleared."""
    out = folder.with_name(f".{folder.name}.new")
    if resumable and _read_meta(out) == meta:
        log.info("%s: resuming the replacement in %s", name, out)
        return StageRun(folder, out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    write_json(out / META, meta)
    return StageRun(folder, out)


# ---------------------------------------------------------------- the subset file a selection writes


def recorded_subsets(work: Path, metas: list[Path] | None = None) -> list[Path]:
    """The selections earlier runs in ``work`` wrote (``out`` in pick's meta.json and in the baselines'
    report.json, or in the given ``metas``)."""
    found = []
    if metas is None:
        metas = [Path(work) / "pick" / META, *Path(work).glob("baseline-*/report.json")]
    for meta in metas:
        try:
            out = json.loads(meta.read_text()).get("out")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(out, str):
            found.append(Path(out))
    return found


def check_subset_output(
    work: str | Path,
    out: str | Path,
    overwrite: bool = False,
    data_json: str | Path | None = None,
    folder: str | Path | None = None,
) -> Path:
    """Refuse a selection path ``out`` that is the input (given, or the one ``prepare`` indexed), lies
    inside the work folder, or is a file or folder no selection recorded writing (unless ``overwrite``);
    ``folder``: a selection folder whose ``meta.json`` may record ``out`` too (several budgets)."""
    from ..fileio import check_output

    work = Path(work)
    recorded = recorded_subsets(work)
    if folder is not None:
        recorded += recorded_subsets(Path(folder), [Path(folder) / META])
    inputs: list[Path] = [work]
    if data_json is not None:
        inputs.append(Path(data_json))
    try:
        indexed = json.loads((work / "prepare" / "report.json").read_text()).get("input")
    except (OSError, ValueError, AttributeError):
        indexed = None
    if isinstance(indexed, str):
        inputs.append(Path(indexed))
    return check_output(out, inputs, recorded, overwrite, "out")
