"""The frozen CLIP that SimFeatUp learns to upsample (docs/methods/simfeatup.md#featurizer, ``xclip``)."""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models.clip import ClipModel
from ..models.dense_clip import dense_tokens
from ..settings import FieldError
from .settings import LAST_BLOCKS

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the official training normalises with ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
_VIT_PARTS = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")


class ClipFeaturizer:
    """Frozen CLIP patch features ``[B, D, h/p, w/p]`` (float32) of normalised images.

    ``last_block="skip"`` is the official training featurizer (``xclip``): the last ViT block is skipped, features
    are ``ln_post(tokens after block L−1) @ proj``. Any attention mode of :mod:`frugalvl.models.attention` instead runs
    the replaced last block exactly as SegEarth-OV does at inference, which removes the train/test mismatch of the
    official recipe (docs/methods/simfeatup.md#train-and-test-features).
    """

    def __init__(self, clip: ClipModel, last_block: str = "skip") -> None:
        visual = clip.model.visual
        if any(getattr(visual, name, None) is None for name in _VIT_PARTS):
            raise UserError(
                "this CLIP's image tower is not an OpenAI-style ViT (conv1, class token, ln_post, proj): "
                "SimFeatUp training needs a ViT CLIP such as ViT-B-16, RemoteCLIP or GeoRSCLIP"
            )
        if not getattr(visual.transformer, "batch_first", True):
            raise UserError("this CLIP's transformer is not batch-first; use a current open_clip model")
        if last_block not in LAST_BLOCKS:
            raise FieldError("last_block", f"{last_block!r} is unknown: choose one of {', '.join(LAST_BLOCKS)}")
        self.clip = clip
        self.last_block = last_block

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tokens, (gh, gw) = dense_tokens(self.clip.model.visual, images, self.last_block)
        patches = tokens[:, 1:]
        b = patches.shape[0]
        return patches.transpose(1, 2).reshape(b, -1, gh, gw).float()
