"""The CoIDO stages over one work folder, shared by ``frugalvl select`` and the Python API.

Each stage reads what earlier stages wrote (docs/coido_contract.md), writes atomically, and is
skipped when its outputs exist for the same settings and the same upstream results. A stage whose
upstream changed is recomputed; one whose own settings changed asks for ``force=True`` (``--force``)
instead of silently discarding hours of work. Inside the long stages, shards and per-sample answers
are kept, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, write_json, write_text
from . import data as data_mod
from .clustering import ClusterSettings, assign_nearest, centroids, cluster_features, subset_and_clusters
from .data import USABLE, PrepareSettings
from .features import FeatureSettings, ShardHook, extract_features
from .ranking import PickSettings, count_by, score_all, score_histogram, select, target_count

log: Callable[[str], None] = lambda msg: print(f"[coido] {msg}", flush=True)  # noqa: E731


# ---------------------------------------------------------------- stage bookkeeping

def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _settings_dict(settings: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    out = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return {k: v for k, v in out.items() if k not in drop}


def _begin(folder: Path, name: str, settings: dict[str, Any], upstream: dict[str, str | None], outputs: list[Path],
           force: bool, resumable: bool = False) -> bool:
    """True when the stage must run. Clears the folder for a fresh run; keeps it to resume a
    ``resumable`` stage (one that saves partial results) stopped half way."""
    meta_path = folder / "meta.json"
    meta = {"stage": name, "settings": settings, "upstream": upstream}
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    complete = all(p.exists() for p in outputs)
    if old is not None and not force:
        if not complete and not resumable:
            force = True   # an earlier attempt stopped: start over
        elif old.get("upstream") != upstream:
            log(f"{name}: earlier results are out of date (an upstream stage changed); recomputing")
            force = True
        elif old.get("settings") != settings and not _has_work(folder):
            force = True   # an earlier attempt stopped before producing anything: start over
        elif old.get("settings") != settings:
            changed = sorted(k for k in set(settings) | set(old.get("settings", {})) if settings.get(k) != old["settings"].get(k))
            raise UserError(f"{folder} holds {name} results made with other settings ({', '.join(changed)}): "
                            f"pass --force to recompute them, or use another work folder (-w)")
        elif complete:
            log(f"{name}: done already ({folder}); skipping")
            return False
        else:
            log(f"{name}: resuming")
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, meta)
    return True


def _has_work(folder: Path) -> bool:
    """Whether a stage folder holds any result or partial result besides its meta.json."""
    return any(p.is_file() and p.name != "meta.json" for p in folder.rglob("*"))


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise UserError(f"{path} is missing: run `frugalvl select {stage}` for this work folder first")
    return path


def load_samples(work: str | Path) -> list[dict[str, Any]]:
    work = Path(work)
    return json.loads(_need(work / "prepare" / "samples.json", "prepare").read_text(encoding="utf-8"))


def load_features(work: str | Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``clip`` [N, 2D], score names, scaled scores [N, n_scores] (the scorer's input parts)."""
    work = Path(work)
    clip = np.load(_need(work / "features" / "clip.npy", "features"), mmap_mode="r")
    scores = json.loads((work / "features" / "scores.json").read_text())
    names = list(scores["names"])
    scaled = np.stack([np.asarray(scores["scaled"][n], dtype=np.float32) for n in names], axis=1) if names \
        else np.zeros((len(clip), 0), np.float32)
    return clip, names, scaled


def usable_mask(work: Path, samples: list[dict[str, Any]]) -> np.ndarray:
    """Samples that can be trained on and selected: usable status, and an image that decoded."""
    ok = np.load(work / "features" / "image_ok.npy") if (work / "features" / "image_ok.npy").is_file() else None
    status = np.array([s["status"] for s in samples])
    usable = np.isin(status, USABLE)
    if ok is not None:
        usable &= (status == "text") | ok
    return usable


# ---------------------------------------------------------------- stages

