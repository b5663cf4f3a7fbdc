"""What each 20% subset of the CoIDO miniature holds (docs/benchmarks.md#coido-miniature).

    .venv/bin/python bench/coido_miniature_subsets.py --threads 1          # seed 0, all questions
    .venv/bin/python bench/coido_miniature_subsets.py --quick

Rebuilds the subsets of ``bench/coido_miniature.py`` for one seed with its own functions and settings
(no model is trained on them) and prints, per subset: how many of the 13 answers it holds and how
evenly (entropy of the answer distribution, in bits; the full set's for reference), the share of its
most common answer, the distinct training images it covers, its mean stage-1 EL2N (how hard the
co-trained model found its samples) and mean CLIP score; the overlap of CoIDO's subset with the others;
and the rank correlation of CoIDO's r with the stage-1 EL2N, the answer's frequency and the CLIP score,
before (r0, the scorer as initialised) and after the co-training: what the scorer learned to predict;
and, watched during the co-training, the two loss terms, their learned weights and their pull on r.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch
from scipy.stats import spearmanr

from coido_miniature import Data, TinyLlava, Vocab, coido_scores, el2n, load, pick, tiny_clip_features


def entropy_bits(answers: list[str]) -> float:
    counts = np.array(list(Counter(answers).values()), np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3,000 questions, 3 epochs (as the bench's --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="as the bench run to compare with (1 for the full run)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = 3 if args.quick else 6
    t0 = time.perf_counter()
    q, a, img, images = load("train", 3000 if args.quick else None)
    tq, _, _, _ = load("test", 1000 if args.quick else None)
    vocab, length = Vocab(q + tq + a), max(len(x.split()) + 1 for x in q + tq)
    data = Data(q, a, img, images, vocab, length)
    feats, clipscore = tiny_clip_features(data, vocab, epochs=2 if args.quick else 4)
    lo, hi = clipscore.min(), clipscore.max()
    scaled = (2 * (clipscore - lo) / max(hi - lo, 1e-12) - 1).astype(np.float32)[:, None]
    with Recorder() as rec:
        r, stage1 = coido_scores(data, feats, scaled, vocab, length, epochs, args.seed, n_clusters=10)
    hardness = el2n(stage1, data)
    rng = np.random.default_rng(args.seed)
    subsets = {
        "all data": np.arange(len(q)),
        "random 20%": pick(rng.random(len(q)), data.sources, 0.2),
        "CoIDO 20%": pick(r, data.sources, 0.2),
        "CLIP-score 20%": pick(-clipscore, data.sources, 0.2),
        "EL2N 20%": pick(-hardness, data.sources, 0.2),
    }
    print(f"{len(q)} questions, seed {args.seed}, {time.perf_counter() - t0:.0f}s\n")
    print(
        "| subset | answers held | answer entropy (bits) | top answer share | images covered | mean stage-1 EL2N | mean CLIP score |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, idx in subsets.items():
        answers = [a[i] for i in idx]
        top = Counter(answers).most_common(1)[0]
        print(
            f"| {name} | {len(set(answers))} | {entropy_bits(answers):.2f} | {top[1] / len(answers):.1%} ({top[0]}) "
            f"| {len(set(img[idx].tolist()))} | {hardness[idx].mean():.3f} | {clipscore[idx].mean():.3f} |"
        )
    chosen = set(subsets["CoIDO 20%"].tolist())
    for name in ("random 20%", "CLIP-score 20%", "EL2N 20%"):
        other = set(subsets[name].tolist())
        print(f"CoIDO 20% vs {name}: Jaccard {len(chosen & other) / len(chosen | other):.3f}")
    freq = Counter(a)
    answer_freq = np.array([freq[x] for x in a], np.float64)
    print(f"\nSpearman(r, stage-1 EL2N) = {spearmanr(r, hardness)[0]:+.3f}")
    print(f"Spearman(r, answer frequency) = {spearmanr(r, answer_freq)[0]:+.3f}")
    for src in sorted(set(data.sources)):
        mask = np.array([s == src for s in data.sources])
        print(f"  within {src}: Spearman(r, EL2N) = {spearmanr(r[mask], hardness[mask])[0]:+.3f}")
    print(f"Spearman(r, CLIP score) = {spearmanr(r, clipscore)[0]:+.3f}")
    r0 = untrained_r(feats, scaled, len(vocab.itos), length, args.seed)
    print(f"the scorer before co-training: Spearman(r0, CLIP score) = {spearmanr(r0, clipscore)[0]:+.3f}, ")
    print(f"  Spearman(r0, r) = {spearmanr(r0, r)[0]:+.3f}")
    print(f"spread of r over all samples: std {r.std():.4g} (before co-training {r0.std():.4g})")
    rec.summary()
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


class Recorder:
    """Watches the co-training's loss calls (``frugalvl.select.losses.coido_losses``, which
    ``coido_scores`` imports when it runs) without changing them: the last step's s1 and s2, the last
    epoch's mean L_I and L_D, and how hard each term pulls on the scorer output r (the norm of its
    gradient with respect to r, every 5th step; ``autograd.grad`` leaves the ``.grad`` fields alone)."""

    def __enter__(self):
        from frugalvl.select import losses

        self.module, self.real, self.rows = losses, losses.coido_losses, []

        def watched(r, logits, labels, clusters, variant="coido", s1=None, s2=None, lam=None):
            out = self.real(r, logits, labels, clusters, variant, s1, s2, lam)
            row = {"s1": float(s1), "s2": float(s2), "li": float(out.importance), "ld": float(out.diversity)}
            if len(self.rows) % 5 == 0:
                pull_i = torch.autograd.grad(out.importance * torch.exp(-2 * s1), r, retain_graph=True)[0]
                pull_d = torch.autograd.grad(out.diversity * torch.exp(-2 * s2) / 2, r, retain_graph=True)[0]
                row |= {"gi": float(pull_i.norm()), "gd": float(pull_d.norm())}
            self.rows.append(row)
            return out

        losses.coido_losses = watched
        return self

    def __exit__(self, *exc):
        self.module.coido_losses = self.real

    def summary(self) -> None:
        last = self.rows[-max(1, len(self.rows) // 6) :]  # about the last epoch
        s1, s2 = self.rows[-1]["s1"], self.rows[-1]["s2"]
        li, ld = np.mean([x["li"] for x in last]), np.mean([x["ld"] for x in last])
        print(f"co-training: {len(self.rows)} steps; last epoch mean L_I {li:.4g}, L_D {ld:.4g}")
        print(
            f"  final s1 {s1:+.3f}, s2 {s2:+.3f}: L_I weighted by {np.exp(-2 * s1):.4g}, L_D by {np.exp(-2 * s2) / 2:.4g}"
        )
        for part in (self.rows[: len(self.rows) // 6], last):
            gi = np.mean([x["gi"] for x in part if "gi" in x])
            gd = np.mean([x["gd"] for x in part if "gd" in x])
            print(
                f"  |d(L_I term)/dr| {gi:.4g} vs |d(L_D term)/dr| {gd:.4g} ({'first' if part is not last else 'last'} epoch)"
            )


@torch.no_grad()
def untrained_r(feats, scaled, vocab_size, length, seed) -> np.ndarray:
    """r of the scorer as ``coido_scores`` initialises it (same seed, same construction order)."""
    from frugalvl.select.scorer import Scorer

    torch.manual_seed(seed)
    TinyLlava(vocab_size, length)  # drawn first in coido_scores
    scorer = Scorer(feats.shape[1], ["clipscore"]).eval()
    x = torch.from_numpy(np.concatenate([feats, scaled], 1))
    return torch.cat([scorer(x[lo : lo + 4096]).reshape(-1) for lo in range(0, len(x), 4096)]).numpy()


if __name__ == "__main__":
    main()
