"""CoIDO costs on this machine: feature extraction, scoring, clustering (docs/methods/coido.md#cost).

    .venv/bin/python bench/coido.py [--device cuda] [--budget-s 300]

Prints one table. Models have random weights (throughput does not depend on them): a tiny CLIP
(32 px) and ViT-L-14 at its real size (224 px, 768-d embeddings, 1536-d features). Clustering runs
on synthetic unit vectors with 20 centres in 1536 + 3 dimensions, the recipe of docs/methods/coido.md#clustering (kNN
graph, then spectral clustering); sizes whose estimated time exceeds --budget-s are skipped and
reported with the estimate. The last rows time one training step of a tiny LLaVA with and without
the scorer + CoIDO losses (``frugalvl.testing.coido_step.step_cost``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int, size: int = 256) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size + 64, 3), dtype=np.uint8)).save(path, quality=90)
        conv = [
            {"from": "human", "value": "<image>\nWhat is shown in the picture? Describe it in detail."},
            {"from": "gpt", "value": "A noisy pattern of coloured pixels with no recognisable object. " * 3},
        ]
        samples.append({"status": "ok", "image_path": str(path), "conversations": conv})
    return samples


def bench_features(clip, samples, device: str, batch: int, workers: int) -> float:
    from frugalvl.select.features import FeatureSettings, clip_features

    settings = FeatureSettings(device=device, batch_size=batch, workers=workers, progress=False)
    clip_features(clip, samples[:batch], settings)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    clip_features(clip, samples, settings)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(samples) / (time.perf_counter() - t)


def random_clip(arch: str, device: str):
    import open_clip

    from frugalvl.models.clip import ClipModel

    model = open_clip.create_model(
        arch, pretrained=None, device=device, precision="fp16" if device.startswith("cuda") else "fp32"
    ).eval()
    return ClipModel(model, open_clip.get_tokenizer(arch), f"random:{arch}")


def tiny_clip(device: str):
    from frugalvl.models.clip import load_clip
    from frugalvl.testing.clip import write_tiny_openai_clip

    path = write_tiny_openai_clip(Path(tempfile.mkdtemp()) / "tiny.pt", image_size=32, patch_size=8, width=64)
    return load_clip(str(path), device)


def bench_scoring(device: str, n: int = 100_000, batch: int = 256) -> float:
    from frugalvl.select.ranking import score_all
    from frugalvl.select.scorer import Scorer

    x = np.random.default_rng(0).normal(size=(n, 1539)).astype(np.float32)
    scorer = Scorer(1536, ["clipscore", "imagereward", "text_quality"])
    score_all(scorer, x[: batch * 4], batch, device)
    t = time.perf_counter()
    score_all(scorer, x, batch, device)
    return n / (time.perf_counter() - t)


def synthetic_points(n: int, dim: int = 1536, k: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, dim)).astype(np.float32) * 1.5
    return x, rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)


def bench_clustering(sizes, budget_s: float, device: str = "cpu") -> list[tuple[str, str, str]]:
    from frugalvl.select.clustering import ClusterSettings, cluster_features, knn_affinity, spectral_labels

    settings = ClusterSettings()
    rows, last = [], None
    for n in sizes:
        if last is not None:  # kNN search grows with n², the sparse eigen-solve about with n (kNN edges)
            n0, t_knn0, t_spec0 = last
            estimate = t_knn0 * (n / n0) ** 2 + t_spec0 * (n / n0)
            if estimate > budget_s:
                rows.append(
                    (f"clustering, {n:,} points", "skipped", f"estimated {estimate:,.0f} s > budget {budget_s:.0f} s")
                )
                continue
        clip, scores = synthetic_points(n)
        feats = cluster_features(clip, scores, settings)
        del clip
        t = time.perf_counter()
        graph = knn_affinity(feats, settings.knn, settings.block, device)
        t_knn = time.perf_counter() - t
        labels, how = spectral_labels(graph, feats, settings)
        total = time.perf_counter() - t
        rows.append(
            (
                f"clustering, {n:,} points",
                f"{total:.1f} s",
                f"kNN graph {t_knn:.1f} s + {how} {total - t_knn:.1f} s; {len(set(labels.tolist()))} clusters",
            )
        )
        last = (n, t_knn, total - t_knn)
    return rows


def bench_training(device: str, repeats: int = 5) -> list[tuple[str, str, str]]:
    """One training step with and without the scorer + CoIDO losses (tiny LLaVA on easy-vqa samples)."""
    import json

    from frugalvl.select import ClusterSettings, FeatureSettings, PrepareSettings, pipeline
    from frugalvl.select.train_settings import TrainSettings
    from frugalvl.testing.clip import write_tiny_openai_clip
    from frugalvl.testing.coido_step import step_cost_from_work
    from frugalvl.testing.easyvqa import write_easyvqa_llava
    from frugalvl.testing.llava import build_tiny_llava

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, root = write_easyvqa_llava(tmp / "evqa")
        clip = write_tiny_openai_clip(tmp / "clip.pt", image_size=32, patch_size=8, width=64)
        work = tmp / "work"
        pipeline.prepare(data, work, PrepareSettings(image_root=str(root), workers=2))
        pipeline.features(work, FeatureSettings(clip=str(clip), device=device, workers=0, progress=False))
        pipeline.cluster(work, ClusterSettings(ratio=0.5, n_clusters=4, knn=10))
        texts = [t["value"] for r in json.loads(Path(data).read_text()) for t in r["conversations"]]
        mllm = build_tiny_llava(tmp / "llava", extra_text=texts)
        cost = step_cost_from_work(
            work, TrainSettings(mllm=str(mllm), batch_size=16, num_workers=0, gradient_checkpointing=False), repeats
        )
    shape = f"tiny LLaVA, batch {cost.batch_size} x {cost.seq_len} tokens"
    return [
        ("training step, MLLM alone", f"{1000 * cost.mllm_step_s:.1f} ms", shape),
        (
            "training step, MLLM + scorer + losses",
            f"{1000 * cost.coupled_step_s:.1f} ms",
            f"+{100 * cost.overhead:.0f}% over the MLLM step; scorer + losses alone {1000 * cost.scorer_losses_s:.1f} ms",
        ),
    ]


class _Rows(list):
    """Table rows, each also printed as soon as it is measured."""

    def append(self, row) -> None:
        print("  " + " | ".join(row), file=sys.stderr, flush=True)
        super().append(row)

    def extend(self, rows) -> None:
        for row in rows:
            self.append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-tiny", type=int, default=512, help="images for the tiny CLIP")
    parser.add_argument("--n-large", type=int, default=64, help="images for ViT-L-14")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip a clustering size estimated above this")
    parser.add_argument("--skip-large", action="store_true", help="no ViT-L-14 row")
    parser.add_argument("--parts", default="features,scoring,clustering,training", help="which rows to measure")
    args = parser.parse_args()

    torch.manual_seed(0)
    rows = _Rows()
    parts = set(args.parts.split(","))
    if "features" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            samples = _images(Path(tmp), max(args.n_tiny, args.n_large))
            rate = bench_features(tiny_clip(args.device), samples[: args.n_tiny], args.device, args.batch, args.workers)
            rows.append(
                (
                    "features, tiny CLIP 32 px",
                    f"{rate:,.0f} samples/s",
                    f"{args.n_tiny} JPEGs 256x320, batch {args.batch}",
                )
            )
            if not args.skip_large:
                rate = bench_features(
                    random_clip("ViT-L-14", args.device), samples[: args.n_large], args.device, args.batch, args.workers
                )
                rows.append(
                    (
                        "features, ViT-L-14 224 px",
                        f"{rate:,.2f} samples/s",
                        f"{args.n_large} JPEGs, batch {args.batch}; 665K samples -> {665_298 / rate / 3600:,.1f} h",
                    )
                )
    if "scoring" in parts:
        rate = bench_scoring(args.device)
        rows.append(
            ("scoring, 1539-d scorer", f"{rate:,.0f} samples/s", f"batch 256; 665K samples -> {665_298 / rate:,.1f} s")
        )
    if "clustering" in parts:
        rows.extend(bench_clustering([int(s) for s in args.sizes.split(",")], args.budget_s, args.device))
    if "training" in parts:
        rows.extend(bench_training(args.device))

    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"\nCoIDO benchmark on {device}\n")
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'what':<{w[0]}}  {'result':>{w[1]}}  notes")
    print(f"{'-' * w[0]}  {'-' * w[1]}  {'-' * w[2]}")
    for a, b, c in rows:
        print(f"{a:<{w[0]}}  {b:>{w[1]}}  {c}")


if __name__ == "__main__":
    main()
