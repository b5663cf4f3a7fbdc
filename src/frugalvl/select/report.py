"""One self-contained HTML page that shows what a CoIDO selection did
(docs/methods/coido_finetune.md#frugalvl-select-report-work).

``write_report(work)`` reads the work folder (docs/coido_contract.md): ``prepare/samples.json`` (sources, images,
conversations), ``score/r.npy`` (the scorer's raw r, docs/methods/coido.md#the-pipeline), the usable mask,
``subset/indices.npy`` + ``subset/clusters.npy`` (the clusters of S, docs/methods/coido.md#clustering) and a
selection (``pick/selected_ids.npy`` by default, #outputs). The page holds

* the distribution of r per source (low r = kept, #why-a-low-r-is-kept),
* the selected / rejected share per source (all eligible samples) and per cluster (the samples of S,
  the only ones with a cluster label),
* a gallery of the lowest- and highest-scored samples: thumbnail, first question and answer.

Everything is inline: CSS in a ``<style>`` block, charts and thumbnails as ``data:`` URIs (PNG from
matplotlib's Agg canvas, created per figure so the global backend is never touched, and JPEG
thumbnails). The page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, check_outputs, claim_outputs
from ..settings import FieldError, check_at_least, option
from .formats.images import open_image

log = logging.getLogger(__name__)

IMAGE_TAG = "<image>"
PALETTE = ("#1f4e79", "#c0504d", "#4f8f3a", "#8064a2", "#d08a1e", "#2f9c9c", "#7f7f7f", "#b05f8c")


@dataclass(frozen=True)
class ReportSettings:
    """What the page shows; defaults as docs/methods/coido_finetune.md#frugalvl-select-report-work."""

    gallery: int = option(24, "lowest and highest samples shown")
    thumb_px: int = option(128, "longest side of a gallery thumbnail in pixels", cli=False)
    text_chars: int = option(240, "question / answer text is cut to this many characters", cli=False)
    bins: int = option(40, "histogram bins", cli=False)
    title: str = option("CoIDO selection report", "the page's title")

    def __post_init__(self) -> None:
        check_at_least(self, ("gallery", "thumb_px", "text_chars", "bins"), 1)


@dataclass
class ReportData:
    """The arrays the page is drawn from (all of length N unless noted)."""

    samples: list[dict[str, Any]]
    r: np.ndarray  # float [N]
    eligible: np.ndarray  # bool [N]
    selected: np.ndarray  # bool [N]
    subset: np.ndarray  # int [|S|] positions of S (may be empty)
    clusters: np.ndarray  # int [|S|] cluster labels of S (−1: none)
    selection_path: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return [str(s.get("dataset", "unknown")) for s in self.samples]


# ----------------------------------------------------------------------------------------- inputs


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path} is missing: run `frugalvl select {stage}` on this work folder first")
    return path


def read_selection(path: Path, samples: Sequence[dict[str, Any]]) -> np.ndarray:
    """Positions of a selection from ``selected_ids.npy`` (positions) or ``selected_ids.txt`` (ids)."""
    if not path.is_file():
        raise FieldError(
            "selection",
            f"selection {path} does not exist: run `frugalvl select pick` or give {{selection}} selected_ids.npy|.txt",
        )
    if path.suffix == ".npy":
        chosen = np.load(path).astype(np.int64)
    else:
        where = {str(s["id"]): k for k, s in enumerate(samples)}
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        unknown = [i for i in ids if i not in where]
        if unknown:
            raise UserError(
                f"{path}: {len(unknown)} ids (e.g. {unknown[0]!r}) are not in this work folder's samples: "
                "give the selection made from this work folder"
            )
        chosen = np.array([where[i] for i in ids], dtype=np.int64)
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(samples)):
        raise UserError(
            f"{path} holds positions outside 0..{len(samples) - 1}: give the selection made from this work folder"
        )
    return chosen


def load_report_data(work: str | Path, selection: str | Path | None = None) -> ReportData:
    """Read what the page needs from ``work``; ``selection`` defaults to ``pick/selected_ids.npy``."""
    from .workdir import usable_mask

    work = Path(work)
    samples = json.loads(_need(work / "prepare/samples.json", "prepare").read_text(encoding="utf-8"))
    r = np.load(_need(work / "score/r.npy", "score")).astype(np.float64)
    if len(r) != len(samples):
        raise FieldError(
            "force",
            f"{work}/score/r.npy has {len(r)} values for {len(samples)} samples: re-run the score stage with {{force}}",
        )
    notes = []
    eligible = usable_mask(work, samples)
    sel_path = Path(selection) if selection is not None else work / "pick/selected_ids.npy"
    selected = np.zeros(len(samples), bool)
    if selection is None and not sel_path.is_file():
        notes.append("no selection yet (run `frugalvl select pick`): shares are not shown")
        sel_path_str = None
    else:
        selected[read_selection(sel_path, samples)] = True
        sel_path_str = str(sel_path)
    subset, clusters = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if (work / "subset/indices.npy").is_file() and (work / "subset/clusters.npy").is_file():
        subset = np.load(work / "subset/indices.npy").astype(np.int64)
        clusters = np.load(work / "subset/clusters.npy").astype(np.int64)
        if len(subset) != len(clusters):
            raise FieldError(
                "force",
                f"{work}/subset: indices.npy and clusters.npy differ in length: "
                "re-run the cluster stage with {force}",
            )
    else:
        notes.append("no clusters (run `frugalvl select cluster`): the per-cluster shares are not shown")
    return ReportData(samples, r, eligible, selected, subset, clusters, sel_path_str, notes)


