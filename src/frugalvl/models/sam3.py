"""SAM 3 through transformers (``Sam3Model`` + ``Sam3Processor``): loading, and its stages called one by one.

Loading: ``load_sam3(source)`` accepts:

* a Hugging Face hub id, ``facebook/sam3`` by default. The weights are gated: request access on the
  model page, then run ``hf auth login`` (or set ``HF_TOKEN``). A copy already in the local hub
  cache is used without touching the network;
* a local folder written by ``save_pretrained`` (``config.json`` with ``model_type = "sam3"``,
  the weights, and the processor files: image processor + CLIP tokenizer).

Meta's ``sam3`` package is not used (docs/methods/segearth_ov3.md#sam-3-through-transformers). Failures a user can
fix (a missing folder, a folder holding another model, a gated or unreachable hub) raise
:class:`~frugalvl.errors.UserError` with one line naming the fix.

Stages: :func:`encode_image`, :func:`detect` and :func:`segmentation_head` are the calls
transformers' ``Sam3Model.forward`` makes for text prompts, in the same order, split so that a
segmenter knows the presence scores before it runs the segmentation head; :func:`encode_text`
and :func:`pixel_values` prepare prompts and views with ``Sam3Processor``. Only this module reaches into the sub-modules that
``Sam3Model.forward`` calls; :mod:`frugalvl.segment.segearth_ov3` uses these functions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..identity import path_identity
from ..progress import announce
from ..settings import FieldError
from .defaults import DEFAULT_SAM3
from .hub import folder_load_errors

# A sam3_video checkpoint carries the image detector as ``detector_config``; Sam3Model accepts it.
_SAM3_MODEL_TYPES = ("sam3", "sam3_video")
_LOGIN_HINT = (
    "request access on https://huggingface.co/facebook/sam3, run `hf auth login` (or set HF_TOKEN), "
    "or pass a local model folder with {sam3} PATH"
)


@dataclass
class Sam3Bundle:
    """A loaded SAM 3: the model (eval mode, on its device) and its processor."""

    model: torch.nn.Module
    processor: object
    source: str
    identity: str = ""  # content fingerprint of a local folder, or name:ID for a hub id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def _looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (or an existing path) is a folder."""
    if Path(source).expanduser().exists():
        return True
    return source.startswith((".", "/", "~", "\\")) or source.count("/") > 1 or "\\" in source


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise FieldError(
            "sam3",
            f"{{sam3}} {folder} is a file, but SAM 3 is loaded from a folder: give the folder written by "
            f"save_pretrained (config.json, weights and processor files), or a hub id such as {DEFAULT_SAM3}",
        )
    if not folder.is_dir():
        raise UserError(
            f"SAM 3 folder {folder} does not exist: give a folder written by save_pretrained, "
            f"or a hub id such as {DEFAULT_SAM3}"
        )
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(
            f"{folder} has no config.json: it is not a transformers model folder; "
            f"give a SAM 3 folder written by save_pretrained, or a hub id such as {DEFAULT_SAM3}"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        raise UserError(f"{config} is not valid JSON: re-save the model with save_pretrained") from None
    if model_type not in _SAM3_MODEL_TYPES:
        raise UserError(
            f"{folder} holds a {model_type!r} model, not SAM 3 (model_type 'sam3'): "
            f"give a SAM 3 folder or the hub id {DEFAULT_SAM3}"
        )


def _check_hub(repo_id: str) -> None:
    """Fetch ``config.json`` once, to turn gated/offline/unknown repos into one clear line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        hf_hub_download(repo_id, "config.json")
    except GatedRepoError:
        raise FieldError(
            "sam3", f"SAM 3 weights {repo_id!r} are gated and this machine is not authorised: {_LOGIN_HINT}"
        ) from None
    except RepositoryNotFoundError:
        raise FieldError(
            "sam3",
            f"no hub model {repo_id!r} (or it is private/gated) and no local folder of that name: "
            f"check the id, or {_LOGIN_HINT}",
        ) from None
    except LocalEntryNotFoundError:
        raise FieldError(
            "sam3",
            f"cannot reach the Hugging Face hub for {repo_id!r}, it is not in the local cache and no local "
            f"folder has that name (offline?): connect and {_LOGIN_HINT}",
        ) from None
    except OSError as exc:
        raise FieldError("sam3", f"cannot download {repo_id!r} ({exc.__class__.__name__}): {_LOGIN_HINT}") from None


def _from_pretrained(source: str, dtype: torch.dtype, **kwargs):
    from transformers import Sam3Model, Sam3Processor

    model = Sam3Model.from_pretrained(source, dtype=dtype, **kwargs)
    processor = Sam3Processor.from_pretrained(source, **kwargs)
    return model, processor


def load_sam3(
    source: str | Path = DEFAULT_SAM3, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Sam3Bundle:
    """Load SAM 3 from a hub id or a local folder, in eval mode on ``device`` with weights in ``dtype``.

    The official code keeps fp32 weights and runs under bf16 autocast on CUDA; the segmenter does
    the same by default, so ``dtype`` stays fp32 unless memory is short.
    """
    source = str(source)
    local = _looks_like_path(source)
    if local:
        _check_folder(Path(source).expanduser())  # a wrong path is one line, before "loading ..."
    announce("load", f"SAM 3 {source} on {device}")
    if local:
        folder = Path(source).expanduser()
        fix = "the folder needs the weights (safetensors) and the processor files written by save_pretrained"
        with folder_load_errors("SAM 3", folder, fix):
            model, processor = _from_pretrained(str(folder), dtype)
    else:
        try:  # a cached copy needs no network (and no 20 s of retries when offline)
            model, processor = _from_pretrained(source, dtype, local_files_only=True)
        except OSError:
            _check_hub(source)
            try:
                model, processor = _from_pretrained(source, dtype)
            except OSError as exc:
                raise FieldError(
                    "sam3", f"cannot load {source!r} from the hub ({exc.__class__.__name__}): {_LOGIN_HINT}"
                ) from None
        if model.config.model_type not in _SAM3_MODEL_TYPES:
            raise UserError(
                f"hub model {source!r} is a {model.config.model_type!r} model, not SAM 3: give a SAM 3 id "
                f"such as {DEFAULT_SAM3}"
            )
    return Sam3Bundle(model=model.to(device).eval(), processor=processor, source=source, identity=sam3_identity(source))


def sam3_identity(source: str | Path = DEFAULT_SAM3) -> str:
    """The identity :func:`load_sam3` gives the model ``source`` names, without loading it."""
    source = str(source)
    return path_identity(Path(source)) if Path(source).is_dir() else f"name:{source}"


# ---------------------------------------------------------------------------------------------
# The stages of Sam3Model.forward for text prompts, called one by one
# ---------------------------------------------------------------------------------------------


def encode_text(sam3: Sam3Bundle, queries: Sequence[str], chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected per-token text features ``[Q, 32, D]`` and validity mask ``[Q, 32]``, ``chunk`` prompts a pass."""
    processor: Any = sam3.processor  # transformers' Sam3Processor
    tokens = processor(text=list(queries), return_tensors="pt")
    ids, mask = tokens["input_ids"].to(sam3.device), tokens["attention_mask"].to(sam3.device)
    feats = [
        sam3.model.get_text_features(input_ids=ids[c : c + chunk], attention_mask=mask[c : c + chunk]).pooler_output
        for c in range(0, len(queries), chunk)
    ]
    return torch.cat(feats), mask.bool()


def pixel_values(sam3: Sam3Bundle, *views: np.ndarray) -> torch.Tensor:
    """``[V, 3, S, S]`` SAM 3 inputs (resized to S², mean = std = 0.5) for ``h×w×3`` uint8 views.

    The official code hands a PIL image to the same processor; a uint8 tensor gives the same values
    (the processor converts PIL images to tensors first), and the resize then runs on the model's
    device (0.17 s instead of 0.25 s per 1008² view on a 2-core CPU; not yet timed on a GPU).
    """
    images = [torch.from_numpy(np.array(v, order="C")).permute(2, 0, 1) for v in views]  # a writable copy
    processor: Any = sam3.processor  # transformers' Sam3Processor
    pixels = processor.image_processor(images=images, return_tensors="pt", device=sam3.device)
    return pixels["pixel_values"].to(sam3.device, sam3.dtype)


@dataclass
class VisionFeatures:
    """The FPN maps the detector uses (``scalp=1``: the coarsest map dropped), one item per view."""

    maps: list[torch.Tensor]
    positions: list[torch.Tensor]

    def expand(self, k: int) -> VisionFeatures:
        """The features of a single view seen as a batch of ``k`` (vision and text batches must match)."""
        return VisionFeatures(
            [m.expand(k, -1, -1, -1) for m in self.maps], [p.expand(k, -1, -1, -1) for p in self.positions]
        )

    def take(self, views: torch.Tensor) -> VisionFeatures:
        """The features of views ``views`` [K] (indices into the batch), as a batch of K: a free expand
        when they all come from one view, a gather otherwise."""
        first = int(views[0])
        if bool((views == first).all()):
            one = VisionFeatures(
                [m[first : first + 1] for m in self.maps], [p[first : first + 1] for p in self.positions]
            )
            return one.expand(len(views))
        return VisionFeatures([m[views] for m in self.maps], [p[views] for p in self.positions])


@dataclass
class Detection:
    """Fusion encoder + decoder outputs for K prompts."""

    class_logits: torch.Tensor  # [K, N]
    presence_logits: torch.Tensor  # [K]
    queries: torch.Tensor  # [K, N, D] last decoder layer
    encoder_states: torch.Tensor  # [K, S, D]

    def select(self, index: torch.Tensor) -> Detection:
        return Detection(
            self.class_logits[index], self.presence_logits[index], self.queries[index], self.encoder_states[index]
        )


def encode_image(model: torch.nn.Module, pixel_values: torch.Tensor) -> VisionFeatures:
    """The image encoder and its FPN, once per view (``[V, 3, S, S]`` inputs)."""
    out = model.get_vision_features(pixel_values=pixel_values)
    return VisionFeatures(list(out.fpn_hidden_states[:-1]), list(out.fpn_position_encoding[:-1]))


def detect(model: torch.nn.Module, vision: VisionFeatures, text: torch.Tensor, text_mask: torch.Tensor) -> Detection:
    """Fusion encoder, DETR decoder, query scoring and presence for K prompts (vision batch K)."""
    encoder = model.detr_encoder(
        vision_features=[vision.maps[-1]],
        text_features=text,
        vision_pos_embeds=[vision.positions[-1]],
        text_mask=text_mask,
    )
    decoder = model.detr_decoder(
        vision_features=encoder.last_hidden_state,
        text_features=encoder.text_features,
        vision_pos_encoding=encoder.pos_embeds_flattened,
        text_mask=text_mask,
        spatial_shapes=encoder.spatial_shapes,
    )
    last = decoder.intermediate_hidden_states[-1:]  # scoring is per layer; only the last one is used
    class_logits = model.dot_product_scoring(
        decoder_hidden_states=last, text_features=encoder.text_features, text_mask=text_mask
    )[-1, ..., 0]
    return Detection(class_logits, decoder.presence_logits[-1][:, 0], last[0], encoder.last_hidden_state)


def segmentation_head(
    model: torch.nn.Module, vision: VisionFeatures, detection: Detection, text: torch.Tensor, text_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel decoder, instance masks ``[K, N, h, w]`` and semantic map ``[K, 1, h, w]`` (logits)."""
    out = model.mask_decoder(
        decoder_queries=detection.queries,
        backbone_features=list(vision.maps),
        encoder_hidden_states=detection.encoder_states,
        prompt_features=text,
        prompt_mask=text_mask,
    )
    return out.pred_masks, out.semantic_seg


def encode_boxes(
    model: torch.nn.Module, vision: VisionFeatures, boxes: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 3's geometry prompt for K prompts (vision batch K): ``boxes`` [K, n, 4] normalised (cx, cy, w, h)
    as ``Sam3Processor`` gives them, ``labels`` [K, n] (1 positive, 0 negative). Returns the prompt tokens
    ``[K, n + 1, D]`` and their validity mask, as ``Sam3Model.forward`` computes them for ``input_boxes``."""
    out = model.geometry_encoder(
        box_embeddings=boxes,
        box_mask=torch.ones(labels.shape, dtype=torch.bool, device=labels.device),
        box_labels=labels,
        img_feats=vision.maps,
        img_pos_embeds=vision.positions,
    )
    return out.last_hidden_state, out.attention_mask


def box_prompt(boxes_xyxy: Sequence[Sequence[float]], height: int, width: int) -> torch.Tensor:
    """Pixel boxes ``(x0, y0, x1, y1)`` of an ``height × width`` view as ``Sam3Processor`` passes them to
    the model: divided by the view size, then (cx, cy, w, h). ``[n, 4]`` float32."""
    b = torch.tensor([list(map(float, box)) for box in boxes_xyxy], dtype=torch.float32).reshape(-1, 4)
    b = b / torch.tensor([width, height, width, height], dtype=torch.float32)
    return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
