"""Comparing two or more selections of the same work folder (docs/methods/coido_baselines.md#comparing-selections,
``frugalvl select compare``).

A selection is named by ``pick`` (``WORK/pick``), a baseline name (``WORK/baseline-NAME``), a folder
holding ``selected_ids.npy``, or that file itself. For every selection: size, Jaccard overlap with each
other one, composition per source (``dataset``) and per cluster of S (each sample assigned to the nearest
cluster centroid, as ``pick``'s report), and the distribution of each score in the work folder (the
scaled quality scores, and r when ``score/r.npy`` exists). Written to ``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, check_outputs, claim_outputs, output_lock, remove_stale_temporaries, write_json
from .ranking import count_by
from .workdir import load_features, load_samples

log = logging.getLogger(__name__)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def resolve_selection(work: Path, spec: str) -> tuple[str, Path]:
    """(label, path of selected_ids.npy) for a selection spec (module docstring)."""
    path = Path(spec)
    candidates = [path if path.suffix == ".npy" else path / "selected_ids.npy"]
    if spec == "pick":
        candidates.insert(0, work / "pick" / "selected_ids.npy")
    elif "/" not in spec and path.suffix != ".npy":
        candidates.insert(0, work / f"baseline-{spec}" / "selected_ids.npy")
    for c in candidates:
        if c.is_file():
            label = spec if c.parent.parent == work else c.parent.name
            return label, c
    raise UserError(
        f"no selection {spec!r}: give pick, a baseline name run on {work}, or a folder with selected_ids.npy"
    )


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| (1 for two empty sets)."""
    union = len(np.union1d(a, b))
    return 1.0 if union == 0 else len(np.intersect1d(a, b)) / union


