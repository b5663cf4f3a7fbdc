"""Text tables: per-class results, and the papers' two tables with their published numbers.

Published numbers and their sources: docs/methods/evaluation.md#published-numbers.
The papers' result tables are images, so every value is a transcription from a third-party copy;
a ``?`` marks values whose sources disagree or that are only implied, with the alternatives in
a footnote. Missing values (never found in any source) are shown as ``–``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Column order and short names of the papers' tables.
MULTICLASS = ("openearthmap", "loveda", "isaid", "potsdam", "vaihingen", "uavid", "udd5", "vdd")
SINGLE_CLASS = {
    "building": ("whu_aerial", "whu_sat_ii", "inria", "xbd_pre"),
    "road": ("chn6_cug", "deepglobe", "massachusetts", "spacenet"),
    "water": ("wbs_si",),
}
SHORT_NAMES = {
    "openearthmap": "OEM",
    "loveda": "LoveDA",
    "isaid": "iSAID",
    "potsdam": "Potsdam",
    "vaihingen": "Vaihingen",
    "uavid": "UAVid",
    "udd5": "UDD5",
    "vdd": "VDD",
    "whu_aerial": "WHU-Aer",
    "whu_sat_ii": "WHU-SatII",
    "inria": "Inria",
    "xbd_pre": "xBD-pre",
    "chn6_cug": "CHN6-CUG",
    "deepglobe": "DeepGlobe",
    "massachusetts": "Mass.",
    "spacenet": "SpaceNet",
    "wbs_si": "WBS-SI",
}
GROUP_TITLES = {
    "multiclass": "multi-class (mIoU)",
    "building": "building (IoU)",
    "road": "road (IoU)",
    "water": "flood / water (IoU)",
}


@dataclass(frozen=True)
class Published:
    """One number from a paper's table (percent)."""

    value: float
    uncertain: bool = False
    note: str = ""

    def text(self) -> str:
        return f"{self.value:.1f}{'?' if self.uncertain else ''}"


# method -> dataset -> headline number (mIoU, or foreground IoU for the binary datasets)
PUBLISHED: dict[str, dict[str, Published]] = {
    "segearth-ov": {
        "openearthmap": Published(40.3, note="confirmed in likyoo/SegEarth-OV#8"),
        "loveda": Published(36.9),
        "isaid": Published(21.7),
        "potsdam": Published(
            47.1,
            True,
            "Potsdam: 47.1 per a ReAttnCLIP note, 48.5 in the SegEarth-OV3 table (SegEarth-OV-3#13 says two values there were mis-copied)",
        ),
        "vaihingen": Published(
            29.0, True, "Vaihingen: about 29, implied by ReAttnCLIP's average; 40.0 in the SegEarth-OV3 table"
        ),
        "uavid": Published(42.5),
        "udd5": Published(50.6),
        "vdd": Published(45.3),
        "whu_sat_ii": Published(28.4),
        "massachusetts": Published(11.5),
    },
    "segearth-ov3": {
        "openearthmap": Published(42.9, note="confirmed in earth-insights/SegEarth-OV-3#18"),
        "loveda": Published(47.4),
        "potsdam": Published(57.8),
        "vaihingen": Published(60.8),
    },
}
PAPER_LABELS = {"segearth-ov": "SegEarth-OV (paper)", "segearth-ov3": "SegEarth-OV3 (paper)"}
FOOTNOTE = (
    "paper values: transcriptions of the papers' tables (docs/methods/evaluation.md#published-numbers); "
    "? = sources disagree, – = not published in any source found"
)


def fmt(value: float | None, digits: int = 2) -> str:
    """A percentage for a table; NaN or None as ``–``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> str:
    """A plain aligned text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out += [line(header), rule, *(line(r) for r in rows)]
    return "\n".join(out)


def per_class_table(
    names: Sequence[str], iou: Sequence[float] | np.ndarray, acc: Sequence[float] | np.ndarray, title: str | None = None
) -> str:
    """Class | IoU | Acc, in percent."""
    rows = [[n, fmt(i), fmt(a)] for n, i, a in zip(names, iou, acc)]
    return format_table(["class", "IoU", "Acc"], rows, title)


