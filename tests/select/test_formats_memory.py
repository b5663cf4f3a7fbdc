"""Preparing a 100K-row Parquet or WebDataset input streams it: the memory in flight (Python objects,
image bytes included, and Arrow buffers) stays a small fraction of the images' total size."""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc

import numpy as np
import pytest

from frugalvl.select import PrepareSettings, formats
from frugalvl.select.data import index_items

N = 100_000
IMAGE_BYTES = 3_000  # about; 100K rows hold ~300 MB of images


def _png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


CONV = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]


def _parquet(folder, images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    per_file = N // 4
    for f in range(4):
        rows = range(f * per_file, (f + 1) * per_file)
        table = pa.table(
            {
                "id": [str(i) for i in rows],
                "image": [images[i % len(images)] for i in rows],
                "conversations": [CONV] * per_file,
            }
        )
        pq.write_table(table, folder / f"part-{f}.parquet", row_group_size=1000)
    return folder


def _webdataset(folder, images):
    folder.mkdir()
    meta = json.dumps({"conversations": CONV}).encode()
    for s in range(4):
        with tarfile.open(folder / f"shard-{s}.tar", "w") as tar:
            for i in range(s * N // 4, (s + 1) * N // 4):
                for name, data in ((f"{i:06d}.json", meta), (f"{i:06d}.png", images[i % len(images)])):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_prepare_streams_a_100k_row_input(tmp_path, fmt):
    import pyarrow as pa

    images = [_png(k) for k in range(16)]
    total = sum(len(images[i % 16]) for i in range(N))
    path = (_parquet if fmt == "parquet" else _webdataset)(tmp_path / fmt, images)
    tracemalloc.start()
    arrow_peak = 0

    def items():
        nonlocal arrow_peak
        for k, item in enumerate(formats.iter_items(path, fmt)):
            if k % 1000 == 0:
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
            yield item

    samples, problems, _ = index_items(items(), None, PrepareSettings(verify_images=False), chunk=2048)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(samples) == N and all(s["status"] == "ok" for s in samples[:: N // 100])
    in_flight = peak - kept + arrow_peak  # what the stream held at most beyond the samples kept
    print(
        f"{fmt}: images {total / 2**20:.0f} MiB, in flight {in_flight / 2**20:.1f} MiB, samples {kept / 2**20:.0f} MiB"
    )
    assert total > 250 * 2**20 and in_flight < 0.1 * total
