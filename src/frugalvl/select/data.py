"""LLaVA-format instruction data in and out: stable ids, sources, image checks (docs/methods/coido.md#data-format).

A LLaVA JSON file is a list of ``{"id", "image"?, "conversations": [{"from", "value"}]}``. Every
sample gets ``unique_idx`` = its position in that list, which names it in every later stage.

Images are checked once, here. Each sample gets a ``status``:

* ``ok``: its image opens;
* ``text``: it has no image (a text-only sample, source group "text");
* ``missing`` / ``corrupt``: its image is absent or does not decode;
* ``invalid``: the sample itself is unusable (an empty conversation, a turn without ``from`` or
  ``value``, no question or no answer), or its image path leads outside the image root (an absolute
  path or ``..``; allowed only with ``allow_absolute_images``). The reason is in the report.

Missing-image policy (``missing_images``), never silent: the unusable samples (missing, corrupt
or invalid) are listed in
``prepare/report.json`` and counted on the console, then

* ``exclude`` (default, what the official code does in effect: its reader skips them and its
  stage 2 scores only samples with CLIP features): they stay in the work folder with zero image
  features, are never drawn into the training subset and are never selected;
* ``error``: preparation stops with the list, for users who want a complete image root.

Preparation always stops when *no* image is found, which means a wrong ``image_root``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..settings import FieldError
from .formats import Item
from .formats.images import check_bytes
from .prompting import IMAGE_TAG
from .settings import MISSING_POLICIES as MISSING_POLICIES
from .settings import PrepareSettings

TEXT_SOURCE = "text"  # source group of text-only samples
UNKNOWN_SOURCE = "unknown"  # an image path without a folder to name its source
INVALID_SOURCE = "invalid"  # a sample that cannot be used: its path names no source (not "..", not a folder outside)
USABLE = ("ok", "text")  # statuses that can be trained on and selected
ROLES = ("human", "gpt")


def read_llava_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The list of samples in a LLaVA JSON (or JSON-lines) file, with one-line errors for bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: give the LLaVA JSON, e.g. llava_v1_5_mix665k.json")
    try:
        if path.suffix == ".jsonl":
            data = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): give a LLaVA-format JSON list") from None
    if not isinstance(data, list):
        raise UserError(f"{path} holds a {type(data).__name__}, not a list of samples: give a LLaVA-format JSON list")
    if not data:
        raise UserError(f"{path} holds no sample (an empty list): give a LLaVA-format JSON list of samples")
    for i, sample in enumerate(data):
        if not isinstance(sample, dict) or not isinstance(sample.get("conversations"), list):
            raise UserError(f"{path}: sample {i} has no 'conversations' list: every sample needs one (LLaVA format)")
    return data


def image_of(sample: dict[str, Any]) -> str | None:
    """The sample's image path relative to the image root (the first, for multi-image samples)."""
    image = sample.get("image")
    if isinstance(image, list):
        image = image[0] if image else None
    return image or None


def derive_source(sample: dict[str, Any]) -> str:
    """The source group (docs/methods/coido.md#selection): ``dataset`` when present, else the image path's first folder
    (``coco``, ``gqa``, ``ocr_vqa``, ``textvqa``, ``vg``), "text" without an image, "unknown" for a
    bare file name."""
    if sample.get("dataset"):
        return str(sample["dataset"])
    image = image_of(sample)
    if image is None:
        return TEXT_SOURCE
    parts = Path(image).parts
    return parts[0] if len(parts) > 1 else UNKNOWN_SOURCE


def sample_id(sample: dict[str, Any], unique_idx: int) -> str:
    """The sample's ``id`` field as text, or its position when it has none."""
    return str(sample["id"]) if sample.get("id") is not None else str(unique_idx)


def duplicate_ids(samples: Sequence[dict[str, Any]]) -> list[str]:
    """The ids that name more than one sample (reports and selections name samples by id), in order."""
    seen: dict[str, int] = {}
    for sample in samples:
        seen[sample["id"]] = seen.get(sample["id"], 0) + 1
    return [i for i, n in seen.items() if n > 1]


def sample_problem(
    sample: dict[str, Any], allow_absolute_images: bool = False, image_root: Path | None = None
) -> str | None:
    """Why a sample cannot be used (one short phrase), or None: its conversation, and an image path
    that would lead outside the image root (by its text, or, given ``image_root``, through a symbolic
    link inside the root that points out of it)."""
    turns = sample.get("conversations")
    if not turns:
        return "empty conversations"
    for k, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("from"), str)
            or not isinstance(turn.get("value"), str)
        ):
            return f"turn {k} lacks a 'from' or 'value' text"
        if turn["from"] not in ROLES:
            return f"turn {k} is from {turn['from']!r}, not one of {', '.join(ROLES)}"
    if not any(t["from"] == "human" for t in turns) or not any(t["from"] == "gpt" for t in turns):
        return "no human question or no gpt answer"
    image = sample.get("image")
    images = image if isinstance(image, list) else [image]
    if any(i is not None and not isinstance(i, str) for i in images):
        return "'image' is not a path"
    for i in images:
        if i and not allow_absolute_images and outside_root(i):
            return f"image path {i!r} leads outside the image root (absolute or '..')"
        if i and not allow_absolute_images and image_root is not None and links_outside(i, image_root):
            return f"image path {i!r} leads outside the image root through a symbolic link"
    return None