def prepare(data_json: str | Path, work: str | Path, settings: PrepareSettings = PrepareSettings(), force: bool = False) -> dict[str, Any]:
    """Stage 1: index the LLaVA JSON, derive sources, check images; returns the report."""
    work, data_json = Path(work), Path(data_json)
    folder = work / "prepare"
    if not data_json.is_file():
        raise UserError(f"data file {data_json} does not exist: give the LLaVA JSON, e.g. llava_v1_5_mix665k.json")
    root = Path(settings.image_root) if settings.image_root else None
    if root is not None and not root.is_dir():
        raise UserError(f"image root {root} is not a folder: give the folder the samples' 'image' paths are relative to")
    digest = data_mod.file_digest(data_json)
    key = {"input_sha256": digest, **_settings_dict(settings, drop=("workers",)),
           "image_root": None if root is None else str(root.resolve())}
    if not _begin(folder, "prepare", key, {}, [folder / "samples.json"], force):
        return json.loads((folder / "report.json").read_text())
    records = data_mod.read_llava_json(data_json)
    statuses = data_mod.image_statuses(records, root, settings)
    samples = data_mod.index_samples(records, root, statuses)
    n_derived = sum(1 for r in records if not r.get("dataset"))
    report = data_mod.preparation_report(samples, data_json, root, settings, digest, n_derived)
    write_json(folder / "report.json", report)
    data_mod.enforce_policy(report, folder / "report.json")
    bad = len(report["missing"]) + len(report["corrupt"])
    if bad:
        log(f"prepare: {bad} samples with a missing or corrupt image are excluded (policy 'exclude'); "
            f"listed in {folder / 'report.json'}")
    write_json(folder / "samples.json", samples, indent=None)
    log(f"prepare: {len(samples)} samples, per source {report['per_source']}")
    return report


def _feature_key(settings: FeatureSettings) -> dict[str, Any]:
    ep = settings.endpoint.resolved()
    return {"clip": settings.clip, "shard_size": settings.shard_size, "imagereward": settings.imagereward,
            "text_quality": settings.text_quality, "text_lm": settings.text_lm, "endpoint": ep.base_url,
            "text_model": ep.model, "temperature": ep.temperature, "max_tokens": ep.max_tokens, "seed": ep.seed}


