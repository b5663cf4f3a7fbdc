"""``frugalvl change --engine ray``: pairs spread over a Ray actor pool
(docs/methods/segearth_ov3_change.md#whole-scenes).

Each actor builds one change detector (SAM 3 loaded once) and runs whole pairs through
:func:`frugalvl.change.run.detect_files`, so outputs, records and resuming are those of the local run, byte
for byte. A scene's tiles stay in the actor that took the scene; its part files still let a rerun resume
inside it. Workers and driver must share the output folder. The driver checks every pair before the pool
starts and never loads the model.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..change.pairs import Pair
from ..change.run import ChangeSummary, check_pairs, detect_files
from ..change.settings import ChangeOutputSettings
from ..errors import UserError
from .cluster import map_with_pool, plan_pool, ray_session

log = logging.getLogger(__name__)


@dataclass
class _Options:
    outdir: str
    overwrite: bool
    bands: list[int] | None
    stretch: str
    settings: ChangeOutputSettings


@dataclass
class _Result:
    index: int
    summary: ChangeSummary | None = None
    error: str | None = None
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ChangeWorker:
    """A Ray Data actor: one change detector, many pairs (``batch_size=1``)."""

    def __init__(self, make_detector: Callable[[], Any], options: _Options) -> None:
        import os

        self.detector = make_detector()
        self.options = options
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out = []
        for blob in batch["row"]:
            index, pair = pickle.loads(blob)
            o = self.options
            try:
                summary = detect_files(
                    self.detector,
                    [pair],
                    o.outdir,
                    o.overwrite,
                    o.bands,
                    o.stretch,
                    progress=False,
                    settings=o.settings,
                )
                result = _Result(index, summary=summary)
            except UserError as exc:
                result = _Result(index, error=str(exc))
            except Exception as exc:  # a bad pair must not stop the others: reported by the driver
                log.exception("comparing %s failed", pair.names[0])
                result = _Result(index, error=f"{pair.names[0]}: {type(exc).__name__}: {exc}")
            result.pid = self.pid
            out.append(pickle.dumps(result))
        return {"result": out}


def detect_files_ray(
    make_detector: Callable[[], Any],
    pairs: Sequence[Pair],
    outdir: str | Path,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
    stretch: str = "percentile",
    settings: ChangeOutputSettings = ChangeOutputSettings(),
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    restarts: int = 3,
) -> ChangeSummary:
    """:func:`frugalvl.change.run.detect_files` on Ray: the same outputs and resume rules, one pair per row.

    ``make_detector``: a picklable callable that builds the detector (called once per actor).
    """
    from tqdm.auto import tqdm

    check_pairs(pairs)
    options = _Options(str(outdir), overwrite, list(bands) if bands else None, stretch, settings)
    summary = ChangeSummary()
    with ray_session(ray_address) as ray:
        pool = plan_pool(ray, workers, gpus_per_worker, device, restarts)
        items = [{"row": pickle.dumps((i, p))} for i, p in enumerate(pairs)]
        results = map_with_pool(ray, items, ChangeWorker, (make_detector, options), pool)
        bar = tqdm(total=len(pairs), desc="change", unit="pair", disable=not progress)
        for row in results:
            result: _Result = pickle.loads(row["result"])
            pair = pairs[result.index]
            if result.error is not None:
                summary.failed.append((pair, result.error))
            elif result.summary is not None:
                part = result.summary
                summary.done += part.done
                summary.skipped += part.skipped
                summary.failed += part.failed
                summary.changed_pixels += part.changed_pixels
                summary.valid_pixels += part.valid_pixels
                summary.area += part.area
                summary.units |= part.units
            bar.update(1)
        bar.close()
    order = {p.before: i for i, p in enumerate(pairs)}
    for name in ("done", "skipped"):
        getattr(summary, name).sort(key=lambda p: order.get(p.before, 0))
    return summary
