"""A miniature of CoIDO's claim on easy-VQA, on the CPU (docs/benchmarks.md#coido-miniature).

    .venv/bin/python bench/coido_miniature.py            # 3 seeds, all 38,575 training questions
    .venv/bin/python bench/coido_miniature.py --quick    # 1 seed, 3,000 questions, < 10 minutes

A tiny LLaVA-shaped model is trained from scratch on the images downsampled to 32 px: a small CNN vision
tower (trained, not frozen: there is no pretrained one), an MLP projector to 16 image tokens, and a 2-layer causal transformer LM over a
word vocabulary; the answer is the token after the question. Test accuracy (9,673 questions; --quick:
1,000) is measured after training on: all data; random 20%; CoIDO 20%; CLIP-score 20%; EL2N 20%.

Budget rule: every run sees each sample of its training set the same number of times (``--epochs``),
so a 20% subset gets a fifth of the optimiser steps of the full run (the paper's setting).

* features: a tiny CLIP (CNN image tower + bag-of-words text tower) trained contrastively on the
  training pairs (once, seed 0); a sample's feature is [image ‖ text] embedding, its CLIP score the cosine;
* CoIDO: S = a random 20% (seeded), spectral clusters of S (frugalvl's clustering), the scorer
  (``frugalvl.select.scorer.Scorer``) co-trained with a fresh tiny MLLM on S with the paper's losses
  (``frugalvl.select.losses.coido_losses``: L_I with softmax weights, L_D, uncertainty weighting),
  then r for every sample and the lowest r kept under per-source quotas (question types);
* EL2N: ‖softmax − onehot‖ at the answer by the MLLM co-trained on S (the stage-1 model, as the
  baseline's default reference), the highest kept under quotas; CLIP score: the highest kept.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMG_TOKENS, D = 16, 64


def load(split: str, limit: int | None, seed: int = 0):
    import easy_vqa
    from PIL import Image

    q, a, img = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    keep = np.arange(len(q))
    if limit and limit < len(q):
        keep = np.sort(np.random.default_rng(seed).choice(len(q), limit, replace=False))
    paths = [paths[k] for k in range(len(paths))]  # a dict image id -> path
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR)) for p in paths])
    return [q[i] for i in keep], [a[i] for i in keep], np.asarray([img[i] for i in keep]), images


def source(answer: str) -> str:
    from frugalvl.testing.easyvqa import question_type

    return question_type(answer)


class Vocab:
    def __init__(self, texts):
        words = sorted({w for t in texts for w in t.lower().replace("?", " ?").split()})
        self.itos = ["<pad>", "<bos>", "<sep>", *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def encode(self, questions, length):
        out = np.zeros((len(questions), length), np.int64)
        for i, q in enumerate(questions):
            ids = [self.stoi[w] for w in q.lower().replace("?", " ?").split()][:length]
            out[i, : len(ids)] = ids
        return out


def tower() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 4, 2, 1), nn.GELU(), nn.Conv2d(16, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, D, 2, 2)
    )  # 32 px -> 4x4 = 16 patch tokens


class TinyLlava(nn.Module):
    def __init__(self, vocab: int, length: int):
        super().__init__()
        self.vision, self.projector = tower(), nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))
        self.embed, self.pos = nn.Embedding(vocab, D), nn.Parameter(torch.zeros(1, IMG_TOKENS + length + 2, D))
        layer = nn.TransformerEncoderLayer(D, 4, 4 * D, 0.0, batch_first=True, norm_first=True)
        self.lm = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(D, vocab)

    def forward(self, pixels, text):  # text [B, L+2]: <bos> question <sep>
        img = self.projector(self.vision(pixels).flatten(2).transpose(1, 2))
        x = torch.cat([img, self.embed(text)], 1) + self.pos
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.head(self.lm(x, mask=mask, is_causal=True))  # [B, T, V]


class Data:
    def __init__(self, questions, answers, img_idx, images, vocab, length):
        self.pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)[torch.from_numpy(img_idx)]
        q = vocab.encode(questions, length)
        n = len(questions)
        self.text = torch.from_numpy(np.concatenate([np.full((n, 1), 1), q, np.full((n, 1), 2)], 1))
        self.answer = torch.tensor([vocab.stoi[a] for a in answers])
        self.sources = [source(a) for a in answers]

    def logits_at_answer(self, model, idx):
        return model(self.pixels[idx], self.text[idx])[:, -1]  # the <sep> position predicts the answer

    def labels(self, idx, length):  # token labels for the CoIDO losses: the answer after <sep>
        lab = torch.full((len(idx), IMG_TOKENS + length + 3), -100)
        lab[:, -1] = self.answer[idx]
        return lab


def train(data, idx, vocab, length, epochs, seed, batch=64, lr=2e-3):
    """A fresh tiny MLLM trained on samples ``idx`` for ``epochs`` passes (plain CE at the answer)."""
    torch.manual_seed(seed)
    model = TinyLlava(len(vocab.itos), length)
    opt = torch.optim.AdamW(model.parameters(), lr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(idx)
        for lo in range(0, len(order), batch):
            part = torch.from_numpy(order[lo : lo + batch])
            loss = F.cross_entropy(data.logits_at_answer(model, part), data.answer[part])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, data, batch=512) -> float:
    hits = 0
    for lo in range(0, len(data.answer), batch):
        part = torch.arange(lo, min(lo + batch, len(data.answer)))
        hits += int((data.logits_at_answer(model, part).argmax(-1) == data.answer[part]).sum())
    return hits / len(data.answer)


# ---------------------------------------------------------------- features: a tiny CLIP


def tiny_clip_features(data, vocab, epochs, batch=128):
    """[image ‖ text] unit embeddings and the CLIP score (cosine) per sample, from a CLIP trained here."""
    torch.manual_seed(0)
    image_tower = nn.Sequential(tower(), nn.Flatten(), nn.Linear(D * IMG_TOKENS, D))
    words = nn.EmbeddingBag(len(vocab.itos), D, mode="mean", padding_idx=0)
    text_proj = nn.Linear(D, D)
    scale = nn.Parameter(torch.tensor(2.0))
    params = [*image_tower.parameters(), *words.parameters(), *text_proj.parameters(), scale]
    opt = torch.optim.AdamW(params, 2e-3)
    tokens = torch.cat([data.text, data.answer[:, None]], 1)  # question and answer words

    def embed(idx):
        i = F.normalize(image_tower(data.pixels[idx]), dim=-1)
        t = F.normalize(text_proj(words(tokens[idx])), dim=-1)
        return i, t

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(tokens))
        for lo in range(0, len(order), batch):
            i, t = embed(torch.from_numpy(order[lo : lo + batch]))
            logits = i @ t.T * scale.exp()
            target = torch.arange(len(i))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        parts = [embed(torch.arange(lo, min(lo + 1024, len(tokens)))) for lo in range(0, len(tokens), 1024)]
    image, text = torch.cat([p[0] for p in parts]).numpy(), torch.cat([p[1] for p in parts]).numpy()
    return np.concatenate([image, text], 1).astype(np.float32), (image * text).sum(1)


# ---------------------------------------------------------------- CoIDO


def coido_scores(data, feats, scaled, vocab, length, epochs, seed, n_clusters, batch=64):
    """r for every sample: the scorer co-trained with a fresh tiny MLLM on a random 20% S (paper losses).
    Returns r and the co-trained MLLM (the stage-1 model)."""
    from frugalvl.select.clustering import subset_and_clusters
    from frugalvl.select.losses import coido_losses
    from frugalvl.select.scorer import Scorer
    from frugalvl.select.settings import ClusterSettings

    usable = np.ones(len(feats), bool)
    cs = ClusterSettings(ratio=0.2, seed=seed, n_clusters=n_clusters, knn=15)
    out = subset_and_clusters(feats, scaled, usable, cs)
    subset, labels = out["indices"], torch.from_numpy(out["labels"])
    torch.manual_seed(seed)
    model, scorer = TinyLlava(len(vocab.itos), length), Scorer(feats.shape[1], ["clipscore"])
    s1, s2 = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
    opt = torch.optim.AdamW([*model.parameters(), *scorer.parameters(), s1, s2], 2e-3)
    x_all = torch.from_numpy(np.concatenate([feats, scaled], 1))
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(subset))
        for lo in range(0, len(order), batch):
            pos = order[lo : lo + batch]
            idx = torch.from_numpy(subset[pos])
            logits = model(data.pixels[idx], data.text[idx])
            logits = torch.cat([logits, logits[:, -1:]], 1)  # one more slot: the label sits after <sep>
            losses = coido_losses(scorer(x_all[idx]), logits, data.labels(idx, length), labels[pos], "coido", s1, s2)
            opt.zero_grad()
            losses.total.backward()
            opt.step()
    scorer.eval()
    with torch.no_grad():
        r = torch.cat([scorer(x_all[lo : lo + 4096]).reshape(-1) for lo in range(0, len(x_all), 4096)]).numpy()
    return r, model.eval()


@torch.no_grad()
def el2n(model, data, batch=1024) -> np.ndarray:
    out = []
    for lo in range(0, len(data.answer), batch):
        part = torch.arange(lo, min(lo + batch, len(data.answer)))
        p = torch.softmax(data.logits_at_answer(model, part), -1)
        out.append((p - F.one_hot(data.answer[part], p.shape[-1])).norm(dim=-1))
    return torch.cat(out).numpy()


def pick(key_low_first: np.ndarray, sources, ratio: float) -> np.ndarray:
    from frugalvl.select.ranking import select

    k = int(ratio * len(key_low_first))
    return select(key_low_first, sources, np.ones(len(key_low_first), bool), k, "quota")[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 3,000 questions, 1,000 test questions")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="passes over each training set (same for all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = args.seeds or (1 if args.quick else 3)
    epochs = args.epochs or (3 if args.quick else 6)
    t0 = time.perf_counter()
    q, a, img, images = load("train", 3000 if args.quick else None)
    tq, ta, timg, timages = load("test", 1000 if args.quick else None)
    vocab, length = Vocab(q + tq + a), max(len(x.split()) + 1 for x in q + tq)
    data, test = Data(q, a, img, images, vocab, length), Data(tq, ta, timg, timages, vocab, length)
    feats, clipscore = tiny_clip_features(data, vocab, epochs=2 if args.quick else 4)
    lo, hi = clipscore.min(), clipscore.max()
    scaled = (2 * (clipscore - lo) / max(hi - lo, 1e-12) - 1).astype(np.float32)[:, None]
    print(f"{len(q)} training / {len(tq)} test questions; tiny CLIP ready in {time.perf_counter() - t0:.0f}s")
    results: dict[str, list[float]] = {}
    for seed in range(seeds):
        r, stage1 = coido_scores(data, feats, scaled, vocab, length, epochs, seed, n_clusters=10)
        rng = np.random.default_rng(seed)
        subsets = {
            "all data": np.arange(len(q)),
            "random 20%": pick(rng.random(len(q)), data.sources, 0.2),
            "CoIDO 20%": pick(r, data.sources, 0.2),
            "CLIP-score 20%": pick(-clipscore, data.sources, 0.2),
            "EL2N 20%": pick(-el2n(stage1, data), data.sources, 0.2),
        }
        for name, idx in subsets.items():
            acc = accuracy(train(data, np.asarray(idx), vocab, length, epochs, seed), test)
            results.setdefault(name, []).append(acc)
            print(f"seed {seed} {name:<15} n={len(idx):>6} acc={100 * acc:.2f}%  ({time.perf_counter() - t0:.0f}s)")
    full = np.mean(results["all data"])
    print(f"\n| training set | test accuracy (mean ± std, {seeds} seeds) | % of full |\n|---|---|---|")
    for name, accs in results.items():
        m, s = 100 * np.mean(accs), 100 * np.std(accs)
        print(f"| {name} | {m:.2f} ± {s:.2f} | {100 * np.mean(accs) / full:.1f} |")
    print(f"\nepochs per training set {epochs}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