def features(work: str | Path, settings: FeatureSettings = FeatureSettings(), force: bool = False,
             hook: ShardHook | None = None) -> dict[str, Any]:
    """Stage 2: CLIP features and quality scores for all N; returns the report."""
    work = Path(work)
    folder = work / "features"
    _need(work / "prepare" / "samples.json", "prepare")
    upstream = {"prepare": _digest(_need(work / "prepare" / "meta.json", "prepare"))}
    outputs = [folder / n for n in ("clip.npy", "scores.json", "image_ok.npy", "report.json")]
    if not _begin(folder, "features", _feature_key(settings), upstream, outputs, force, resumable=True):
        return json.loads((folder / "report.json").read_text())
    samples = load_samples(work)
    out = extract_features(samples, folder, settings, hook)
    with atomic_path(folder / "clip.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, out["clip"])
    with atomic_path(folder / "image_ok.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, out["image_ok"].astype(bool))
    write_json(folder / "scores.json", {"names": out["names"], "raw": {k: _jsonable(v) for k, v in out["raw"].items()},
                                        "scaled": {k: v.tolist() for k, v in out["scaled"].items()}}, indent=None)
    for name, why in out["report"]["disabled"].items():
        log(f"features: {name} disabled: {why}")
    if out["report"]["note"]:
        log(f"features: {out['report']['note']}")
    write_json(folder / "report.json", out["report"])
    return out["report"]


def _jsonable(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def cluster(work: str | Path, settings: ClusterSettings = ClusterSettings(), force: bool = False) -> dict[str, Any]:
    """Stage 3: the random p% subset S and its spectral clusters; returns the meta."""
    work = Path(work)
    folder = work / "subset"
    _need(work / "features" / "scores.json", "features")
    upstream = {"features": _digest(_need(work / "features" / "meta.json", "features"))}
    outputs = [folder / "indices.npy", folder / "clusters.npy", folder / "result.json"]
    if not _begin(folder, "cluster", _settings_dict(settings, drop=("block", "device")), upstream, outputs, force):
        return json.loads((folder / "result.json").read_text())
    samples = load_samples(work)
    clip, names, scaled = load_features(work)
    out = subset_and_clusters(np.asarray(clip), scaled if names else None, usable_mask(work, samples), settings)
    for name, arr in (("indices", out["indices"]), ("clusters", out["labels"])):
        with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr.astype(np.int64))
    result = {"n_subset": int(len(out["indices"])), "clusterer": out["clusterer"], "recipe": out["recipe"],
              "per_cluster": count_by(out["labels"].tolist())}
    write_json(folder / "result.json", result)
    log(f"cluster: |S| = {result['n_subset']}, {len(result['per_cluster'])} clusters ({out['clusterer']})")
    return result


def train(work: str | Path, settings: Any, force: bool = False) -> Path:
    """Stage 4: the scorer and the MLLM trained together on S (frugalvl.select.trainer)."""
    from . import trainer

    work = Path(work)
    _need(work / "subset" / "clusters.npy", "cluster")
    scorer_path = work / "train" / "scorer.pt"
    if scorer_path.is_file() and not force:
        log(f"train: done already ({scorer_path}); skipping")
        return scorer_path
    if force:
        trainer.clear_training(work)  # start afresh rather than resume the old run's checkpoints
    return Path(trainer.train(work, settings))


def score(work: str | Path, batch_size: int = 256, device: str = "cpu", force: bool = False) -> np.ndarray:
    """Stage 5: raw r for all N with the trained scorer; returns r."""
    from .scorer import load_scorer

    work = Path(work)
    folder = work / "score"
    _need(work / "features" / "scores.json", "features")
    upstream = {"features": _digest(_need(work / "features" / "meta.json", "features")),
                "scorer": _digest(_need(work / "train" / "scorer.pt", "train"))}
    if not _begin(folder, "score", {}, upstream, [folder / "r.npy", folder / "difficulty.json"], force):
        return np.load(folder / "r.npy")
    clip, names, scaled = load_features(work)
    scorer = load_scorer(work / "train" / "scorer.pt", device)
    if list(scorer.score_names) != names or scorer.feature_dim != clip.shape[1]:
        raise UserError(f"the scorer in {work / 'train'} expects {scorer.feature_dim} features + scores {scorer.score_names}, "
                        f"but {work / 'features'} has {clip.shape[1]} + {names}: retrain with `select train --force`")
    inputs = np.concatenate([np.asarray(clip, dtype=np.float32), scaled], axis=1)
    r = score_all(scorer, inputs, batch_size, device).astype(np.float32)
    with atomic_path(folder / "r.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, r)
    write_json(folder / "difficulty.json", {str(i): float(-v) for i, v in enumerate(r)}, indent=None)
    log(f"score: r for {len(r)} samples, range [{r.min():.4g}, {r.max():.4g}]")
    return r


def pick(work: str | Path, out: str | Path, settings: PickSettings = PickSettings()) -> dict[str, Any]:
    """Stage 6: keep the lowest r (per-source quotas or global), write the subset; returns the report."""
    work, out = Path(work), Path(out)
    folder = work / "pick"
    samples = load_samples(work)
    r = np.load(_need(work / "score" / "r.npy", "score"))
    records = _input_records(work)
    sources = [s["dataset"] for s in samples]
    eligible = usable_mask(work, samples)
    if settings.exclude_text:
        eligible &= np.array([s["status"] != "text" for s in samples])
    k = target_count(len(samples), settings)
    if not 0 < k <= int(eligible.sum()):
        raise UserError(f"cannot pick {k} samples: {int(eligible.sum())} of {len(samples)} are eligible; lower --ratio or --count")
    chosen, quotas = select(r, sources, eligible, k, settings.mode)
    selected = [_output_record(records[i], samples[i], settings.add_fields) for i in chosen]
    data_mod.write_llava_json(out, selected)
    with atomic_path(folder / "selected_ids.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, chosen.astype(np.int64))
    write_text(folder / "selected_ids.txt", "".join(samples[i]["id"] + "\n" for i in chosen))
    report = _pick_report(work, samples, r, eligible, chosen, quotas, settings, k, out)
    score_histogram(folder / "scores.png", r, eligible, chosen)
    write_json(folder / "report.json", report)
    write_json(folder / "meta.json", {"stage": "pick", "settings": _settings_dict(settings), "out": str(out.resolve())})
    log(f"pick: {len(chosen)} of {len(samples)} samples -> {out}; ids and report in {folder}")
    return report


def _input_records(work: Path) -> list[dict[str, Any]]:
    """The original records, from the input file prepare saw (checked unchanged)."""
    rep = json.loads((work / "prepare" / "report.json").read_text())
    path = Path(rep["input"])
    if not path.is_file() or data_mod.file_digest(path) != rep["input_sha256"]:
        raise UserError(f"the input {path} is gone or changed since `select prepare`: restore it, or prepare again with --force")
    return data_mod.read_llava_json(path)


def _output_record(record: dict[str, Any], sample: dict[str, Any], add_fields: bool) -> dict[str, Any]:
    if not add_fields:
        return record
    return {**record, "unique_idx": sample["unique_idx"], "dataset": sample["dataset"]}


def _pick_report(work: Path, samples, r, eligible, chosen, quotas, settings, k, out) -> dict[str, Any]:
    sources = [samples[i]["dataset"] for i in chosen]
    report = {"out": str(out.resolve()), "mode": settings.mode, "k": int(k), "n_samples": len(samples),
              "n_eligible": int(eligible.sum()), "n_selected": int(len(chosen)), "quotas": quotas,
              "selected_per_source": count_by(sources),
              "eligible_per_source": count_by(samples[i]["dataset"] for i in np.flatnonzero(eligible)),
              "r_selected": [float(r[chosen].min()), float(r[chosen].max())] if len(chosen) else None,
              "r_eligible": [float(r[eligible].min()), float(r[eligible].max())]}
    subset = work / "subset" / "indices.npy"
    if subset.is_file():
        idx, labels = np.load(subset), np.load(work / "subset" / "clusters.npy")
        clip, names, scaled = load_features(work)
        used = json.loads((work / "subset" / "meta.json").read_text())["settings"]
        settings_c = ClusterSettings(clip_weight=used["clip_weight"], score_weight=used["score_weight"])
        cents, label_names = centroids(cluster_features(np.asarray(clip[idx]), scaled[idx] if names else None, settings_c), labels)
        nearest = [assign_nearest(cluster_features(np.asarray(clip[part]), scaled[part] if names else None, settings_c),
                                  cents, label_names) for part in np.array_split(chosen, max(1, len(chosen) // 20000))]
        report["selected_per_cluster"] = count_by(np.concatenate(nearest).tolist())
        report["selected_per_cluster_note"] = "clusters of S; every selected sample assigned to the nearest cluster centroid"
        report["selected_in_subset"] = int(np.isin(chosen, idx).sum())
    return report


def run(data_json: str | Path, work: str | Path, out: str | Path, prepare_settings: PrepareSettings = PrepareSettings(),
        feature_settings: FeatureSettings = FeatureSettings(), cluster_settings: ClusterSettings = ClusterSettings(),
        train_settings: Any = None, pick_settings: PickSettings = PickSettings(), score_device: str = "cpu") -> dict[str, Any]:
    """All stages in order, each skipped when already done; returns the pick report."""
    prepare(data_json, work, prepare_settings)
    features(work, feature_settings)
    cluster(work, cluster_settings)
    if train_settings is not None or not (Path(work) / "train" / "scorer.pt").is_file():
        if train_settings is None:
            raise UserError("no trained scorer in the work folder: give --mllm ID|PATH to train one")
        train(work, train_settings)
    score(work, device=score_device)
    return pick(work, out, pick_settings)
