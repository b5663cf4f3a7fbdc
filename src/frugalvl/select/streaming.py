"""Streaming the [N, 1536] CLIP features from disk
(docs/methods/coido_baselines.md#streaming-and-work-folder-size-at-665k): never two full copies in memory.

At 665K samples ``features/clip.npy`` is 665,298 × 1536 × 4 B = 4.09 GB. Two helpers keep the features
and scoring stages at one chunk of it at a time:

* :func:`assemble_shards`: the saved ``shard-*.npz`` files of ``features.run_sharded`` copied, one shard at
  a time, into a ``.npy`` written through a memory map (atomically: a temporary file renamed at the end);
* :func:`score_streamed`: the scorer's raw r for every row, reading ``clip`` (a memory map works) and the
  scaled scores ``chunk`` rows at a time: the ``[N, 1539]`` scorer input is never built whole.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SHARD = re.compile(r"shard-(\d+)-(\d+)-(\d+)\.npz$")


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
