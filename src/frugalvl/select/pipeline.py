"""The CoIDO stages over one work folder, shared by ``frugalvl select`` and the Python API.

Each stage reads what earlier stages wrote (docs/coido_contract.md, :mod:`.workdir`), checks its own
settings before it touches anything, writes atomically, and records in ``meta.json`` the settings,
the identity of the models it used and the upstream results. A stage is skipped when that record
matches; recomputed when an upstream changed; and stops with one line naming the difference when
its own settings changed (``force=True`` recomputes). A finished result is replaced only
once the new one is complete. Inside the long stages, shards, per-sample answers and training
checkpoints are kept, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, write_json, write_text
from ..settings import FieldError
from . import data as data_mod
from . import formats, ledger, selections
from .clustering import ClusterSettings, assign_nearest, centroids, cluster_features, subset_and_clusters
from .data import PrepareSettings
from .features import ClipShards, FeatureSettings, ShardHook, check_feature_settings, extract_features
from .ranking import PickSettings, count_by, score_histogram, select, target_count
from .settings import ScoreSettings
from .streaming import score_streamed
from .train_settings import TrainSettings, check_train_settings, result_settings
from .workdir import (
    begin_stage,
    check_subset_output,
    checked_input,
    digest,
    load_features,
    load_samples,
    model_identity,
    need,
    usable_mask,
    write_subset,
)

log = logging.getLogger(__name__)

__all__ = [
    "cluster",
    "features",
    "load_features",
    "load_samples",
    "pick",
    "prepare",
    "run",
    "score",
    "train",
    "usable_mask",
]


def _settings_dict(settings: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    is_instance = dataclasses.is_dataclass(settings) and not isinstance(settings, type)
    out = dataclasses.asdict(settings) if is_instance else dict(settings)
    return {k: v for k, v in out.items() if k not in drop}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


# ---------------------------------------------------------------- checks before any stage runs


def check_prepare(data_json: Path, settings: PrepareSettings) -> Path | None:
    """The input and the image root exist; returns the image root."""
    if not data_json.exists():
        raise UserError(
            f"data file {data_json} does not exist: give the LLaVA JSON (e.g. llava_v1_5_mix665k.json), "
            "a JSON-lines, Parquet or save_to_disk dataset, or WebDataset shards"
        )
    root = Path(settings.image_root) if settings.image_root else None
    if root is not None and not root.is_dir():
        raise UserError(
            f"image root {root} is not a folder: give the folder the samples' 'image' paths are relative to"
        )
    return root


def check_cluster(settings: ClusterSettings) -> None:
    """Nothing beyond what :class:`ClusterSettings` checks when made (kept for API callers)."""


def check_pick(settings: PickSettings) -> None:
    """Nothing beyond what :class:`PickSettings` checks when made (kept for API callers)."""


# ---------------------------------------------------------------- stages


def prepare(
    data_json: str | Path, work: str | Path, settings: PrepareSettings = PrepareSettings(), force: bool = False
) -> dict[str, Any]:
    """Stage 1: index the LLaVA JSON, check every sample and image, derive sources; returns the report."""
    work, data_json = Path(work), Path(data_json)
    folder = work / "prepare"
    root = check_prepare(data_json, settings)
    input_digest = formats.input_digest(data_json)
    key = {
        "input_sha256": input_digest,
        **_settings_dict(settings, drop=("workers", "format")),
        "image_root": None if root is None else str(root.resolve()),
    }
    if settings.format != "auto":
        key["format"] = settings.format  # recorded only when given: earlier work folders stay valid
    run = begin_stage(folder, "prepare", key, {}, [folder / "samples.json"], force)
    if run is None:
        return json.loads((folder / "report.json").read_text())
    fmt = formats.detect(data_json) if settings.format == "auto" else settings.format
    samples, problems, n_derived = data_mod.index_items(formats.iter_items(data_json, fmt), root, settings)
    if not samples:
        raise UserError(f"{data_json} holds no sample: give a non-empty {fmt} input")
    report = data_mod.preparation_report(samples, data_json, root, settings, input_digest, n_derived, problems, fmt)
    write_json(run.out / "report.json", report)
    data_mod.enforce_policy(report, folder / "report.json")
    bad = len(report["missing"]) + len(report["corrupt"])
    if bad:
        log.warning(
            "prepare: %d samples with a missing or corrupt image are excluded (policy 'exclude'); listed in %s",
            bad,
            folder / "report.json",
        )
    if dups := data_mod.duplicate_ids(samples):
        shown = ", ".join(repr(i) for i in dups[:5]) + (", ..." if len(dups) > 5 else "")
        log.warning("prepare: %d id(s) name more than one sample (%s): make the ids unique", len(dups), shown)
    for sample_id, why in list(report["invalid"].items())[:5]:
        log.warning("prepare: sample %s excluded: %s", sample_id, why)
    if len(report["invalid"]) > 5:
        log.warning(
            "prepare: %d invalid samples excluded in all; listed in %s", len(report["invalid"]), folder / "report.json"
        )
    write_json(run.out / "samples.json", samples, indent=None)
    run.commit()
    log.info("prepare: %d samples, per source %s", len(samples), report["per_source"])
    return report


def _feature_key(settings: FeatureSettings) -> dict[str, Any]:
    ep = settings.endpoint.resolved()
    return {
        "clip": settings.clip,
        "clip_identity": model_identity(settings.clip),
        "shard_size": settings.shard_size,
        "imagereward": settings.imagereward,
        "text_quality": settings.text_quality,
        "text_lm": settings.text_lm,
        "text_lm_identity": model_identity(settings.text_lm),
        "endpoint": ep.base_url,
        "text_model": ep.model,
        "temperature": ep.temperature,
        "max_tokens": ep.max_tokens,
        "seed": ep.seed,
    }


def features(
    work: str | Path,
    settings: FeatureSettings = FeatureSettings(),
    force: bool = False,
    hook: ShardHook | None = None,
    compute: ClipShards | None = None,
) -> dict[str, Any]:
    """Stage 2: CLIP features and quality scores for all N; returns the report.

    ``compute(samples, shard_folder)`` computes the CLIP shards instead of the local pass (the Ray engine
    passes its own; it runs after the settings and quality scorers are checked); the checks, the stage's
    record, the other scorers and the outputs are the same either way."""
    work = Path(work)
    folder = work / "features"
    check_feature_settings(settings)
    need(work / "prepare" / "samples.json", "prepare")
    upstream = {"prepare": digest(need(work / "prepare" / "meta.json", "prepare"))}
    outputs = [folder / n for n in ("clip.npy", "scores.json", "image_ok.npy", "report.json")]
    run = begin_stage(folder, "features", _feature_key(settings), upstream, outputs, force, resumable=True)
    if run is None:
        return json.loads((folder / "report.json").read_text())
    samples = load_samples(work)
    out = extract_features(samples, run.out, settings, hook, compute)  # writes run.out/clip.npy from its shards
    _save_npy(run.out / "image_ok.npy", out["image_ok"].astype(bool))
    write_json(
        run.out / "scores.json",
        {
            "names": out["names"],
            "raw": {k: _jsonable(v) for k, v in out["raw"].items()},
            "scaled": {k: v.tolist() for k, v in out["scaled"].items()},
        },
        indent=None,
    )
    for name, why in out["report"]["disabled"].items():
        log.info("features: %s disabled: %s", name, why)
    if out["report"]["note"]:
        log.info("features: %s", out["report"]["note"])
    write_json(run.out / "report.json", out["report"])
    run.commit()
    return out["report"]


def _jsonable(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def cluster(work: str | Path, settings: ClusterSettings = ClusterSettings(), force: bool = False) -> dict[str, Any]:
    """Stage 3: the random p% subset S and its spectral clusters; returns the result."""
    work = Path(work)
    folder = work / "subset"
    check_cluster(settings)
    need(work / "features" / "scores.json", "features")
    upstream = {"features": digest(need(work / "features" / "meta.json", "features"))}
    outputs = [folder / "indices.npy", folder / "clusters.npy", folder / "result.json"]
    tuning = (
        "block",
        "device",
        "exact_max",
        "flat_max",
        "pca_dim",
        "pca_sample",
        "candidates",
        "hnsw_m",
        "hnsw_ef",
        "eigen_tol",
        "eigen_maxiter",
    )  # how fast, not what: kept out of the stage's key
    run = begin_stage(folder, "cluster", _settings_dict(settings, drop=tuning), upstream, outputs, force)
    if run is None:
        return json.loads((folder / "result.json").read_text())
    samples = load_samples(work)
    clip, names, scaled = load_features(work)
    # the memory-mapped features: only the subset's rows are read
    out = subset_and_clusters(clip, scaled if names else None, usable_mask(work, samples), settings)
    _save_npy(run.out / "indices.npy", out["indices"].astype(np.int64))
    _save_npy(run.out / "clusters.npy", out["labels"].astype(np.int64))
    result = {
        "n_subset": int(len(out["indices"])),
        "clusterer": out["clusterer"],
        "n_clusters": out.get("n_clusters"),
        "solver": out.get("solver"),
        "recipe": out["recipe"],
        "per_cluster": count_by(out["labels"].tolist()),
    }
    write_json(run.out / "result.json", result)
    run.commit()
    log.info("cluster: |S| = %d, %d clusters (%s)", result["n_subset"], len(result["per_cluster"]), out["clusterer"])
    return result


def train_key(settings: TrainSettings) -> dict[str, Any]:
    """What decides the trained scorer: the result settings and the MLLM's identity."""
    return {**result_settings(settings), "mllm_identity": model_identity(settings.mllm)}


