"""SimFeatUp training: learn a JBU upsampler for any ViT CLIP from unlabeled images.

Read next to ``spec/segearth_ov.md`` §2.5 (the official recipe, likyoo/SimFeatUp). A training step:

1. a batch of random 224 crops, normalised (ImageNet statistics, as the official training);
2. frozen CLIP patch features ``lr`` of the crops (:class:`ClipFeaturizer`; officially the last
   ViT block is skipped);
3. for each of 5 jitters (reflect-pad 20, zoom in [1, 2] with p 0.5, crop back, h-flip with p 0.5):

   * ``hr = upsampler(lr, image)``, then the same jitter applied to ``hr`` and to the image;
   * ``lr_jit``: CLIP features of the jittered image, the target;
   * ``down``: :class:`AttentionDownsampler` of the jittered ``hr`` back to the patch grid;
   * both through one random Gaussian projection ``D → 30`` per image (columns unit-norm);
   * ``L_rec``: Gaussian likelihood with a predicted scale (:class:`ScaleNet` on ``lr_jit``);
   * ``L_img``: a small decoder (:class:`ImageReconstructor`, the "CRN") must rebuild the
     jittered image from the jittered ``hr``, weighted by γ = 0.1;
   * backward of ``(L_rec + γ·L_img) / n_jitters`` (gradients accumulate over the jitters);

4. gradient norm clipped to 1e-4 for the first 10 steps, then one NAdam step (lr 1e-3) over the
   upsampler, downsampler, scale net and decoder.

Resumable checkpoints (every 100 steps) hold everything a run needs to continue bit for bit: the
four modules, the optimiser, the step, every random state and the position in the image stream.
Their ``state_dict`` is laid out as the official Lightning files (``upsampler.*`` etc.), so
``frugalvl segment --upsampler`` reads any of them, as it reads the final file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..fileio import atomic_path
from ..models.clip import ClipModel
from ..raster import IMAGE_SUFFIXES, read_image
from ..segment.attention import MODES
from ..segment.dense_clip import dense_tokens
from ..models.jbu import JBUOne, JBUStack, save_upsampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAST_BLOCKS = ("skip",) + MODES
UPSAMPLERS = {"jbu_one": JBUOne, "jbu_stack": JBUStack}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class UpsamplerTrainSettings:
    """SimFeatUp training settings; the defaults are the official ones (spec §2.5, upsampler_aid.yaml)."""

    steps: int | None = None          # None: one pass over the images (the official 1 epoch)
    batch_size: int = 4               # official: 4 per GPU
    lr: float = 1e-3                  # NAdam
    crop_size: int = 224              # RandomCrop, reflect-padded when the image is smaller
    n_jitters: int = 5
    jitter_pad: int = 20              # reflect padding before zoom and crop
    max_zoom: float = 2.0
    zoom_prob: float = 0.5
    flip_prob: float = 0.5
    projection_dim: int | None = 30   # random Gaussian projection D→30; None compares all D channels
    img_weight: float = 0.1           # γ, the weight of L_img (rec_img_weight)
    early_clip_steps: int = 10        # clip the gradient norm for this many first steps...
    early_clip_norm: float = 1e-4     # ...to this
    upsampler: str = "jbu_one"        # or "jbu_stack" (FeatUp's four-stage layout)
    radius: int | None = None         # JBU kernel radius; None: the upsampler's own (5 for JBU-One)
    last_block: str = "skip"          # "skip" as the official featurizer, or an attention mode
    normalisation: str = "imagenet"   # official training; "clip" matches what inference feeds
    checkpoint_every: int = 100
    keep_checkpoints: int = 3         # resumable checkpoints kept; 0 keeps all
    precision: str = "auto"           # autocast: bf16 (else fp16) on CUDA, fp32 on CPU
    seed: int = 0
    workers: int = 2                  # threads decoding images ahead of the training step


# Settings that may change between a run and its resumption without changing what is learnt.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "workers", "precision"}


def check_settings(s: UpsamplerTrainSettings, patch_size: int | None = None) -> None:
    """Raise a one-line :class:`UserError` for settings that cannot train (crop checks need the patch size)."""
    positive = {"--batch-size": s.batch_size, "--jitters": s.n_jitters, "--crop-size": s.crop_size,
                "--checkpoint-every": s.checkpoint_every}
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} {value}: give a positive number")
    if s.steps is not None and s.steps < 1:
        raise UserError(f"--steps {s.steps}: give a positive number of steps")
    if not s.lr > 0 or s.img_weight < 0:
        raise UserError(f"--lr {s.lr} / --img-weight {s.img_weight}: the learning rate must be > 0 and the weight ≥ 0")
    if s.max_zoom < 1 or s.jitter_pad < 0:
        raise UserError(f"max zoom {s.max_zoom} / jitter pad {s.jitter_pad}: the zoom must be ≥ 1 and the pad ≥ 0")
    if s.projection_dim is not None and s.projection_dim < 1:
        raise UserError(f"--projection-dim {s.projection_dim}: give a positive number, or 0 for no projection")
    if s.last_block not in LAST_BLOCKS:
        raise UserError(f"--last-block {s.last_block!r}: choose one of {', '.join(LAST_BLOCKS)}")
    if s.normalisation not in ("imagenet", "clip"):
        raise UserError(f"--normalisation {s.normalisation!r}: choose imagenet (official training) or clip")
    if s.upsampler not in UPSAMPLERS:
        raise UserError(f"--upsampler-type {s.upsampler!r}: choose one of {', '.join(UPSAMPLERS)}")
    if s.precision not in PRECISIONS:
        raise UserError(f"--precision {s.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if patch_size is None:
        return
    if s.crop_size % patch_size:
        raise UserError(f"--crop-size {s.crop_size} is not a multiple of the CLIP patch size {patch_size}")
    radius = s.radius if s.radius is not None else _default_radius(s.upsampler)
    if radius < 1:
        raise UserError(f"--radius {radius}: give a radius of at least 1")
    if 2 * (s.crop_size // patch_size) <= radius:
        raise UserError(f"--crop-size {s.crop_size} is too small for a radius-{radius} JBU: its first stage needs "
                        f"more than {radius} pixels (use a crop of at least {(radius // 2 + 1) * patch_size})")


def _default_radius(upsampler: str) -> int:
    return 5 if upsampler == "jbu_one" else 3


def build_upsampler(settings: UpsamplerTrainSettings, feat_dim: int) -> nn.Module:
    radius = settings.radius if settings.radius is not None else _default_radius(settings.upsampler)
    return UPSAMPLERS[settings.upsampler](feat_dim=feat_dim, radius=radius)


# ---------------------------------------------------------------------------------------------
# The featurizer (frozen CLIP)
# ---------------------------------------------------------------------------------------------

class ClipFeaturizer:
    """Frozen CLIP patch features ``[B, D, h/p, w/p]`` (float32) of normalised images.

    ``last_block="skip"`` is the official training featurizer (``xclip``): the last ViT block is
    skipped, features are ``ln_post(tokens after block L−1) @ proj``. Any attention mode of
    :mod:`..segment.attention` instead runs the replaced last block exactly as SegEarth-OV does at
    inference, which removes the train/test mismatch of the official recipe (spec §2.5).
    """

    def __init__(self, clip: ClipModel, last_block: str = "skip") -> None:
        visual = clip.model.visual
        needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
        if any(getattr(visual, name, None) is None for name in needed):
            raise UserError("this CLIP's image tower is not an OpenAI-style ViT (conv1, class token, ln_post, proj): "
                            "SimFeatUp training needs a ViT CLIP such as ViT-B-16, RemoteCLIP or GeoRSCLIP")
        if not getattr(visual.transformer, "batch_first", True):
            raise UserError("this CLIP's transformer is not batch-first; use a current open_clip model")
        if last_block not in LAST_BLOCKS:
            raise UserError(f"--last-block {last_block!r}: choose one of {', '.join(LAST_BLOCKS)}")
        self.clip = clip
        self.last_block = last_block

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tokens, (gh, gw) = dense_tokens(self.clip.model.visual, images, self.last_block)
        patches = tokens[:, 1:]
        b = patches.shape[0]
        return patches.transpose(1, 2).reshape(b, -1, gh, gw).float()


# ---------------------------------------------------------------------------------------------
# Trained modules besides the upsampler
# ---------------------------------------------------------------------------------------------

def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Per-channel Gaussian blur with reflect borders (separable, normalised kernel)."""
    t = torch.arange(size, device=x.device, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-t.square() / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, [size // 2] * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


class AttentionDownsampler(nn.Module):
    """Learned downsampler: each ``p×p`` patch of (blurred) features becomes a weighted mean.

    The weight of a pixel is softmax over the patch of ``w·logit + b``, with ``logit`` a linear
    read-out of its feature (input dropout 0.2) and ``w``, ``b`` learned per position in the patch.
    During training a random 20% of patches get all their logits zeroed (their weights fall back to
    ``softmax(b)``), as officially, so the model cannot rely on content attention alone.
    """

    def __init__(self, dim: int, patch_size: int = 16, blur_size: int = 5, blur_sigma: float = 1.0,
                 drop_patches: float = 0.2) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.blur = (blur_size, blur_sigma)
        self.drop_patches = drop_patches
        self.attention_net = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, 1))
        p = patch_size
        self.w = nn.Parameter(torch.ones(p, p) + 0.01 * torch.randn(p, p))
        self.b = nn.Parameter(0.01 * torch.randn(p, p))

    def patches(self, feats: torch.Tensor) -> torch.Tensor:
        """Blurred features cut into non-overlapping patches: ``[B, gh, gw, p², C]``."""
        b, c, h, w = feats.shape
        p = self.patch_size
        x = gaussian_blur(feats, *self.blur)
        x = x.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h // p, w // p, p * p, c)

    def weights(self, patches: torch.Tensor) -> torch.Tensor:
        """Per-patch softmax weights ``[B, gh, gw, p²]`` (each patch sums to 1)."""
        logits = self.attention_net(patches).squeeze(-1)
        if self.training and self.drop_patches > 0:
            keep = torch.rand(logits.shape[:-1] + (1,), device=logits.device) >= self.drop_patches
            logits = logits * keep
        logits = logits * self.w.flatten().to(logits.dtype) + self.b.flatten().to(logits.dtype)
        return F.softmax(logits, dim=-1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, C, H/p, W/p]``."""
        patches = self.patches(feats)
        return torch.einsum("bhwpc,bhwp->bchw", patches, self.weights(patches).to(patches.dtype))


class ScaleNet(nn.Module):
    """Predicted per-location uncertainty ``s = exp(Conv1×1(lr) + 0.1) ≥ 1e-4`` for ``L_rec``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Conv2d(dim, 1, 1)
        with torch.no_grad():  # small start: s ≈ e^0.1 everywhere
            self.net.weight.mul_(0.1)
            self.net.bias.mul_(0.1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net(feats).float() + 0.1).clamp_min(1e-4)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ImageReconstructor(nn.Sequential):
    """The "CRN": rebuild the normalised RGB image from high-resolution features (``L_img``).

    It keeps the upsampled features tied to image content; the decoder itself is thrown away.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Conv2d(dim, dim, 1), LayerNorm2d(dim), nn.GELU(), nn.Conv2d(dim, 3, 1), nn.Tanh())


class SimFeatUpParts(nn.Module):
    """Everything that is trained; attribute names give the official checkpoint key prefixes."""

    def __init__(self, upsampler: nn.Module, dim: int, patch_size: int) -> None:
        super().__init__()
        self.upsampler = upsampler
        self.downsampler = AttentionDownsampler(dim, patch_size)
        self.scale_net = ScaleNet(dim)
        self.projection_img = ImageReconstructor(dim)


# ---------------------------------------------------------------------------------------------
# Losses, jitter and projection
# ---------------------------------------------------------------------------------------------

def reconstruction_loss(down: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``L_rec = mean(‖down − target‖² / (2s²) + log s)``: a Gaussian likelihood whose scale ``s``
    is predicted, so hard-to-reconstruct places (``s`` large) weigh less but pay ``log s``."""
    mse = (down.float() - target.float()).square()
    return (mse / (2 * scales.square()) + scales.log()).mean()


