"""What produced a result: the record written beside every segmentation output
(docs/reliability.md#the-record-beside-every-result).

``<stem>_run.json`` holds the segmenter's identity (method, settings, vocabulary, weights) and the
reading/tiling settings. It is written after the outputs, so an output without a matching record is
unfinished. A later run into the same folder compares records: equal means done (skipped), different
means the old outputs are not this run's result, and the run stops with one line naming the difference
(``overwrite=True`` redoes them).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_json
from .scene_settings import VECTOR_FORMATS

RECORD_SUFFIX = "_run.json"
WRITING = "writing"  # the key of a claim: a record written before the outputs, naming them


@dataclass(frozen=True)
class SegmenterRecord:
    """What a record needs of a segmenter (its identity and class names), without its model.

    Planning and assembling a scene need only this, so a process that never loads the model (the Ray
    driver, an assembly task) passes it wherever a segmenter's record is asked for.
    """

    identity: dict[str, Any]
    names: tuple[str, ...]

    @classmethod
    def of(cls, segmenter: Any) -> SegmenterRecord:
        return cls(segmenter_identity(segmenter), tuple(class_names(segmenter)))

    @classmethod
    def of_identity(cls, identity: dict[str, Any], names: Any) -> SegmenterRecord:
        """From an identity computed without the models (``Method.record``), as ``of`` would store it."""
        return cls(json.loads(json.dumps(identity, default=str)), tuple(names))


def class_names(segmenter: Any) -> list[str]:
    """The class names of a segmenter or of a :class:`SegmenterRecord`."""
    if isinstance(segmenter, SegmenterRecord):
        return list(segmenter.names)
    return list(segmenter.vocabulary.names)


def segmenter_identity(segmenter: Any) -> dict[str, Any]:
    """The segmenter's own ``identity()`` when it has one, else what the Segmenter protocol exposes."""
    if isinstance(segmenter, SegmenterRecord):
        return json.loads(json.dumps(segmenter.identity))
    if hasattr(segmenter, "identity"):
        return json.loads(json.dumps(segmenter.identity(), default=str))
    vocab = segmenter.vocabulary
    ident: dict[str, Any] = {
        "type": type(segmenter).__name__,
        "classes": list(vocab.names),
        "queries": list(getattr(vocab, "queries", vocab.names)),
        "prob_thd": segmenter.prob_thd,
        "bg_idx": segmenter.bg_idx,
    }
    settings = getattr(segmenter, "settings", None)
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        ident["settings"] = dataclasses.asdict(settings)
    return json.loads(json.dumps(ident, default=str))


def make_record(segmenter: Any, **settings: Any) -> dict[str, Any]:
    return json.loads(json.dumps({"segmenter": segmenter_identity(segmenter), "settings": settings}, default=str))


def record_path(outdir: Path, stem: str) -> Path:
    return Path(outdir) / f"{stem}{RECORD_SUFFIX}"


def output_names(stem: str) -> list[str]:
    """Every file name a run may write for an input with this stem."""
    names = [
        f"{stem}.tif",
        f"{stem}.png",
        f"{stem}_overlay.png",
        f"{stem}_probs.npy",
        f"{stem}_probs.tif",
        f"{stem}{RECORD_SUFFIX}",
    ]
    return names + [f"{stem}{suffix}" for suffix in VECTOR_FORMATS.values()]


def write_claim(outdir: Path, stem: str) -> None:
    """Before an input's outputs are (re)written: a record that claims them but marks them unfinished.

    It replaces the old record, so old outputs are no longer claimed as finished, while the files being
    written stay recorded as frugalvl's own (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make):
    a killed run's half set of outputs is resumed, not refused as someone else's files.
    """
    write_json(record_path(outdir, stem), {WRITING: output_names(stem)})


def recorded_outputs(outdir: Path, stem: str) -> list[Path]:
    """The outputs of ``stem`` in ``outdir`` a frugalvl run recorded (finished or claimed); [] when none."""
    path = record_path(outdir, stem)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or not ("segmenter" in old or WRITING in old):
        return []
    names = old.get(WRITING) or output_names(stem)
    return [path] + [Path(outdir) / n for n in names if isinstance(n, str) and "/" not in n]


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_record(path: Path, record: dict[str, Any]) -> None:
    write_json(path, record)


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """A short ``key: old -> new`` for the first difference between two JSON values, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:  # the new record's order: most telling first
            diff = first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    if old != new:

        def show(v: Any) -> str:
            text = json.dumps(v, ensure_ascii=False)
            return text if len(text) <= 60 else text[:57] + "..."

        key = prefix.rstrip(".").removeprefix("settings.") or "record"
        return f"{key}: {show(old)} -> {show(new)}"
    return None


RESULT_KEY = "result"  # what a finished run found (pixels per class): kept in the record, not compared
MAX_SHOWN = 6  # differences named in one message


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Every ``key: old -> new`` difference between two JSON values (the new record's key order)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in [*new, *(k for k in old if k not in new)]:
            found += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    diff = first_difference(old, new, prefix)
    return [diff] if diff else []


def check_record(path: Path, record: dict[str, Any], what: str) -> bool:
    """True when ``path`` holds ``record``; False when it is absent or unreadable (unfinished work);
    a :class:`UserError` naming every difference when it was made with other settings."""
    old = read_record(path)
    if old is None or WRITING in old:  # absent, unreadable, or a claim: unfinished
        return False
    if isinstance(old, dict):
        old = {k: v for k, v in old.items() if k != RESULT_KEY}
    diffs = differences(old, record)
    if not diffs:
        return True
    shown = "; ".join(diffs[:MAX_SHOWN]) + (f"; and {len(diffs) - MAX_SHOWN} more" if len(diffs) > MAX_SHOWN else "")
    raise UserError(
        f"{what} in {path.parent} was made with other settings ({shown}): use overwrite=True to redo it, "
        "or another outdir"
    )


def result_of(pixels: dict[int, int], pixel_area: float, unit: str) -> dict[str, Any]:
    """The :data:`RESULT_KEY` part of a record: pixels per class index, the area of one pixel and its unit."""
    return {"pixels": {str(int(k)): int(v) for k, v in pixels.items()}, "pixel_area": pixel_area, "unit": unit}


def recorded_result(path: Path) -> tuple[dict[int, int], float, str] | None:
    """(pixels per class, pixel area, unit) a finished run kept in its record; None for older records."""
    old = read_record(path)
    found = old.get(RESULT_KEY) if isinstance(old, dict) else None
    if not isinstance(found, dict):
        return None
    try:
        pixels = {int(k): int(v) for k, v in found["pixels"].items()}
        return pixels, float(found["pixel_area"]), str(found["unit"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