def nearest_cluster(work: Path, positions: np.ndarray) -> np.ndarray | None:
    """The cluster of S nearest to each position (None without ``subset/``)."""
    from .clustering import ClusterSettings, assign_nearest, centroids, cluster_features

    idx_path, lab_path = work / "subset" / "indices.npy", work / "subset" / "clusters.npy"
    if not (idx_path.is_file() and lab_path.is_file()):
        return None
    idx, labels = np.load(idx_path), np.load(lab_path)
    clip, names, scaled = load_features(work)
    meta = json.loads((work / "subset" / "meta.json").read_text()) if (work / "subset" / "meta.json").is_file() else {}
    used = meta.get("settings", {})
    settings = ClusterSettings(clip_weight=used.get("clip_weight", 0.7), score_weight=used.get("score_weight", 0.3))

    def feats(rows: np.ndarray) -> np.ndarray:
        return cluster_features(np.asarray(clip[rows]), scaled[rows] if names else None, settings)

    cents, label_names = centroids(feats(idx), labels)
    parts = np.array_split(positions, max(1, len(positions) // 20000))
    out = [assign_nearest(feats(part), cents, label_names) for part in parts]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def score_table(work: Path, n: int) -> dict[str, np.ndarray]:
    """Every per-sample score the work folder has: the scaled quality scores, and r."""
    scores: dict[str, np.ndarray] = {}
    if (work / "features" / "scores.json").is_file():
        _, names, scaled = load_features(work)
        scores.update({name: scaled[:, j].astype(np.float64) for j, name in enumerate(names)})
    if (work / "score" / "r.npy").is_file():
        r = np.load(work / "score" / "r.npy").astype(np.float64)
        if len(r) == n:
            scores["r"] = r
    return scores


def summary(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0}
    quantiles = {f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in QUANTILES}
    return {"n": int(len(v)), "mean": float(v.mean()), **quantiles}


def compare(
    work: str | Path, specs: Sequence[str], out_dir: str | Path | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Compare selections ``specs`` of ``work``; write ``compare.json`` and ``compare.png``; return the result.
    Neither replaces a file no comparison recorded writing (unless ``overwrite``); ``out_dir`` is locked."""
    work = Path(work)
    if len(specs) < 2:
        raise UserError("compare needs two or more selections, e.g. `frugalvl select compare -w WORK pick random`")
    folder = Path(out_dir) if out_dir else work / "compare"
    files = [folder / "compare.json", folder / "compare.png"]
    try:
        ours = "jaccard" in json.loads(files[0].read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    with output_lock(folder):
        remove_stale_temporaries(folder)
        check_outputs(files, [work / "prepare", work / "features"], files if ours else [], overwrite, "out_dir")
        return _compare(work, specs, folder)


def _compare(work: Path, specs: Sequence[str], folder: Path) -> dict[str, Any]:
    samples = load_samples(work)
    sources = np.asarray([s["dataset"] for s in samples], dtype=object)
    sel: dict[str, np.ndarray] = {}
    for spec in specs:
        label, path = resolve_selection(work, spec)
        ids = np.load(path).astype(np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(samples)):
            raise UserError(
                f"{path} holds positions outside this work folder's {len(samples)} samples: compare "
                "selections of the same work folder"
            )
        sel[label if label not in sel else f"{label}#{len(sel)}"] = ids
    labels = list(sel)
    scores = score_table(work, len(samples))
    every = np.unique(np.concatenate(list(sel.values())))
    clusters = nearest_cluster(work, every)
    cluster_of = dict(zip(every.tolist(), clusters.tolist())) if clusters is not None else None
    result: dict[str, Any] = {"work": str(work.resolve()), "selections": {}, "jaccard": {}}
    for a in labels:
        ids = sel[a]
        result["selections"][a] = {
            "n": int(len(ids)),
            "per_source": count_by(sources[ids].tolist()),
            "per_cluster": count_by([cluster_of[i] for i in ids.tolist()]) if cluster_of is not None else None,
            "scores": {name: summary(v[ids]) for name, v in scores.items()},
        }
        result["jaccard"][a] = {b: jaccard(ids, sel[b]) for b in labels}
    result["all_samples_scores"] = {name: summary(v) for name, v in scores.items()}
    claim_outputs([folder / "compare.json", folder / "compare.png"])
    write_json(folder / "compare.json", result)
    plot(folder / "compare.png", sel, scores, sources, result)
    result["written"] = [str(folder / "compare.json"), str(folder / "compare.png")]
    return result


def cell_text_colour(value: float, vmax: float = 1.0) -> str:
    """Readable text on a cell of the ``Blues`` map: white on the dark half, black on the light one."""
    return "white" if value > 0.5 * vmax else "black"


def plot(
    path: Path, sel: dict[str, np.ndarray], scores: dict[str, np.ndarray], sources: np.ndarray, result: dict[str, Any]
) -> None:
    """One PNG: per-source shares (bars), the Jaccard matrix, and one histogram panel per score."""
    fig = figure(sel, scores, sources, result)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def figure(sel: dict[str, np.ndarray], scores: dict[str, np.ndarray], sources: np.ndarray, result: dict[str, Any]):
    """The figure of :func:`plot` (a matplotlib ``Figure`` on its own Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg for this figure, not the global backend
    from matplotlib.figure import Figure

    labels = list(sel)
    panels = 2 + len(scores)
    fig = Figure(figsize=(4.2 * panels, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    groups = sorted(set(sources[np.concatenate(list(sel.values()))].tolist())) if labels else []
    width = 0.8 / max(1, len(labels))
    for j, a in enumerate(labels):
        counts = result["selections"][a]["per_source"]
        total = max(1, len(sel[a]))
        axes[0].bar(np.arange(len(groups)) + j * width, [counts.get(str(g), 0) / total for g in groups], width, label=a)
    axes[0].set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [str(g) for g in groups], rotation=45, ha="right")
    axes[0].set_ylabel("share of the selection")
    axes[0].legend(frameon=False, fontsize=7)
    mat = np.array([[result["jaccard"][a][b] for b in labels] for a in labels])
    axes[1].imshow(mat, vmin=0, vmax=1, cmap="Blues")
    axes[1].set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes[1].set_yticks(range(len(labels)), labels)
    for (i, k), v in np.ndenumerate(mat):
        axes[1].text(k, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=cell_text_colour(v))
    axes[1].set_title("Jaccard overlap")
    for ax, (name, values) in zip(axes[2:], scores.items()):
        finite = values[np.isfinite(values)]
        bins = np.linspace(finite.min(), finite.max() + 1e-9, 40) if len(finite) else 10
        for a in labels:
            v = values[sel[a]]
            ax.hist(v[np.isfinite(v)], bins=bins, histtype="step", density=True, label=a)
        ax.set_title(name)
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        if labels:
            ax.legend(frameon=False, fontsize=7)  # which selection each line is
    fig.tight_layout()
    return fig


def format_table(result: dict[str, Any]) -> str:
    """Plain-text tables of the comparison, for the command line."""
    labels = list(result["selections"])
    w = max(8, *(len(a) for a in labels))
    lines = ["Jaccard overlap", " " * w + "  " + "  ".join(f"{a[:w]:>{w}}" for a in labels)]
    for a in labels:
        lines.append(f"{a:<{w}}  " + "  ".join(f"{result['jaccard'][a][b]:>{w}.3f}" for b in labels))
    sources = sorted({s for a in labels for s in result["selections"][a]["per_source"]})
    lines += ["", "per source (count)", f"{'source':<{w}}  " + "  ".join(f"{a[:w]:>{w}}" for a in labels)]
    for s in sources:
        counts = [result["selections"][a]["per_source"].get(s, 0) for a in labels]
        lines.append(f"{s[:w]:<{w}}  " + "  ".join(f"{c:>{w}}" for c in counts))
    if all(result["selections"][a]["per_cluster"] is not None for a in labels):
        clusters = sorted(
            {c for a in labels for c in result["selections"][a]["per_cluster"]}, key=lambda c: (len(c), c)
        )
        lines += ["", "per cluster of S (count)", f"{'cluster':<{w}}  " + "  ".join(f"{a[:w]:>{w}}" for a in labels)]
        for c in clusters:
            counts = [result["selections"][a]["per_cluster"].get(c, 0) for a in labels]
            lines.append(f"{c:<{w}}  " + "  ".join(f"{v:>{w}}" for v in counts))
    names = list(result["all_samples_scores"])
    for name in names:
        lines += ["", f"score {name}: mean / median / [q05, q95]"]
        for a in labels + ["(all)"]:
            s = result["all_samples_scores"][name] if a == "(all)" else result["selections"][a]["scores"][name]
            lines.append(
                f"{a:<{w}}  "
                + (
                    f"{s['mean']:+.3f} / {s['q50']:+.3f} / [{s['q05']:+.3f}, {s['q95']:+.3f}]"
                    if s.get("n")
                    else "no values"
                )
            )
    return "\n".join(lines)