def train(work: str | Path, settings: TrainSettings, force: bool = False) -> Path:
    """Stage 4: the scorer and the MLLM trained together on S (:mod:`.trainer`); returns ``train/scorer.pt``.

    Training is resumable: checkpoints of the run in progress are kept, and a forced run trains beside
    the finished one (``.train.new``) until it completes.
    """
    work = Path(work)
    folder = work / "train"
    check_train_settings(settings)
    need(work / "subset" / "clusters.npy", "cluster")
    upstream = {"cluster": digest(need(work / "subset" / "meta.json", "cluster"))}
    run = begin_stage(folder, "train", train_key(settings), upstream, [folder / "scorer.pt"], force, resumable=True)
    if run is None:
        return folder / "scorer.pt"
    from . import trainer  # torch, transformers, accelerate: only when training

    trainer.train(work, settings, run.out)
    run.commit()
    return folder / "scorer.pt"


ScoreAll = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]  # (scorer, clip, scaled scores) -> r


def score(
    work: str | Path, batch_size: int = 256, device: str = "cpu", force: bool = False, compute: ScoreAll | None = None
) -> np.ndarray:
    """Stage 5: raw r for all N with the trained scorer; returns r.

    ``compute`` replaces the local scoring pass (the Ray engine passes its own); the checks, the stage's
    record and the outputs are the same either way."""
    from .scorer import load_scorer

    work = Path(work)
    folder = work / "score"
    ScoreSettings(batch_size=batch_size, device=device)  # checks the values, naming the field
    need(work / "features" / "scores.json", "features")
    upstream = {
        "features": digest(need(work / "features" / "meta.json", "features")),
        "scorer": digest(need(work / "train" / "scorer.pt", "train")),
    }
    run = begin_stage(folder, "score", {}, upstream, [folder / "r.npy", folder / "difficulty.json"], force)
    if run is None:
        return np.load(folder / "r.npy")
    clip, names, scaled = load_features(work)
    scorer = load_scorer(work / "train" / "scorer.pt", device if compute is None else "cpu")
    if list(scorer.score_names) != names or scorer.feature_dim != clip.shape[1]:
        raise FieldError(
            "force",
            f"the scorer in {work / 'train'} expects {scorer.feature_dim} features + scores "
            f"{scorer.score_names}, but {work / 'features'} has {clip.shape[1]} + {names}: "
            "retrain with {force}",
        )
    if compute is None:
        r = score_streamed(scorer, clip, scaled, batch_size, device)  # chunks of rows: no second N×D copy
    else:
        r = np.asarray(compute(scorer, clip, scaled), dtype=np.float32)
    _save_npy(run.out / "r.npy", r)
    write_json(run.out / "difficulty.json", {str(i): float(-v) for i, v in enumerate(r)}, indent=None)
    run.commit()
    log.info("score: r for %d samples, range [%.4g, %.4g]", len(r), r.min(), r.max())
    return r