# ----------------------------------------------------------------------------------------- tables


def share_table(groups: Sequence[Any], selected: np.ndarray) -> list[dict[str, Any]]:
    """Per group: samples, selected, rejected, selected share; groups in first-seen sorted order."""
    rows: dict[str, list[int]] = {}
    for g, s in zip(groups, selected):
        counts = rows.setdefault(str(g), [0, 0])
        counts[0] += 1
        counts[1] += int(bool(s))
    out = []
    for name in sorted(rows, key=lambda k: (len(k), k)):
        n, k = rows[name]
        out.append({"group": name, "n": n, "selected": k, "rejected": n - k, "share": k / n if n else 0.0})
    return out


def extremes(r: np.ndarray, eligible: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``count`` lowest-r and highest-r eligible samples (lowest / highest first);
    ties broken by position, so the choice is stable."""
    cand = np.flatnonzero(eligible)
    order = cand[np.lexsort((cand, r[cand]))]
    low = order[:count]
    high = cand[np.lexsort((cand, -r[cand]))][:count]
    return low, high


def first_exchange(conversations: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """The first human turn (``<image>`` removed) and the first answer after it."""
    question = answer = ""
    for turn in conversations:
        if turn.get("from") == "human" and not question:
            question = str(turn.get("value", "")).replace(IMAGE_TAG, "").strip()
        elif turn.get("from") == "gpt" and question:
            answer = str(turn.get("value", "")).strip()
            break
    return question, answer


# ----------------------------------------------------------------------------------------- pictures


def _png_uri(fig) -> str:
    """A matplotlib Figure rendered by its own Agg canvas (the global backend is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_chart(
    r: np.ndarray, sources: Sequence[str], eligible: np.ndarray, selected: np.ndarray, bins: int
) -> str:
    """Small multiples: r of the eligible samples of each source, selected part drawn darker."""
    from matplotlib.figure import Figure

    names = sorted({s for s, e in zip(sources, eligible) if e}, key=lambda k: (len(k), k))
    src = np.asarray(sources, dtype=object)
    values = r[eligible]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    edges = np.linspace(lo, hi + 1e-9 if hi > lo else lo + 1.0, bins + 1)
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig = Figure(figsize=(3.6 * cols, 2.4 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        mine = eligible & (src == name)
        ax.hist(r[mine], bins=edges, color="#a9c0da", label=f"eligible ({int(mine.sum())})")
        if selected.any():
            ax.hist(r[mine & selected], bins=edges, color="#1f4e79", label=f"selected ({int((mine & selected).sum())})")
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, frameon=False)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.supxlabel("scorer output r (low = kept)", fontsize=9)
    fig.tight_layout()
    return _png_uri(fig)


def share_chart(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Horizontal stacked bars: selected and rejected share of each group."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 0.9 + 0.28 * max(1, len(rows))), dpi=100)
    ax = fig.subplots()
    names = [row["group"] for row in rows][::-1]
    share = np.array([row["share"] for row in rows][::-1])
    ax.barh(names, share, color="#1f4e79", label="selected")
    ax.barh(names, 1 - share, left=share, color="#d9d9d9", label="rejected")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the group's samples, {title}", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    fig.tight_layout()
    return _png_uri(fig)


def thumbnail_uri(path: str | None, size: int) -> str | None:
    """A JPEG thumbnail as a data: URI; None when there is no readable image."""
    if not path:
        return None
    try:
        with open_image(path) as im:  # a file, or bytes inside the input
            image = im.convert("RGB")
    except (OSError, ValueError):
        return None
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
background:#fff;line-height:1.4}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:.9em}.note{background:#fff7e0;border-left:4px solid #e0b040;padding:6px 10px;margin:6px 0}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f5f8}
.chart{max-width:100%;height:auto;display:block;margin:6px 0}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(176px,1fr));gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:6px;font-size:.78em;background:#fafafa}
.card img,.card .noimg{width:128px;height:128px;object-fit:contain;display:block;margin:0 auto 4px;background:#eee}
.card .noimg{display:flex;align-items:center;justify-content:center;color:#777}
.card .r{font-weight:600}.card .sel{color:#1f4e79}.card .rej{color:#999}
.card .q{margin-top:3px}.card .a{color:#1f4e79;margin-top:2px}
"""


def _table(rows: Sequence[dict[str, Any]], label: str) -> str:
    head = f"<tr><th>{html.escape(label)}</th><th>samples</th><th>selected</th><th>rejected</th><th>selected share</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(row['group'])}</td><td>{row['n']}</td><td>{row['selected']}</td>"
        f"<td>{row['rejected']}</td><td>{100 * row['share']:.1f}%</td></tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _card(k: int, data: ReportData, settings: ReportSettings) -> str:
    sample = data.samples[k]
    q, a = first_exchange(sample.get("conversations", []))
    uri = thumbnail_uri(sample.get("image_path") if sample.get("status", "ok") == "ok" else None, settings.thumb_px)
    pic = (
        f'<img src="{uri}" alt="{html.escape(str(sample.get("id", k)))}">'
        if uri
        else '<div class="noimg">text only</div>'
        if not sample.get("image")
        else '<div class="noimg">no image</div>'
    )
    mark = '<span class="sel">selected</span>' if data.selected[k] else '<span class="rej">rejected</span>'
    return (
        f'<div class="card" data-idx="{k}">{pic}<div><span class="r">r = {data.r[k]:.4g}</span> · {mark}</div>'
        f"<div>{html.escape(str(sample.get('id', k)))} · {html.escape(str(sample.get('dataset', '')))}</div>"
        f'<div class="q"><b>Q:</b> {html.escape(_cut(q, settings.text_chars))}</div>'
        f'<div class="a"><b>A:</b> {html.escape(_cut(a, settings.text_chars))}</div></div>'
    )


_OPENING = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
)


def render_html(data: ReportData, settings: ReportSettings = ReportSettings()) -> str:
    """The whole page as one string."""
    has_sel = data.selection_path is not None
    src = data.sources
    elig = np.flatnonzero(data.eligible)
    parts = [
        f"<h1>{html.escape(settings.title)}</h1>",
        f'<div class="meta">{len(data.samples)} samples, {len(elig)} eligible, '
        f"{int(data.selected.sum())} selected"
        + (f" (from {html.escape(str(data.selection_path))})" if has_sel else "")
        + (f"; r in [{data.r[elig].min():.4g}, {data.r[elig].max():.4g}]" if len(elig) else "")
        + ". Low r = hard sample = kept first.</div>",
    ]
    parts += [f'<div class="note">{html.escape(n)}</div>' for n in data.notes]
    parts.append("<h2>Scorer output r per source</h2>")
    if len(elig):
        parts.append(
            f'<img class="chart" id="hist" alt="r histogram per source" '
            f'src="{histogram_chart(data.r, src, data.eligible, data.selected, settings.bins)}">'
        )
    if has_sel:
        by_source = share_table([src[i] for i in elig], data.selected[elig])
        parts += [
            "<h2>Selected and rejected share per source</h2>",
            '<div class="pair">',
            _table(by_source, "source"),
            f'<img class="chart" id="share-source" alt="share per source" '
            f'src="{share_chart(by_source, "per source (eligible samples)")}">',
            "</div>",
        ]
        if len(data.subset):
            keep = data.eligible[data.subset]
            labels = ["none" if c < 0 else f"cluster {c}" for c in data.clusters[keep]]
            by_cluster = share_table(labels, data.selected[data.subset[keep]])
            parts += [
                "<h2>Selected and rejected share per cluster</h2>",
                f'<div class="meta">Clusters are fitted on the training subset S ({int(keep.sum())} eligible '
                "samples); the shares are over S's samples.</div>",
                '<div class="pair">',
                _table(by_cluster, "cluster"),
                f'<img class="chart" id="share-cluster" alt="share per cluster" '
                f'src="{share_chart(by_cluster, "per cluster (samples of S)")}">',
                "</div>",
            ]
    low, high = extremes(data.r, data.eligible, settings.gallery)
    for title, idx, gid in (
        (f"The {len(low)} lowest-scored samples (kept first)", low, "lowest"),
        (f"The {len(high)} highest-scored samples (dropped first)", high, "highest"),
    ):
        parts += [
            f"<h2>{html.escape(title)}</h2>",
            f'<div class="gallery" id="{gid}">',
            *(_card(int(k), data, settings) for k in idx),
            "</div>",
        ]
    return (
        _OPENING
        + f'<title>{html.escape(settings.title)}</title><link rel="icon" href="data:,">'
        + f"<style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a page :func:`write_report` wrote (its opening and its two galleries)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return text.startswith(_OPENING) and 'id="lowest"' in text and 'id="highest"' in text


def write_report(
    work: str | Path,
    out: str | Path | None = None,
    selection: str | Path | None = None,
    settings: ReportSettings = ReportSettings(),
    overwrite: bool = False,
) -> Path:
    """Write the page (default ``WORK/report.html``) atomically; returns its path. ``out`` is never an input,
    a file inside the work folder's stages, nor a file no report recorded writing (unless ``overwrite``)."""
    work = Path(work)
    out = Path(out) if out is not None else work / "report.html"
    inputs = [work, *([Path(selection)] if selection is not None else [])]
    check_outputs([out], inputs, [out] if _is_report(out) else [], overwrite, "out")
    page = render_html(load_report_data(work, selection), settings)
    claim_outputs([out])
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report: %s (%.1f kB)", out, len(page) / 1024)
    return out
