"""``WORK/scores.parquet``: one row per sample, every score computed so far (docs/coido_contract.md).

Columns: ``id``, ``source``, ``status``, ``usable``, ``cluster`` (the spectral cluster of a member of
the training subset S, null elsewhere), ``r`` (CoIDO's raw score) and ``rank`` (1 = the lowest r among
usable samples, kept first), ``reason`` (why the last ``pick`` kept or left the sample: :mod:`.why`),
and one ``baseline:NAME`` column per baseline scored so far (the value it ranked by, higher = kept
first). The Parquet metadata records the settings each baseline column was made with, so that a
baseline run with the same settings reuses its column instead of repeating its model pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path
from .workdir import load_samples, usable_mask

TABLE = "scores.parquet"
PREFIX = "baseline:"
META_KEY = b"frugalvl"


def table_path(work: str | Path) -> Path:
    return Path(work) / TABLE


def _read(work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Baseline columns {name: values} and their recorded settings, from the table when present."""
    path = table_path(work)
    if not path.is_file():
        return {}, {}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    cols = {
        c[len(PREFIX) :]: table.column(c).to_numpy(zero_copy_only=False)
        for c in table.column_names
        if c.startswith(PREFIX)
    }
    return cols, meta.get("baselines", {})


def ranks(r: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """1-based rank of r among usable samples (lowest first, ties by position); 0 elsewhere."""
    order = np.flatnonzero(usable)
    order = order[np.lexsort((order, r[order]))]
    out = np.zeros(len(r), np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out


def refresh(
    work: str | Path,
    baseline: tuple[str, np.ndarray, Any] | None = None,
    reasons: list[str] | None = None,
) -> Path:
    """Rewrite the table from the work folder, adding or replacing one baseline column
    (``(name, values, settings)``) and the ``reason`` column when given (else the previous ones kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = Path(work)
    samples = load_samples(work)
    n = len(samples)
    usable = usable_mask(work, samples)
    cols: dict[str, Any] = {
        "id": pa.array([s["id"] for s in samples], pa.string()),
        "source": pa.array([s["dataset"] for s in samples], pa.string()),
        "status": pa.array([s["status"] for s in samples], pa.string()),
        "usable": pa.array(usable, pa.bool_()),
    }
    cluster = np.full(n, -1, np.int64)
    if (work / "subset" / "clusters.npy").is_file():
        cluster[np.load(work / "subset" / "indices.npy")] = np.load(work / "subset" / "clusters.npy")
    cols["cluster"] = pa.array(cluster, pa.int64(), mask=cluster < 0)
    r_path = work / "score" / "r.npy"
    if r_path.is_file() and len(r := np.load(r_path)) == n:
        rank = ranks(r, usable)
        cols["r"] = pa.array(r.astype(np.float32), pa.float32())
        cols["rank"] = pa.array(rank, pa.int64(), mask=rank == 0)
    else:
        cols["r"] = pa.nulls(n, pa.float32())
        cols["rank"] = pa.nulls(n, pa.int64())
    old_cols, old_meta = _read(work)
    old_reasons = None
    if reasons is None and table_path(work).is_file():
        old = pq.read_table(table_path(work), columns=["reason"])
        old_reasons = old.column(0) if old.num_rows == n else None
    cols["reason"] = pa.array(reasons, pa.string()) if reasons is not None else old_reasons or pa.nulls(n, pa.string())
    if baseline is not None:
        name, values, settings = baseline
        old_cols[name] = np.asarray(values, dtype=np.float64)
        old_meta[name] = settings
    for name in sorted(old_cols):
        values = np.asarray(old_cols[name], dtype=np.float64)
        if len(values) == n:
            cols[PREFIX + name] = pa.array(values, pa.float64(), mask=np.isnan(values))
    table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps({"baselines": old_meta}).encode()})
    with atomic_path(table_path(work)) as tmp:
        pq.write_table(table, tmp)
    return table_path(work)


def baseline_column(work: str | Path, name: str, settings: Any) -> np.ndarray | None:
    """A baseline's stored values when they were made with these settings (nan where it has none)."""
    cols, meta = _read(Path(work))
    if name not in cols or meta.get(name) != settings:
        return None
    n = len(load_samples(work))
    values = np.asarray(cols[name], dtype=np.float64)
    return values if len(values) == n else None
