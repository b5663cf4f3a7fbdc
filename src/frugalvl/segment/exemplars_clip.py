"""Visual prototypes for SegEarth-OV: exemplars as extra CLIP queries (docs/methods/exemplars.md#segearth-ov).

Each positive exemplar gives one prototype: the mean, over the exemplar's pixels, of the dense features the
class scores are computed from (L2-normalised per window after the changed last block and the
upsampler, averaged over overlapping windows and resized to the image, exactly as the logits are), then
L2-normalised as the text queries are. A prototype is one more query of its class, so the class keeps
the max over its queries (the synonym rule): text and examples combine without a new weight. A negative
exemplar's prototype is a query of the background class (``bg_idx``).

The mean is computed without ever holding an image-sized feature map: the logits are linear in the
features, so the mean of the pixel features over a mask equals a weighted sum of each window's
low-resolution features, the weights being the mask pulled back through the resize and the window
average (the adjoint of those linear maps, obtained with autograd).

Prototypes are saved (:meth:`Prototypes.save`, a ``.npz``) with the model's identity and are refused by
a segmenter on another CLIP or upsampler.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..fileio import atomic_path
from ..vocab import Vocabulary
from ..windows import plan_windows
from .exemplars import Exemplars

FORMAT = "frugalvl-prototypes-1"


@dataclass(frozen=True)
class Prototypes:
    """Prototype queries ``vectors`` [P, D] (unit rows), each with its class name and sign."""

    vectors: np.ndarray
    names: tuple[str, ...]
    positive: tuple[bool, ...]
    example_only: tuple[str, ...]  # classes with no text query
    model: dict  # the identity of the CLIP and upsampler that made them
    source: dict  # where they came from (exemplar files, or a prototype file)

    def __len__(self) -> int:
        return len(self.names)

    def identity(self) -> dict:
        digest = hashlib.sha256(np.ascontiguousarray(self.vectors, dtype=np.float32).tobytes())
        return {
            "source": self.source,
            "names": list(self.names),
            "positive": list(self.positive),
            "vectors": digest.hexdigest()[:16],
        }

    def extend(self, vocabulary: Vocabulary) -> tuple[Vocabulary, tuple[int, ...]]:
        """The vocabulary with the example-only classes appended, and the indices of all example-only classes."""
        lower = {n.lower(): i for i, n in enumerate(vocabulary.names)}
        new = [n for n in self.example_only if n.lower() not in lower]
        extended = Vocabulary((*vocabulary.classes, *((n,) for n in new))) if new else vocabulary
        lower = {n.lower(): i for i, n in enumerate(extended.names)}
        return extended, tuple(sorted(lower[n.lower()] for n in self.example_only))

    def query_classes(self, vocabulary: Vocabulary, bg_idx: int) -> list[int]:
        """The class of each prototype in ``vocabulary``: its own, or ``bg_idx`` for a negative one."""
        lower = {n.lower(): i for i, n in enumerate(vocabulary.names)}
        return [lower[n.lower()] if pos else bg_idx for n, pos in zip(self.names, self.positive)]

    def text_queries(self, vocabulary: Vocabulary) -> list[str]:
        """The vocabulary's text queries that a segmenter with these prototypes uses (no example-only class)."""
        skip = set(self.extend(vocabulary)[1])
        return [q for q, c in zip(vocabulary.queries, vocabulary.query_to_class) if c not in skip]

    def check_model(self, model: dict) -> None:
        if model != self.model:
            raise UserError(
                f"the prototypes of {self.source.get('file', 'this run')} were made by another model "
                f"({self.model}) than this segmenter's ({model}): compute them again from the exemplars"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """A ``.npz`` with the vectors and a JSON header (classes, signs, model, source)."""
        path = Path(path)
        header = {
            "format": FORMAT,
            "names": list(self.names),
            "positive": list(self.positive),
            "example_only": list(self.example_only),
            "model": self.model,
            "source": self.source,
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, vectors=self.vectors.astype(np.float32), header=np.array(json.dumps(header)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Prototypes:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                vectors = np.array(data["vectors"], dtype=np.float32)
        except (OSError, ValueError, KeyError):
            raise UserError(f"{path} is not a prototype file: save one from a run with exemplars") from None
        if header.get("format") != FORMAT:
            raise UserError(f"{path} is not a prototype file of this version ({FORMAT}): compute it again")
        from ..identity import path_identity

        source = {"prototypes": str(path), "fingerprint": path_identity(Path(path)), "made_from": header["source"]}
        return cls(
            vectors,
            tuple(header["names"]),
            tuple(bool(p) for p in header["positive"]),
            tuple(header["example_only"]),
            header["model"],
            source,
        )

    @classmethod
    def concat(cls, parts: list[Prototypes]) -> Prototypes:
        first = parts[0]
        for p in parts[1:]:
            p.check_model(first.model)
        return cls(
            np.concatenate([p.vectors for p in parts]),
            tuple(n for p in parts for n in p.names),
            tuple(s for p in parts for s in p.positive),
            tuple(dict.fromkeys(n for p in parts for n in p.example_only)),
            first.model,
            {"parts": [p.source for p in parts]} if len(parts) > 1 else first.source,
        )


def model_identity(segmenter: Any) -> dict:
    """What the prototypes' features depend on: the CLIP, the upsampler and the feature settings."""
    ident = segmenter.identity()
    s = segmenter.settings
    return {
        "clip": ident["clip"],
        "upsampler": ident["upsampler"],
        "attention": s.attention,
        "residual": s.residual,
        "long_side": s.long_side,
        "slide_crop": s.slide_crop,
        "slide_stride": s.slide_stride,
    }


def _adjoint(op, weights: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``opᵀ weights`` for a linear ``op`` taking tensors of ``shape`` (autograd's vector-Jacobian product)."""
    with torch.enable_grad():
        z = torch.zeros(shape, dtype=weights.dtype, device=weights.device, requires_grad=True)
        (grad,) = torch.autograd.grad(op(z), z, grad_outputs=weights)
    return grad


@torch.no_grad()
def region_means(segmenter: Any, rgb: np.ndarray, masks: torch.Tensor) -> torch.Tensor:
    """``[M, D]``: the mean over each of ``masks`` ``[M, H, W]`` (bool, image size) of the pixel features
    the logits are computed from (module docstring), float32 on the CPU."""
    s = segmenter.settings
    device, dtype = segmenter.clip.device, segmenter.clip.dtype
    image = segmenter.preprocess(rgb).to(device=device, dtype=dtype)
    _, _, h, w = image.shape
    height, width = rgb.shape[:2]
    weights = masks.float().to(device)
    weights = weights / weights.flatten(1).sum(1).clamp(min=1)[:, None, None]
    # Pull the image-size mean back through the final bilinear resize, then through the window average.
    pulled = _adjoint(
        lambda z: F.interpolate(z, size=(height, width), mode="bilinear", align_corners=False),
        weights[:, None],
        (len(masks), 1, h, w),
    )[:, 0]
    windows = plan_windows(h, w, s.slide_crop, s.slide_stride)
    count = torch.zeros(h, w, device=device)
    for win in windows:
        count[win.y0 : win.y1, win.x0 : win.x1] += 1
    pulled = pulled / count
    out = torch.zeros(len(masks), segmenter.clip.embed_dim, device=device)
    for win in windows:
        crop, _ = segmenter.pad_crops(image[:, :, win.y0 : win.y1, win.x0 : win.x1])
        feats = segmenter.window_features(crop)[0].float()  # [D, fh, fw]
        ph, pw = crop.shape[-2:]
        top, left = (ph - win.height) // 2, (pw - win.width) // 2
        local = torch.zeros(len(masks), ph, pw, device=device)
        local[:, top : top + win.height, left : left + win.width] = pulled[:, win.y0 : win.y1, win.x0 : win.x1]
        if feats.shape[-2:] != (ph, pw):  # no upsampler: the logits are resized bilinearly from the patch grid
            local = _adjoint(
                lambda z, size=(ph, pw): F.interpolate(z, size=size, mode="bilinear", align_corners=False),
                local[:, None],
                (len(masks), 1, *feats.shape[-2:]),
            )[:, 0]
        out += torch.einsum("mhw,dhw->md", local, feats)
    return out.cpu()


def compute_prototypes(segmenter: Any, exemplars: Exemplars, rgb: np.ndarray) -> Prototypes:
    """One prototype per exemplar of ``rgb`` (its pixel frame): region means, L2-normalised."""
    if rgb.shape[:2] != (exemplars.height, exemplars.width):
        raise ValueError(f"exemplars are for a {exemplars.height}×{exemplars.width} image, got {rgb.shape[:2]}")
    masks = torch.from_numpy(np.stack([e.mask(*rgb.shape[:2]) for e in exemplars.items]))
    means = region_means(segmenter, rgb, masks)
    vectors = (means / means.norm(dim=1, keepdim=True).clamp(min=1e-12)).numpy()
    extended, example_only = exemplars.extend(segmenter.vocabulary)
    only = tuple(extended.names[i] for i in example_only)
    return Prototypes(
        vectors,
        tuple(e.name for e in exemplars.items),
        tuple(e.positive for e in exemplars.items),
        only,
        model_identity(segmenter),
        exemplars.identity(),
    )


def add_prototype_queries(
    text: torch.Tensor, vocabulary: Vocabulary, prototypes: Prototypes, bg_idx: int
) -> tuple[torch.Tensor, list[int]]:
    """The queries of a segmenter with prototypes: ``text`` ``[Q, D]`` (one row per vocabulary query) less
    the rows of example-only classes, plus one row per prototype, all ordered by class (the order changes
    no score: the softmax and the synonym max do not depend on it); and the class of each row."""
    skip = set(prototypes.extend(vocabulary)[1])
    keep = [i for i, c in enumerate(vocabulary.query_to_class) if c not in skip]
    vectors, classes = torch.from_numpy(prototypes.vectors), prototypes.query_classes(vocabulary, bg_idx)
    if vectors.shape[1] != text.shape[1]:
        raise UserError(f"the prototypes are {vectors.shape[1]}-d but this CLIP gives {text.shape[1]}-d features")
    features = torch.cat([text[keep], vectors.to(text)])
    owners = [vocabulary.query_to_class[i] for i in keep] + classes
    order = sorted(range(len(owners)), key=lambda i: owners[i])
    return features[order], [owners[i] for i in order]