def image_loss(reconstructed: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``L_img``: mean squared error between the decoded and the (jittered, normalised) image."""
    return (reconstructed.float() - image.float()).square().mean()


@dataclass(frozen=True)
class Jitter:
    """One random view: reflect-pad, zoom, crop back to the input size at (top, left), flip."""

    flip: bool
    zoom: float
    top: int
    left: int


def sample_jitter(gen: torch.Generator, s: UpsamplerTrainSettings, h: int, w: int) -> Jitter:
    u = torch.rand(3, generator=gen).tolist()
    zoom = 1.0 + u[2] * (s.max_zoom - 1.0) if u[1] < s.zoom_prob else 1.0
    span_h = int((h + 2 * s.jitter_pad) * zoom) - h
    span_w = int((w + 2 * s.jitter_pad) * zoom) - w
    top = int(torch.randint(0, span_h + 1, (), generator=gen))
    left = int(torch.randint(0, span_w + 1, (), generator=gen))
    return Jitter(flip=u[0] < s.flip_prob, zoom=zoom, top=top, left=left)


def apply_jitter(x: torch.Tensor, jitter: Jitter, pad: int) -> torch.Tensor:
    """The same geometric view of an image or of a feature map at image resolution."""
    h, w = x.shape[-2:]
    if pad:
        x = F.pad(x, [pad] * 4, mode="reflect")
    if jitter.zoom > 1.0:
        size = (int(x.shape[-2] * jitter.zoom), int(x.shape[-1] * jitter.zoom))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x[..., jitter.top:jitter.top + h, jitter.left:jitter.left + w]
    return x.flip(-1) if jitter.flip else x


def random_projection(gen: torch.Generator, batch: int, dim: int, out_dim: int | None) -> torch.Tensor | None:
    """One Gaussian ``dim → out_dim`` matrix per image, columns unit-norm (Johnson–Lindenstrauss):
    comparing 30 random directions per step is cheap and, over steps, covers all channels."""
    if out_dim is None:
        return None
    proj = torch.randn(batch, dim, out_dim, generator=gen)
    return proj / proj.norm(dim=1, keepdim=True)


def project(feats: torch.Tensor, proj: torch.Tensor | None) -> torch.Tensor:
    return feats if proj is None else torch.einsum("bchw,bck->bkhw", feats, proj.to(feats.dtype))


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def list_training_images(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from folders (searched recursively), single images, or text lists of paths.

    A text list has one path per line (relative paths are taken from the list's folder; blank lines
    and ``#`` comments are ignored). Listed files that are missing are kept: they are reported and
    skipped during training like unreadable ones.
    """
    found: list[Path] = []
    for spec in specs:
        p = Path(os.path.expanduser(str(spec)))
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise UserError(f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)}), also in subfolders: point --images to a folder of images")
            found.extend(files)
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
        elif p.is_file():
            found.extend(_read_list(p))
        else:
            raise UserError(f"--images {p} does not exist: give a folder of images or a text file listing them")
    return found


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"cannot read the image list {path} ({type(exc).__name__}): give a text file with one image path per line") from None
    paths = [Path(os.path.expanduser(line.strip())) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise UserError(f"the image list {path} names no images: write one image path per line")
    return [q if q.is_absolute() else path.parent / q for q in paths]


def random_crop(rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size×size`` crop; a side shorter than ``size`` is first reflect-padded on both
    ends by the shortfall (as torchvision's ``RandomCrop(pad_if_needed=True)``)."""
    h, w = rgb.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        rgb = np.pad(rgb, ((ph, ph), (pw, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        h, w = rgb.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(rgb[top:top + size, left:left + size])


@dataclass
class StreamPosition:
    """Where the image stream stands: epoch number and entries of that epoch's order consumed."""

    epoch: int = 0
    cursor: int = 0


class ImageStream:
    """Endless batches of random crops, reproducible from ``(seed, epoch, cursor)`` alone.

    Each epoch visits the images in a seeded random order; the crop of the ``i``-th visit depends
    only on ``(seed, epoch, i)``, so a resumed run sees exactly the crops an uninterrupted run
    would. Unreadable files are reported once, skipped and counted, never fatal. Decoding runs in
    a few threads ahead of training (OpenCV and GDAL release the GIL).
    """

    def __init__(self, paths: Sequence[Path], crop_size: int, seed: int = 0, workers: int = 2,
                 report: Callable[[str], None] | None = None) -> None:
        if not paths:
            raise UserError("no training images: give a folder of images or a list of them to --images")
        self.paths = list(paths)
        self.crop_size = crop_size
        self.seed = seed
        self.workers = max(1, workers)
        self.report = report or (lambda msg: print(msg, file=sys.stderr))
        self.skipped: dict[str, str] = {}

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))

    def load(self, epoch: int, i: int, index: int) -> tuple[np.ndarray | None, str]:
        """The crop of visit ``i`` of ``epoch``, or ``(None, reason)`` for an unreadable file."""
        try:
            rgb = read_image(self.paths[index]).rgb
            return random_crop(rgb, self.crop_size, np.random.default_rng([self.seed, epoch, i])), ""
        except Exception as exc:  # noqa: BLE001 - a bad file must never end a long run
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            return None, (reason.splitlines() or ["unknown error"])[0]

    def _skip(self, path: Path, reason: str) -> None:
        if str(path) not in self.skipped:
            self.skipped[str(path)] = reason
            self.report(f"skipped unreadable image {path} ({reason})")

    def _visits(self, start: StreamPosition) -> Iterator[tuple[int, int, int]]:
        epoch, cursor = start.epoch, min(start.cursor, len(self.paths))
        while True:
            order = self.order(epoch)
            for i in range(cursor, len(order)):
                yield epoch, i, int(order[i])
            epoch, cursor = epoch + 1, 0

    def _position_after(self, epoch: int, i: int) -> StreamPosition:
        return StreamPosition(epoch, i + 1) if i + 1 < len(self.paths) else StreamPosition(epoch + 1, 0)

    def batches(self, batch_size: int, start: StreamPosition) -> Iterator[tuple[np.ndarray, StreamPosition]]:
        """Yield ``([B, S, S, 3] uint8, position after the batch)`` forever, from ``start``."""
        crops: list[np.ndarray] = []
        failures_in_a_row = 0
        visits = self._visits(start)
        pending: deque = deque()
        with ThreadPoolExecutor(self.workers) as pool:
            try:
                while True:
                    while len(pending) < self.workers + 2 * batch_size:  # decode ahead, in order
                        epoch, i, index = next(visits)
                        pending.append((epoch, i, index, pool.submit(self.load, epoch, i, index)))
                    epoch, i, index, future = pending.popleft()
                    crop, reason = future.result()
                    if crop is None:
                        self._skip(self.paths[index], reason)
                        failures_in_a_row += 1
                        if failures_in_a_row >= len(self.paths):
                            raise UserError(f"none of the {len(self.paths)} training images can be read: check --images")
                        continue
                    failures_in_a_row = 0
                    crops.append(crop)
                    if len(crops) == batch_size:
                        yield np.stack(crops), self._position_after(epoch, i)
                        crops = []
            finally:
                for *_, future in pending:
                    future.cancel()


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------

def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device: use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class UpsamplerTrainer:
    """One SimFeatUp training run: the modules, the optimiser and the random streams."""

    def __init__(self, clip: ClipModel, settings: UpsamplerTrainSettings = UpsamplerTrainSettings()) -> None:
        check_settings(settings, clip.patch_size)
        self.clip = clip
        self.settings = settings
        self.device = clip.device
        self.featurizer = ClipFeaturizer(clip, settings.last_block)
        self.dim = clip.embed_dim
        # One seed fixes the initial weights and every random stream: dropout and the patch drops
        # use torch's global generators, jitters and projections a private CPU generator.
        torch.manual_seed(settings.seed)
        self.parts = SimFeatUpParts(build_upsampler(settings, self.dim), self.dim, clip.patch_size).to(self.device).train()
        self.optimizer = torch.optim.NAdam(self.parts.parameters(), lr=settings.lr)
        self.amp_dtype = autocast_dtype(settings.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.gen = torch.Generator().manual_seed(settings.seed)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if settings.normalisation == "imagenet" else (clip.mean, clip.std)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.step = 0

    @property
    def upsampler(self) -> nn.Module:
        return self.parts.upsampler

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def normalise(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 crops → normalised ``[B, 3, H, W]`` float32 on the device."""
        x = torch.as_tensor(batch).to(self.device).permute(0, 3, 1, 2).float() / 255
        return (x - self.mean) / self.std

    def upsample(self, lr_feats: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        hr = self.parts.upsampler(lr_feats, image)
        if hr.shape[-2:] != image.shape[-2:]:  # e.g. ViT-B/32: ×16 reaches half the image size
            hr = F.interpolate(hr, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return hr

    def jitter_losses(self, image: torch.Tensor, lr_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_rec, L_img)`` of one random view (spec §2.5), before the division by n_jitters."""
        s = self.settings
        with self.autocast():
            hr = self.upsample(lr_feats, image)
        view = sample_jitter(self.gen, s, *image.shape[-2:])
        proj = random_projection(self.gen, image.shape[0], self.dim, s.projection_dim)
        proj = proj.to(self.device) if proj is not None else None
        with torch.no_grad():
            jit_image = apply_jitter(image, view, s.jitter_pad)
            target = self.featurizer(jit_image)
        with self.autocast():
            jit_hr = apply_jitter(hr, view, s.jitter_pad)
            down = self.parts.downsampler(jit_hr)
            rec = reconstruction_loss(project(down, proj), project(target, proj), self.parts.scale_net(target))
            img = image_loss(self.parts.projection_img(jit_hr), jit_image)
        return rec, img

    def train_step(self, batch: np.ndarray | torch.Tensor) -> dict[str, float]:
        """One optimiser step on a batch of uint8 crops; returns the jitter-averaged loss terms."""
        s = self.settings
        image = self.normalise(batch)
        lr_feats = self.featurizer(image)
        self.optimizer.zero_grad(set_to_none=True)
        rec_sum = img_sum = 0.0
        for _ in range(s.n_jitters):
            rec, img = self.jitter_losses(image, lr_feats)
            # Backward per view, as officially: one view's graph in memory at a time.
            self.scaler.scale((rec + s.img_weight * img) / s.n_jitters).backward()
            rec_sum += rec.item()
            img_sum += img.item()
        if self.step < s.early_clip_steps:  # tiny first steps while NAdam's moments settle
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.parts.parameters(), s.early_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        rec_mean, img_mean = rec_sum / s.n_jitters, img_sum / s.n_jitters
        return {"rec": rec_mean, "img": img_mean, "loss": rec_mean + s.img_weight * img_mean}

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Everything needed to continue bit for bit (plus the stream position, added by the caller)."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.parts.state_dict().items()},
            "optimizer_states": [self.optimizer.state_dict()],
            "global_step": self.step,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda, "views": self.gen.get_state()},
        }

    def load_state(self, ckpt: dict) -> None:
        self.parts.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer_states"][0])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["global_step"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.gen.set_state(rng["views"])


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

_CKPT = re.compile(r"^step_(\d+)\.ckpt$")


def default_checkpoint_dir(output: Path) -> Path:
    return output.parent / f"{output.stem}_train"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Resumable checkpoints in a folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def images_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(str(p).encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def read_train_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot read the training checkpoint {path} ({type(exc).__name__}): delete it to resume from an earlier one") from None


def _check_resumable(saved: dict, settings: UpsamplerTrainSettings, dim: int, path: Path) -> None:
    mine = asdict(settings)
    for name, value in saved["settings"].items():
        if name in mine and name not in RESUMABLE_CHANGES and mine[name] != value:
            raise UserError(f"{path} was trained with {name}={value!r}, this run asks {mine[name]!r}: "
                            "resume with the same options, or start over in another --checkpoint-dir")
    if saved["feat_dim"] != dim:
        raise UserError(f"{path} was trained for {saved['feat_dim']}-d CLIP features but this CLIP gives {dim}-d ones: resume with the same --clip")


@dataclass
class TrainSummary:
    output: Path
    steps: int
    start_step: int
    images: int
    crops_seen: int
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    losses: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        done = self.steps - self.start_step
        return done / self.seconds if self.seconds > 0 else float("nan")


class _Run:
    """Bookkeeping of one invocation: checkpoint folder, stream position, skipped images, log."""

    def __init__(self, trainer: UpsamplerTrainer, stream: ImageStream, folder: Path, clip_identity: str) -> None:
        self.trainer, self.stream, self.folder = trainer, stream, folder
        self.clip_identity = clip_identity
        self.position = StreamPosition()
        self.crops_seen = 0

    def meta(self) -> dict:
        t = self.trainer
        return {"kind": "simfeatup-train", "settings": asdict(t.settings), "clip": self.clip_identity,
                "feat_dim": t.dim, "patch_size": t.clip.patch_size,
                "images": {"count": len(self.stream.paths), "digest": images_digest(self.stream.paths)},
                "position": {"epoch": self.position.epoch, "cursor": self.position.cursor},
                "skipped": dict(self.stream.skipped), "crops_seen": self.crops_seen}

    def save(self) -> Path:
        t = self.trainer
        path = self.folder / f"step_{t.step:07d}.ckpt"
        with atomic_path(path) as tmp:
            torch.save({**t.state(), "frugalvl": self.meta()}, tmp)
        keep = t.settings.keep_checkpoints
        if keep > 0:
            for _, old in list_checkpoints(self.folder)[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def restore(self, path: Path, report: Callable[[str], None]) -> None:
        ckpt = read_train_checkpoint(path)
        meta = ckpt.get("frugalvl") or {}
        if meta.get("kind") != "simfeatup-train":
            raise UserError(f"{path} is not a frugalvl train-upsampler checkpoint: remove it or choose another --checkpoint-dir")
        _check_resumable(meta, self.trainer.settings, self.trainer.dim, path)
        if meta["clip"] != self.clip_identity:
            report(f"note: {path} was trained with CLIP {meta['clip']}, this run loads {self.clip_identity}")
        self.trainer.load_state(ckpt)
        self.position = StreamPosition(**meta["position"])
        self.stream.skipped.update(meta["skipped"])
        self.crops_seen = int(meta["crops_seen"])
        saved = meta["images"]
        if saved["digest"] != images_digest(self.stream.paths):
            report(f"note: the image list changed since {path} ({saved['count']} → {len(self.stream.paths)} images): "
                   "training continues, but the crops differ from an uninterrupted run")

    def log(self, losses: dict[str, float], seconds: float) -> None:
        line = {"step": self.trainer.step, **{k: round(v, 6) for k, v in losses.items()}, "seconds": round(seconds, 3)}
        with open(self.folder / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def _progress(total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train-upsampler", unit="step", disable=not enabled, dynamic_ncols=True)


class _StopOnInterrupt:
    """Turn the first Ctrl-C into a request honoured between steps (so the checkpoint written then
    is consistent); a second Ctrl-C interrupts at once. Only the main thread can install it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopOnInterrupt":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train_upsampler(clip: ClipModel, images: Sequence[Path], output: str | os.PathLike,
                    settings: UpsamplerTrainSettings = UpsamplerTrainSettings(), checkpoint_dir: str | os.PathLike | None = None,
                    resume: bool = False, progress: bool = True, report: Callable[[str], None] | None = None) -> TrainSummary:
    """Train a JBU upsampler for ``clip`` on ``images``; write resumable checkpoints and the final
    upsampler to ``output`` in the official layout. Returns what happened, for the summary line."""
    output = Path(output)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(output)
    say = report or (lambda msg: print(msg, file=sys.stderr))
    existing = list_checkpoints(folder)
    if existing and not resume:
        raise UserError(f"{folder} holds checkpoints of an earlier run (last: step {existing[-1][0]}): add --resume to continue it, "
                        "or remove the folder to start over")
    steps = settings.steps if settings.steps is not None else math.ceil(len(images) / settings.batch_size)
    trainer = UpsamplerTrainer(clip, settings)
    stream = ImageStream(images, settings.crop_size, settings.seed, settings.workers, report=say)
    run = _Run(trainer, stream, folder, clip.identity)
    if existing:
        run.restore(existing[-1][1], say)
        say(f"resuming from {existing[-1][1]} (step {trainer.step} of {steps})")
    elif resume:
        say(f"no checkpoint in {folder}: starting from step 0")
    folder.mkdir(parents=True, exist_ok=True)
    start, losses, begin = trainer.step, [], time.perf_counter()
    bar = _progress(steps, start, progress)
    if progress:
        stream.report = lambda msg: bar.write(msg, file=sys.stderr)
    batches = stream.batches(settings.batch_size, run.position)
    try:
        with _StopOnInterrupt() as stop:
            while trainer.step < steps:
                batch, after = next(batches)
                tick = time.perf_counter()
                terms = trainer.train_step(batch)
                run.position, run.crops_seen = after, run.crops_seen + len(batch)
                losses.append(terms)
                run.log(terms, time.perf_counter() - tick)
                bar.update(1)
                bar.set_postfix(rec=f"{terms['rec']:.4f}", img=f"{terms['img']:.4f}", loss=f"{terms['loss']:.4f}",
                                skipped=len(stream.skipped), refresh=False)
                if trainer.step % settings.checkpoint_every == 0 or trainer.step >= steps:
                    run.save()
                if stop.requested:
                    say(f"interrupted: saved {run.save()}; rerun with --resume to continue")
                    raise KeyboardInterrupt
    finally:
        batches.close()
        bar.close()
    save_upsampler(output, trainer.upsampler, global_step=trainer.step, frugalvl=run.meta())
    return TrainSummary(output=output, steps=trainer.step, start_step=start, images=len(images), crops_seen=run.crops_seen,
                        skipped=dict(stream.skipped), seconds=time.perf_counter() - begin, losses=losses)


def settings_with(base: UpsamplerTrainSettings, **changes) -> UpsamplerTrainSettings:
    """``base`` with the given fields replaced; ``None`` values leave a field as it is."""
    names = {f.name for f in fields(base)}
    unknown = set(changes) - names
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


def summary_line(summary: TrainSummary) -> str:
    done = summary.steps - summary.start_step
    rate = f", {summary.steps_per_second:.2f} steps/s" if done else ""
    last = summary.losses[-1] if summary.losses else None
    loss = f"; last loss {last['loss']:.4f} (rec {last['rec']:.4f}, img {last['img']:.4f})" if last else ""
    return (f"trained {done} step(s) (now at step {summary.steps}) on {summary.images} image(s), {summary.crops_seen} crops seen, "
            f"{len(summary.skipped)} unreadable skipped, {summary.seconds:.1f} s{rate}{loss}\n"
            f"wrote {summary.output}: use it with frugalvl segment --upsampler {summary.output}")