def links_outside(image: str, image_root: Path) -> bool:
    """Whether a relative image path, followed through its symbolic links, ends outside ``image_root``
    (links that stay inside the root keep working)."""
    root = Path(image_root).resolve()
    try:
        return not (root / image).resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return True


def outside_root(image: str) -> bool:
    """Whether an image path, taken relative to the image root, would leave it (judged on the text,
    so symbolic links inside the root keep working)."""
    if Path(image).is_absolute() or os.path.isabs(image) or image.startswith("~"):
        return True
    parts = Path(os.path.normpath(image)).parts
    return bool(parts) and parts[0] == ".."


def check_image(path: Path, verify: bool) -> str:
    """ "ok", "missing" or "corrupt" for one image file."""
    if not path.is_file():
        return "missing"
    if not verify:
        return "ok"
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return "ok"
    except Exception:  # noqa: BLE001 - any decoder failure means the file is unusable
        return "corrupt"


def image_statuses(
    samples: Sequence[dict[str, Any]],
    image_root: Path | None,
    settings: PrepareSettings,
    problems: Sequence[str | None] | None = None,
) -> list[str]:
    """The status of every sample (see the module docstring), images checked in parallel; a sample
    with a ``problems`` entry is ``invalid`` and its image is not opened."""
    problems = problems if problems is not None else [None] * len(samples)
    images = [None if why else image_of(s) for s, why in zip(samples, problems)]
    paths = [None if image is None else resolve_image(image, image_root) for image in images]
    todo = [p for p in paths if p is not None]
    with ThreadPoolExecutor(max(1, settings.workers)) as pool:
        checked = iter(pool.map(lambda p: check_image(p, settings.verify_images), todo, chunksize=64))
    return ["invalid" if why else "text" if p is None else next(checked) for p, why in zip(paths, problems)]


def resolve_image(image: str, image_root: Path | None) -> Path:
    path = Path(image)
    return path if path.is_absolute() or image_root is None else image_root / path


def index_samples(
    data: Sequence[dict[str, Any]], image_root: Path | None, statuses: Sequence[str]
) -> list[dict[str, Any]]:
    """The work folder's view of each sample: ``unique_idx``, ``id``, ``dataset``, image, status, turns."""
    out = []
    for idx, (sample, status) in enumerate(zip(data, statuses)):
        image = image_of(sample)
        out.append(
            {
                "unique_idx": idx,
                "id": sample_id(sample, idx),
                "dataset": INVALID_SOURCE
                if status == "invalid" and not sample.get("dataset")
                else derive_source(sample),
                "image": image,
                "image_path": None
                if image is None or status == "invalid"
                else str(resolve_image(image, image_root).resolve()),
                "status": status,
                "conversations": sample["conversations"],
            }
        )
    return out


def _worst(statuses: Sequence[str]) -> str:
    """A multi-image sample's status: its worst image (missing, then corrupt)."""
    return next((s for s in ("missing", "corrupt") if s in statuses), "ok")


def item_status(item: Item, problem: str | None, image_root: Path | None, verify: bool) -> str:
    """The status of one sample read from any format (see the module docstring)."""
    if problem:
        return "invalid"
    if not item.images:
        return "text"
    if item.embedded:
        return _worst([check_bytes(b, verify) for b in (item.payload or [None] * len(item.images))])
    return _worst([check_image(resolve_image(i, image_root), verify) for i in item.images])


def index_items(
    items: Iterable[Item], image_root: Path | None, settings: PrepareSettings, chunk: int = 2048
) -> tuple[list[dict[str, Any]], list[str | None], int]:
    """Samples (the work folder's view, :func:`index_samples`' keys, plus ``image_paths`` for a
    multi-image sample), the problem of each, and how many had no ``dataset``; images are checked in
    parallel, a chunk of items at a time, and embedded image bytes are dropped once checked."""
    samples: list[dict[str, Any]] = []
    problems: list[str | None] = []
    n_derived = 0
    pending: list[Item] = []

    def flush(pool: ThreadPoolExecutor) -> None:
        why = [
            it.problem or sample_problem(it.record, settings.allow_absolute_images or it.embedded, image_root)
            for it in pending
        ]
        statuses = pool.map(lambda a: item_status(a[0], a[1], image_root, settings.verify_images), zip(pending, why))
        for item, problem, status in zip(pending, why, statuses):
            idx = len(samples)
            record = item.record
            sources = [] if status == "invalid" else item.images
            paths = [i if item.embedded else str(resolve_image(i, image_root).resolve()) for i in sources]
            sample = {
                "unique_idx": idx,
                "id": sample_id(record, idx),
                "dataset": INVALID_SOURCE
                if status == "invalid" and not record.get("dataset")
                else derive_source(record),
                "image": image_of(record),
                "image_path": paths[0] if paths else None,
                "status": status,
                "conversations": record.get("conversations") or [],
            }
            if len(paths) > 1:
                sample = {**dict(list(sample.items())[:5]), "image_paths": paths, **dict(list(sample.items())[5:])}
            samples.append(sample)
            problems.append(problem)
        pending.clear()

    with ThreadPoolExecutor(max(1, settings.workers)) as pool:
        for item in items:
            n_derived += not item.record.get("dataset")
            pending.append(item)
            if len(pending) >= chunk:
                flush(pool)
        flush(pool)
    return samples, problems, n_derived


