"""Synthetic CoIDO features with cluster structure, for the scale benchmark and the baseline tests."""

from __future__ import annotations

import numpy as np


def clustered_features(
    n: int, dim: int = 1536, k: int = 20, seed: int = 0, noise: float = 1.0, chunk: int = 16384
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``clip`` [n, dim] float32, ``scores`` [n, 3] in [−1, 1], ``truth`` [n]: k Gaussian clusters of unequal
    size (Dirichlet shares) around random centres that share a 32-d subspace (so clusters overlap in part),
    generated in chunks so the float64 temporaries stay small."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(32, dim)).astype(np.float32)
    centres = rng.normal(size=(k, 32)).astype(np.float32) @ basis / np.sqrt(32)
    centres += rng.normal(size=(k, dim)).astype(np.float32) * 0.7
    truth = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 3.0)))
    clip = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        clip[lo:hi] = centres[truth[lo:hi]] + rng.standard_normal((hi - lo, dim), dtype=np.float32) * noise
    scores = np.clip(rng.normal(size=(n, 3)) * 0.4 + (truth[:, None] % 3 - 1) * 0.3, -1, 1).astype(np.float32)
    return clip, scores, truth.astype(np.int64)


QUESTIONS = (
    "what colour is the shape ?",
    "what shape is in the image ?",
    "is there a red shape ?",
    "how many shapes are there ?",
)
ANSWERS = ("red", "circle", "yes", "two", "blue", "triangle", "no", "three", "green", "rectangle")


def write_synthetic_work(
    folder,
    clip: np.ndarray,
    sources,
    scores: np.ndarray | None = None,
    score_names=("clipscore", "imagereward", "text_quality"),
    text_only=None,
    images: bool = False,
    seed: int = 0,
):
    """A select work folder (prepare + features stages, docs/coido_contract.md) around given features:
    ``WORK/data.json`` (the input), ``prepare/{samples,report}.json``, ``features/{clip.npy,image_ok.npy,
    scores.json,meta.json}``. ``text_only`` marks samples without an image; ``images`` writes a 32-px PNG per
    image sample (for reference-model tests). Returns the folder."""
    import json
    from pathlib import Path

    from PIL import Image

    from frugalvl.identity import file_digest

    folder = Path(folder)
    n = len(clip)
    rng = np.random.default_rng(seed)
    text_only = np.zeros(n, bool) if text_only is None else np.asarray(text_only, bool)
    (folder / "prepare").mkdir(parents=True, exist_ok=True)
    (folder / "features").mkdir(parents=True, exist_ok=True)
    records, samples = [], []
    for i in range(n):
        q, a = QUESTIONS[rng.integers(len(QUESTIONS))], ANSWERS[rng.integers(len(ANSWERS))]
        image = None if text_only[i] else f"{sources[i]}/{i:05d}.png"
        conv = [{"from": "human", "value": (q if image is None else "<image>\n" + q)}, {"from": "gpt", "value": a}]
        rec = {
            "id": f"s{i:05d}",
            **({"image": image} if image else {}),
            "conversations": conv,
            "dataset": str(sources[i]),
        }
        path = None
        if image and images:
            path = folder / "images" / image
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        records.append(rec)
        samples.append(
            {
                "unique_idx": i,
                "id": rec["id"],
                "dataset": str(sources[i]),
                "image": image,
                "image_path": None if path is None else str(path),
                "status": "text" if image is None else "ok",
                "conversations": conv,
            }
        )
    data = folder / "data.json"
    data.write_text(json.dumps(records))
    (folder / "prepare" / "samples.json").write_text(json.dumps(samples))
    (folder / "prepare" / "report.json").write_text(json.dumps({"input": str(data), "input_sha256": file_digest(data)}))
    np.save(folder / "features" / "clip.npy", np.asarray(clip, np.float32))
    np.save(folder / "features" / "image_ok.npy", ~text_only)
    scores = rng.uniform(-1, 1, size=(n, len(score_names))) if scores is None else np.asarray(scores)
    names = list(score_names)[: scores.shape[1]]
    (folder / "features" / "scores.json").write_text(
        json.dumps(
            {
                "names": names,
                "raw": {k: scores[:, j].tolist() for j, k in enumerate(names)},
                "scaled": {k: scores[:, j].tolist() for j, k in enumerate(names)},
            }
        )
    )
    (folder / "features" / "meta.json").write_text(json.dumps({"stage": "features", "settings": {}, "upstream": {}}))
    return folder
