"""One SimFeatUp training step and everything it changes (docs/methods/simfeatup.md#training).

A step on a batch of crops: frozen CLIP features of the crops; for each of ``n_jitters`` random
views, upsample, apply the view to the image and to the upsampled features, and backpropagate
``(L_rec + γ·L_img) / n_jitters``; clip the gradient norm during the first steps; one NAdam step
over the upsampler, the downsampler, the scale net and the image decoder.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.clip import ClipModel
from ..models.jbu import JBUOne, JBUStack
from ..precision import autocast, autocast_dtype
from .distributed import Ranks
from .downsampler import AttentionDownsampler
from .featurizer import IMAGENET_MEAN, IMAGENET_STD, ClipFeaturizer
from .jitter import apply_jitter, sample_jitter
from .losses import ImageReconstructor, ScaleNet, image_loss, project, random_projection, reconstruction_loss
from .settings import UpsamplerTrainSettings, check_settings, default_radius

UPSAMPLERS: dict[str, type[JBUOne] | type[JBUStack]] = {"jbu_one": JBUOne, "jbu_stack": JBUStack}


def build_upsampler(settings: UpsamplerTrainSettings, feat_dim: int) -> JBUOne | JBUStack:
    """A freshly initialised upsampler of the chosen layout and radius."""
    radius = settings.radius if settings.radius is not None else default_radius(settings.upsampler)
    return UPSAMPLERS[settings.upsampler](feat_dim=feat_dim, radius=radius)


class SimFeatUpParts(nn.Module):
    """Everything that is trained; attribute names give the official checkpoint key prefixes."""

    def __init__(self, upsampler: nn.Module, dim: int, patch_size: int) -> None:
        super().__init__()
        self.upsampler = upsampler
        self.downsampler = AttentionDownsampler(dim, patch_size)
        self.scale_net = ScaleNet(dim)
        self.projection_img = ImageReconstructor(dim)


class UpsamplerTrainer:
    """One SimFeatUp training run: the modules, the optimiser and the random streams."""

    def __init__(
        self, clip: ClipModel, settings: UpsamplerTrainSettings = UpsamplerTrainSettings(), ranks: Ranks | None = None
    ) -> None:
        check_settings(settings, clip.patch_size)
        self.clip = clip
        self.ranks = ranks or Ranks()
        self.settings = settings
        self.device = clip.device
        self.featurizer = ClipFeaturizer(clip, settings.last_block)
        self.dim = clip.embed_dim
        # One seed fixes the initial weights and every random stream: dropout and the patch drops
        # use torch's global generators, jitters and projections a private CPU generator. Every
        # process of a data-parallel run uses the same seed: same weights, same views (as Lightning
        # DDP with seed_everything), different images.
        torch.manual_seed(settings.seed)
        parts = SimFeatUpParts(build_upsampler(settings, self.dim), self.dim, clip.patch_size)
        self.parts = parts.to(self.device).train()
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

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.settings.precision)

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
        """``(L_rec, L_img)`` of one random view (#losses), before the division by n_jitters."""
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
        """One optimiser step on a batch of uint8 crops; returns the jitter-averaged loss terms
        (averaged over the processes too when several train together)."""
        terms = self.backward(batch)
        self.apply_gradients()
        return terms

    def backward(self, batch: np.ndarray | torch.Tensor) -> dict[str, float]:
        """The gradients of one step on ``batch`` (averaged over the processes), without the update."""
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
        if self.ranks.world > 1:
            rec_sum, img_sum = self.average_over_ranks(rec_sum, img_sum)
        rec_mean, img_mean = rec_sum / s.n_jitters, img_sum / s.n_jitters
        return {"rec": rec_mean, "img": img_mean, "loss": rec_mean + s.img_weight * img_mean}

    def average_over_ranks(self, rec_sum: float, img_sum: float) -> tuple[float, float]:
        """Average the gradients and the loss sums over the processes in one all-reduce (what DDP
        does to the gradients; a GradScaler's inf/NaN then reaches every process alike)."""
        params = list(self.parts.parameters())
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        terms = torch.tensor([rec_sum, img_sum], device=self.device, dtype=params[0].grad.dtype)
        flat = self.ranks.average_(torch.cat([p.grad.reshape(-1) for p in params] + [terms]))
        start = 0
        for p in params:
            p.grad.copy_(flat[start : start + p.numel()].view_as(p.grad))
            start += p.numel()
        return float(flat[-2]), float(flat[-1])

    def apply_gradients(self) -> None:
        """Clip during the first steps, then one NAdam step over every trained module."""
        s = self.settings
        if self.step < s.early_clip_steps:  # tiny first steps while NAdam's moments settle
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.parts.parameters(), s.early_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit (plus the stream position, added by the caller)."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.parts.state_dict().items()},
            "optimizer_states": [self.optimizer.state_dict()],
            "global_step": self.step,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda, "views": self.gen.get_state()},
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
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
