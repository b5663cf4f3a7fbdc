"""CoIDO's per-sample stages at LLaVA-665K scale on one machine: time, peak RSS, work-folder size.

Rows (each stage in a fresh process, so peak RSS is its own):

* ``prepare`` + ``features``: N synthetic LLaVA records whose images are the real easy-vqa PNGs (4,000
  64×64 images, repeated), decoded and embedded by a tiny random CLIP (32 px; the decoding, batching,
  sharding and assembly are the real code path, the model is small so the row measures the pipeline);
* ``score``: a random scorer over N × (1536 + 3) synthetic features (the real 1539-d scorer network);
* the clustering of the 20% subset S has its own bench (``bench/coido_scale.py``).

    timeout 3600 .venv/bin/python bench/coido_665k.py --n 665000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _size_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9


def stage_features(work: Path, n: int, threads: int) -> dict:
    import easy_vqa
    import torch

    from frugalvl.select import FeatureSettings, PrepareSettings, pipeline
    from frugalvl.testing.clip import write_tiny_openai_clip

    torch.set_num_threads(threads)
    found = easy_vqa.get_train_image_paths()  # {image id: path}
    paths = list(found.values()) if isinstance(found, dict) else list(found)
    root = Path(paths[0]).parents[2]
    images = [str(Path(p).relative_to(root)) for p in paths]
    records = [
        {
            "id": f"s{i}",
            "image": images[i % len(images)],
            "conversations": [
                {"from": "human", "value": "<image>\nWhat shape is in the image?"},
                {"from": "gpt", "value": "A circle."},
            ],
        }
        for i in range(n)
    ]
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.json"
    data.write_text(json.dumps(records))
    del records
    clip = write_tiny_openai_clip(work.parent / "tiny-clip.pt", image_size=32, patch_size=8, width=64)
    t0 = time.perf_counter()
    pipeline.prepare(data, work, PrepareSettings(image_root=str(root), verify_images=False))
    t1 = time.perf_counter()
    settings = FeatureSettings(clip=str(clip), workers=1, shard_size=10000, batch_size=512, progress=False)
    pipeline.features(work, settings)
    t2 = time.perf_counter()
    return {"prepare_s": t1 - t0, "features_s": t2 - t1}


def stage_score(work: Path, n: int, threads: int) -> dict:
    import numpy as np
    import torch

    from frugalvl.select import pipeline
    from frugalvl.select.scorer import Scorer, save_scorer
    from frugalvl.testing.coido_scale import write_synthetic_work

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((n, 1536), dtype=np.float32)
    sources = np.array(["coco", "gqa", "ocr_vqa", "textvqa", "vg"])[rng.integers(0, 5, n)]
    write_synthetic_work(work, clip, sources)
    del clip
    (work / "features" / "meta.json").write_text(json.dumps({"stage": "features", "settings": {}, "upstream": {}}))
    (work / "train").mkdir(exist_ok=True)
    torch.manual_seed(0)
    save_scorer(work / "train" / "scorer.pt", Scorer(1536, ("clipscore", "imagereward", "text_quality")))
    import gc

    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    r = pipeline.score(work, batch_size=256, device="cpu")
    return {"score_s": time.perf_counter() - t0, "rss_before_score_gb": before, "n_scored": int(len(r))}


def child(stage: str, work: str, n: int, threads: int) -> None:
    out = {"features": stage_features, "score": stage_score}[stage](Path(work), n, threads)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out["work_gb"] = _size_gb(Path(work))
    print(json.dumps(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=665000)
    parser.add_argument("--stages", nargs="+", default=["features", "score"], choices=["features", "score"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.n, args.threads)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for stage in args.stages:
            work = Path(tmp) / stage / "work"
            cmd = [
                sys.executable,
                __file__,
                "--n",
                str(args.n),
                "--threads",
                str(args.threads),
                "--child",
                stage,
                str(work),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            rows.append((stage, json.loads(done.stdout.strip().splitlines()[-1])))
            print(f"  done {stage}", file=sys.stderr, flush=True)
    print(f"\nCoIDO per-sample stages, N = {args.n:,}, {args.threads} threads")
    print(f"{'stage':<10} {'seconds':>9} {'samples/s':>10} {'peak RSS GB':>12} {'work GB':>8}")
    for stage, r in rows:
        secs = r.get("features_s", r.get("score_s"))
        extra = f"   (prepare {r['prepare_s']:.0f} s)" if "prepare_s" in r else ""
        print(f"{stage:<10} {secs:>9.1f} {args.n / secs:>10.0f} {r['peak_rss_gb']:>12.2f} {r['work_gb']:>8.2f}{extra}")
    print("RSS of the score stage includes building the synthetic N×1539 features before the stage runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