def published(method: str, dataset: str) -> Published | None:
    return PUBLISHED.get(method, {}).get(dataset)


def comparison_table(
    dataset: str, headline_name: str, headline: float, summary: Mapping[str, float], label: str
) -> str:
    """This run next to the papers' numbers for one dataset (papers report only the headline)."""
    header = ["metric", label, *PAPER_LABELS.values()]
    rows = [[headline_name, fmt(headline), *(_paper_cell(m, dataset) for m in PAPER_LABELS)]]
    for name, value in summary.items():
        if name != headline_name:
            rows.append([name, fmt(value), *("" for _ in PAPER_LABELS)])
    notes = [p.note for m in PAPER_LABELS if (p := published(m, dataset)) and p.uncertain]
    return "\n".join([format_table(header, rows), *(f"  ? {n}" for n in notes), f"  {FOOTNOTE}"])


def _paper_cell(method: str, dataset: str) -> str:
    p = published(method, dataset)
    return p.text() if p else "–"


def _average(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None or math.isnan(v) for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def _paper_average(method: str, datasets: Sequence[str]) -> str:
    """Mean of the published values over exactly these columns; ``–`` if any is unknown."""
    found = [published(method, d) for d in datasets]
    values = [v for v in found if v is not None]
    if not values or len(values) < len(found):
        return "–"
    mean = sum(v.value for v in values) / len(values)
    return f"{mean:.1f}{'?' if any(v.uncertain for v in values) else ''}"


def paper_tables(headlines: Mapping[str, float], label: str) -> str:
    """The papers' two tables for the datasets evaluated in this run.

    ``headlines`` maps dataset name -> this run's headline number (percent). Table 1: the
    multi-class datasets (mIoU) with their average; table 2: building / road / water foreground
    IoU, grouped, with one average per group.
    """
    parts = []
    multi = [d for d in MULTICLASS if d in headlines]
    if multi:
        parts.append(
            _grouped_table(
                "Table 1: multi-class semantic segmentation (mIoU, %)", {"multiclass": multi}, headlines, label
            )
        )
    single = {g: [d for d in ds if d in headlines] for g, ds in SINGLE_CLASS.items()}
    single = {g: ds for g, ds in single.items() if ds}
    if single:
        parts.append(_grouped_table("Table 2: single-class extraction (foreground IoU, %)", single, headlines, label))
    others = sorted(d for d in headlines if d not in MULTICLASS and all(d not in ds for ds in SINGLE_CLASS.values()))
    if others:
        rows = [[d, fmt(headlines[d])] for d in others]
        parts.append(format_table(["dataset", label], rows, "Other datasets"))
    notes = sorted({p.note for m in PAPER_LABELS for d in headlines if (p := published(m, d)) and p.uncertain})
    parts.append("\n".join([*(f"? {n}" for n in notes), FOOTNOTE]))
    return "\n\n".join(parts)


def _grouped_table(title: str, groups: Mapping[str, Sequence[str]], headlines: Mapping[str, float], label: str) -> str:
    """Rows: this run and each paper; columns: datasets, each group followed by its average."""
    header = ["method"]
    ours = [label]
    papers = {m: [name] for m, name in PAPER_LABELS.items()}
    for group, datasets in groups.items():
        with_avg = len(datasets) > 1
        header += [SHORT_NAMES.get(d, d) for d in datasets] + ([_avg_name(group)] if with_avg else [])
        ours += [fmt(headlines[d]) for d in datasets]
        for method, row in papers.items():
            row += [_paper_cell(method, d) for d in datasets]
        if with_avg:
            ours.append(fmt(_average([headlines[d] for d in datasets])))
            for method, row in papers.items():
                row.append(_paper_average(method, datasets))
    table = format_table(header, [ours, *papers.values()], title)
    if list(groups) != ["multiclass"]:
        table += "\n" + "; ".join(f"{g}: {', '.join(SHORT_NAMES.get(d, d) for d in ds)}" for g, ds in groups.items())
    return table


def _avg_name(group: str) -> str:
    return "avg" if group == "multiclass" else f"{group} avg"