def pick(
    work: str | Path,
    out: str | Path,
    settings: PickSettings = PickSettings(),
    folder: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Stage 6: keep the lowest r (per-source quotas or global), write the subset; returns the report.

    Always recomputed (it takes seconds); ``pick/meta.json`` records the settings, the scores used and
    ``out``. ``folder`` (default ``WORK/pick``) receives the ids, report and provenance (:mod:`.selections`).
    ``out`` never replaces the input, a file in the work folder or one no selection wrote (``overwrite``
    allows the last).
    """
    work, out = Path(work), Path(out)
    folder = work / "pick" if folder is None else Path(folder)
    check_pick(settings)
    check_subset_output(work, out, overwrite, folder=folder)
    samples = load_samples(work)
    r = np.load(need(work / "score" / "r.npy", "score"))
    checked_input(work)  # before anything is computed
    sources = [s["dataset"] for s in samples]
    eligible = usable_mask(work, samples)
    if settings.exclude_text:
        eligible &= np.array([s["status"] != "text" for s in samples])
    k = target_count(len(samples), settings)
    n_eligible = int(eligible.sum())
    if not 0 < k <= n_eligible:
        fix = "lower {count}" if settings.count is not None else "lower {ratio} or give {count}"
        if k <= 0:
            fix = "raise {ratio} or give {count}"
        fields = ("count",) if settings.count is not None else ("ratio", "count")
        raise FieldError(
            fields, f"cannot pick {k} samples: {n_eligible} of {len(samples)} are eligible; {fix}", PickSettings
        )
    chosen, quotas = select(r, sources, eligible, k, settings.mode)
    write_subset(work, out, chosen, samples, settings.add_fields)
    _save_npy(folder / "selected_ids.npy", chosen.astype(np.int64))
    write_text(folder / "selected_ids.txt", "".join(samples[i]["id"] + "\n" for i in chosen))
    report = _pick_report(work, samples, r, eligible, chosen, quotas, settings, k, out)
    report["cost"] = ledger.summary(work, settings.full_finetune_hours)
    score_histogram(folder / "scores.png", r, eligible, chosen)
    write_json(folder / "report.json", report)
    write_json(
        folder / "meta.json",
        {
            "stage": "pick",
            "settings": _settings_dict(settings),
            "out": str(out.resolve()),
            "upstream": {"score": digest(work / "score" / "meta.json"), "r": digest(work / "score" / "r.npy")},
        },
    )
    selections.finish(work, folder, out, samples, chosen, _settings_dict(settings))
    log.info("pick: %d of %d samples -> %s; ids and report in %s", len(chosen), len(samples), out, folder)
    return report


def pick_budgets(
    work: str | Path, out: str | Path, budgets: list[PickSettings], overwrite: bool = False
) -> list[dict[str, Any]]:
    """Several budgets picked from the same scores, each into ``out/LABEL/`` (:mod:`.selections`)."""
    work, out = Path(work), Path(out)
    name = selections.selection_name(work)
    return [
        pick(work, out / selections.label(b) / name, b, folder=out / selections.label(b), overwrite=overwrite)
        for b in budgets
    ]


def _check_count(data: Path, prepare_settings: PrepareSettings, pick_settings: PickSettings) -> None:
    """A ``count`` above the number of records of a JSON input fails before any stage, not after training."""
    if pick_settings.count is None:
        return
    fmt = formats.detect(data) if prepare_settings.format == "auto" else prepare_settings.format
    if fmt not in formats.JSON_FORMATS:
        return
    n = len(formats.jsonfile.load(data))
    if pick_settings.count > n:
        raise FieldError(
            "count", f"cannot pick {pick_settings.count} samples: {data} holds {n}; lower {{count}}", PickSettings
        )


def _pick_report(work: Path, samples, r, eligible, chosen, quotas, settings, k, out) -> dict[str, Any]:
    sources = [samples[i]["dataset"] for i in chosen]
    report = {
        "out": str(out.resolve()),
        "mode": settings.mode,
        "k": int(k),
        "n_samples": len(samples),
        "n_eligible": int(eligible.sum()),
        "n_selected": int(len(chosen)),
        "quotas": quotas,
        "selected_per_source": count_by(sources),
        "eligible_per_source": count_by([samples[i]["dataset"] for i in np.flatnonzero(eligible)]),
        "r_selected": [float(r[chosen].min()), float(r[chosen].max())] if len(chosen) else None,
        "r_eligible": [float(r[eligible].min()), float(r[eligible].max())],
    }
    subset = work / "subset" / "indices.npy"
    if subset.is_file():
        idx, labels = np.load(subset), np.load(work / "subset" / "clusters.npy")
        clip, names, scaled = load_features(work)
        used = json.loads((work / "subset" / "meta.json").read_text())["settings"]
        settings_c = ClusterSettings(clip_weight=used["clip_weight"], score_weight=used["score_weight"])
        cents, label_names = centroids(
            cluster_features(np.asarray(clip[idx]), scaled[idx] if names else None, settings_c), labels
        )
        nearest = [
            assign_nearest(
                cluster_features(np.asarray(clip[part]), scaled[part] if names else None, settings_c),
                cents,
                label_names,
            )
            for part in np.array_split(chosen, max(1, math.ceil(len(chosen) / 20000)))
        ]
        report["selected_per_cluster"] = count_by(np.concatenate(nearest).tolist())
        report["selected_per_cluster_note"] = (
            "clusters of S; every selected sample assigned to the nearest cluster centroid"
        )
        report["selected_in_subset"] = int(np.isin(chosen, idx).sum())
    return report


def run(
    data_json: str | Path,
    work: str | Path,
    out: str | Path,
    prepare_settings: PrepareSettings = PrepareSettings(),
    feature_settings: FeatureSettings = FeatureSettings(),
    cluster_settings: ClusterSettings = ClusterSettings(),
    train_settings: TrainSettings | None = None,
    pick_settings: PickSettings = PickSettings(),
    score_device: str = "cpu",
    force: bool = False,
    score_batch_size: int = 256,
    overwrite: bool = False,
) -> dict[str, Any]:
    """All stages in order, each skipped when already done (``force``: each recomputed); returns the
    pick report. Every setting and the subset path ``out`` are checked before the first stage runs."""
    work = Path(work)
    check_prepare(Path(data_json), prepare_settings)
    check_subset_output(work, out, overwrite, data_json)
    _check_count(Path(data_json), prepare_settings, pick_settings)
    check_feature_settings(feature_settings)
    check_cluster(cluster_settings)
    check_pick(pick_settings)
    ScoreSettings(batch_size=score_batch_size, device=score_device)  # checks the values, naming the field
    if train_settings is not None:
        check_train_settings(train_settings)
    elif force or not (work / "train" / "scorer.pt").is_file():
        raise FieldError(
            "mllm", "no trained scorer in the work folder: give {mllm} ID|PATH to train one", TrainSettings
        )
    prepare(data_json, work, prepare_settings, force)
    features(work, feature_settings, force)
    cluster(work, cluster_settings, force)
    if train_settings is not None:
        train(work, train_settings, force)
    score(work, score_batch_size, score_device, force)
    return pick(work, out, pick_settings, overwrite=overwrite)


prepare = ledger.costed(prepare, "prepare")  # each stage's cost in WORK/ledger.json when it runs
features = ledger.costed(features, "features")
cluster = ledger.costed(cluster, "cluster")
train = ledger.costed(train, "train")
score = ledger.costed(score, "score")