def preparation_report(
    samples: Sequence[dict[str, Any]],
    data_path: Path,
    image_root: Path | None,
    settings: PrepareSettings,
    digest: str,
    n_derived: int,
    problems: Sequence[str | None] = (),
    fmt: str = "llava",
) -> dict[str, Any]:
    """Counts per status and source, the policy in force, and every unusable sample by id."""

    def count(key: str, rows: Iterable[dict]) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in rows:
            out[s[key]] = out.get(s[key], 0) + 1
        return dict(sorted(out.items()))

    ids = [s["id"] for s in samples]
    tag_without_image = [
        s["id"]
        for s in samples
        if s["image"] is None and any(IMAGE_TAG in str(t.get("value", "")) for t in s["conversations"])
    ]
    return {
        "input": str(data_path.resolve()),
        "input_sha256": digest,
        "format": fmt,
        "image_root": None if image_root is None else str(image_root.resolve()),
        "n_samples": len(samples),
        "missing_image_policy": settings.missing_images,
        "images_verified": settings.verify_images,
        "per_status": count("status", samples),
        "per_source": count("dataset", samples),
        "per_source_usable": count("dataset", (s for s in samples if s["status"] in USABLE)),
        "sources_derived": n_derived,
        "duplicate_ids": len(ids) - len(set(ids)),
        "missing": [s["id"] for s in samples if s["status"] == "missing"],
        "corrupt": [s["id"] for s in samples if s["status"] == "corrupt"],
        "invalid": {s["id"]: why for s, why in zip(samples, problems) if why},
        "image_tag_without_image": tag_without_image,
    }


def enforce_policy(report: dict[str, Any], report_path: Path) -> None:
    """Raise for a wrong image root, or for any unusable sample under the ``error`` policy."""
    bad = len(report["missing"]) + len(report["corrupt"])
    invalid = report.get("invalid", {})
    status = report["per_status"]
    with_image = sum(status.get(k, 0) for k in ("ok", "missing", "corrupt"))
    if with_image and bad == with_image:
        where = (
            f"under {{image_root}} {report['image_root']}"
            if report["image_root"]
            else "relative to the current folder (no {image_root} was given)"
        )
        raise FieldError(
            "image_root",
            f"none of the {with_image} images was found {where}: "
            f"give the folder the 'image' paths are relative to (list in {report_path})",
            PrepareSettings,
        )
    if invalid and len(invalid) == report["n_samples"]:
        first, why = next(iter(invalid.items()))
        raise UserError(
            f"none of the {len(invalid)} samples is usable (first: id {first}, {why}; all in {report_path})"
        )
    if report["missing_image_policy"] != "error":
        return
    if bad:
        first = (report["missing"] + report["corrupt"])[0]
        raise FieldError(
            ("image_root", "missing_images"),
            f"{bad} samples have a missing or corrupt image (first: id {first}; all in {report_path}): "
            "fix {image_root} or set {missing_images} exclude",
            PrepareSettings,
        )
    if invalid:
        first, why = next(iter(invalid.items()))
        raise FieldError(
            "missing_images",
            f"{len(invalid)} samples are invalid (first: id {first}, {why}; all in {report_path}): "
            "fix them or set {missing_images} exclude",
            PrepareSettings,
        )


def flatten_conversation(conversations: Sequence[dict[str, Any]]) -> str:
    """``USER: q ASSISTANT: a ...`` with ``<image>`` removed: the text CLIP embeds
    (docs/methods/coido.md#features-and-quality-scores)."""
    parts = []
    for turn in conversations:
        role = "USER" if turn.get("from") == "human" else "ASSISTANT"
        parts.append(f"{role}: {str(turn.get('value', '')).replace(IMAGE_TAG, '').strip()}")
    return " ".join(parts)


def write_llava_json(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Write records as a LLaVA JSON list, atomically, keys and values as given."""
    from ..fileio import write_json

    write_json(path, list(records), indent=None)
