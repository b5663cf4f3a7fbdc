"""Streaming the [N, 1536] CLIP features from disk
(docs/methods/coido_baselines.md#streaming-and-work-folder-size-at-665k): never two full copies in memory.

At 665K samples ``features/clip.npy`` is 665,298 × 1536 × 4 B = 4.09 GB. Two helpers keep the features
and scoring stages at one chunk of it at a time:

* :func:`run_sharded`: a long per-sample computation in shards saved atomically, so a rerun resumes;
* :func:`assemble_shards`: the saved ``shard-*.npz`` files of :func:`run_sharded` copied, one shard at
  a time, into a ``.npy`` written through a memory map (atomically: a temporary file renamed at the end);
* :func:`score_streamed`: the scorer's raw r for every row, reading ``clip`` (a memory map works) and the
  scaled scores ``chunk`` rows at a time: the ``[N, 1539]`` scorer input is never built whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..fileio import atomic_path

SHARD = re.compile(r"shard-(\d+)-(\d+)-(\d+)\.npz$")
ShardHook = Callable[[str, int], None]  # (what, shard index), called after each shard is saved


def run_sharded(
    n: int,
    shard_size: int,
    folder: Path,
    what: str,
    compute: Callable[[int, int], dict[str, np.ndarray]],
    hook: ShardHook | None = None,
    progress: bool = True,
    keep: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``compute(lo, hi)`` over shards of [0, n), saving each to ``folder`` atomically and
    reusing saved shards; return the arrays concatenated (only those named in ``keep``, when given: large
    arrays stay on disk and are assembled by :func:`frugalvl.select.streaming.assemble_shards`)."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, shard_size))
    parts: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=n, desc=what, unit="sample", disable=not progress)
    for k, lo in enumerate(starts):
        hi = min(n, lo + shard_size)
        path = folder / f"shard-{k:05d}-{lo}-{hi}.npz"
        if not path.is_file():
            arrays = compute(lo, hi)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
            if hook:
                hook(what, k)
        with np.load(path) as z:
            parts.append({key: z[key] for key in z.files if keep is None or key in keep})
        bar.update(hi - lo)
    bar.close()
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def shard_files(folder: Path) -> list[tuple[int, int, Path]]:
    """(lo, hi, path) of the shards in ``folder``, in row order."""
    found = []
    for p in Path(folder).glob("shard-*.npz"):
        m = SHARD.search(p.name)
        if m:
            found.append((int(m.group(2)), int(m.group(3)), p))
    return sorted(found)


def assemble_shards(folder: Path, key: str, out: Path, n: int) -> np.ndarray:
    """Write array ``key`` of every shard under ``folder`` into the ``.npy`` file ``out`` ([n, ...], rows in
    shard order) one shard at a time; return it memory-mapped (read-only)."""
    from ..fileio import atomic_path

    shards = shard_files(folder)
    if not shards or shards[0][0] != 0 or shards[-1][1] != n or any(a[1] != b[0] for a, b in zip(shards, shards[1:])):
        raise ValueError(f"{folder}: the shards do not cover rows 0..{n} exactly")
    with np.load(shards[0][2]) as z:
        first = z[key]
    with atomic_path(out) as tmp:
        dest = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(n,) + first.shape[1:])
        for lo, hi, path in shards:
            with np.load(path) as z:
                dest[lo:hi] = z[key]
        dest.flush()
        del dest
    return np.load(out, mmap_mode="r")


def score_streamed(
    scorer, clip: np.ndarray, scaled: np.ndarray, batch_size: int = 256, device: str = "cpu", chunk: int = 65536
) -> np.ndarray:
    """Raw r [N] (eval mode, no softmax) for rows ``concat(clip[i], scaled[i])``, ``chunk`` rows at a time."""
    from .ranking import score_all

    parts = []
    for lo in range(0, len(clip), chunk):
        rows = np.concatenate(
            [
                np.asarray(clip[lo : lo + chunk], dtype=np.float32),
                np.asarray(scaled[lo : lo + chunk], dtype=np.float32),
            ],
            axis=1,
        )
        parts.append(score_all(scorer, rows, batch_size, device))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
