"""Loading LLaVA through transformers (``LlavaForConditionalGeneration``), docs/methods/coido.md#the-mllm.

``load_llava(spec)`` accepts

* a local model folder in the llava-hf layout (config with ``model_type: llava``, weights, tokenizer,
  image processor), e.g. a download of ``llava-hf/llava-1.5-7b-hf`` (already instruction-tuned on the
  full 665K, so it is *not* the paper's starting point);
* a hub id such as ``llava-hf/llava-1.5-7b-hf`` (needs network, or the hub cache);
* the paper's initialisation, assembled from parts: ``lm=VICUNA_DIR,projector=mm_projector.bin,
  vision=CLIP_DIR`` -- Vicuna-7B-v1.5, LLaVA-1.5's pretrain-only projector (keys
  ``model.mm_projector.0.*`` / ``.2.*``) and ``openai/clip-vit-large-patch14-336``.

Failures a user can fix raise :class:`~frugalvl.errors.UserError` with one line naming the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..settings import FieldError
from .hub import folder_load_errors

IMAGE_TOKEN = "<image>"
PROJECTOR_KEYS = {  # LLaVA's mlp2x_gelu = Sequential(Linear, GELU, Linear)
    "model.mm_projector.0.weight": "linear_1.weight",
    "model.mm_projector.0.bias": "linear_1.bias",
    "model.mm_projector.2.weight": "linear_2.weight",
    "model.mm_projector.2.bias": "linear_2.bias",
}


@dataclass
class Llava:
    """A loaded LLaVA: the model, its tokenizer and image processor, and where it came from."""

    model: Any  # LlavaForConditionalGeneration
    tokenizer: Any
    image_processor: Any
    source: str

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per image: (size / patch)², less nothing for 'default' (CLS is dropped)."""
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.unk_token_id)


def load_llava(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Llava:
    """Load a LLaVA from a folder, a hub id or ``lm=...,projector=...,vision=...`` (module docstring)."""
    spec = spec.strip()
    if "projector=" in spec:
        llava = build_paper_init(**_parse_parts(spec), dtype=dtype)
    else:
        path = Path(os.path.expanduser(spec))
        if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
            llava = _from_folder(path, dtype)
        else:
            llava = _from_hub(spec, dtype)
    llava.model.to(device)
    return llava


def _parse_parts(spec: str) -> dict[str, str]:
    parts = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    missing = {"lm", "projector", "vision"} - parts.keys()
    if missing:
        raise FieldError(
            "mllm",
            f"{{mllm}} {spec!r} lacks {', '.join(sorted(missing))}: "
            "give lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR",
        )
    return {k: parts[k] for k in ("lm", "projector", "vision")}


def _model_type(folder: Path) -> str | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _from_folder(folder: Path, dtype: torch.dtype | None) -> Llava:
    if not folder.is_dir():
        raise UserError(
            f"LLaVA folder {folder} does not exist: give a local llava-hf model folder, a hub id, "
            "or lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR"
        )
    kind = _model_type(folder)
    if kind != "llava":
        what = f"a {kind!r} model" if kind else "no config.json"
        raise UserError(
            f"{folder} holds {what}, not LLaVA: give a llava-hf folder, or for Vicuna + the "
            "pretrain projector use lm=VICUNA_DIR,projector=mm_projector.bin,vision=CLIP_DIR"
        )
    fix = "the folder needs the weights (safetensors), tokenizer and image processor written by save_pretrained"
    with folder_load_errors("LLaVA", folder, fix):
        return _load(str(folder), dtype, f"folder:{folder.resolve()}")


def _from_hub(repo: str, dtype: torch.dtype | None) -> Llava:
    try:
        return _load(repo, dtype, f"hub:{repo}")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and hub failures are the user's to route around
        raise FieldError(
            "mllm",
            f"could not get {repo} from the Hugging Face hub ({type(exc).__name__}; no network?): "
            "download it elsewhere and pass the local folder to {mllm}",
        ) from None


def _load(where: str, dtype: torch.dtype | None, source: str) -> Llava:
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(where, dtype=dtype or torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(where)
    image_processor = AutoImageProcessor.from_pretrained(where)
    return Llava(model, tokenizer, image_processor, source)


def read_projector(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """LLaVA's pretrain ``mm_projector.bin`` as a ``multi_modal_projector`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"projector file {path} does not exist: give LLaVA-1.5's pretrain mm_projector.bin")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"cannot read {path} ({type(exc).__name__}): give LLaVA-1.5's pretrain mm_projector.bin"
        ) from None
    if not isinstance(state, dict) or not set(PROJECTOR_KEYS) <= set(state):
        raise UserError(
            f"{path} is not an mlp2x_gelu mm_projector.bin (keys model.mm_projector.0/2.*): "
            "give LLaVA-1.5's pretrain projector"
        )
    return {new: state[old] for old, new in PROJECTOR_KEYS.items()}


def build_paper_init(lm: str, projector: str, vision: str, dtype: torch.dtype | None = None) -> Llava:
    """The paper's starting point: Vicuna LM + pretrain-only projector + CLIP vision tower (#the-mllm).

    ``<image>`` is added to the Vicuna tokenizer (pad = unk, as LLaVA does for Vicuna v1) and the
    embeddings are resized; the LLaVA config uses vision layer −2 and the 'default' selection.
    """
    from transformers import (
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPVisionModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    lm_dir, vision_dir = Path(lm), Path(vision)
    for name, folder in (("lm", lm_dir), ("vision", vision_dir)):
        if not folder.is_dir():
            raise UserError(f"{name} folder {folder} does not exist: give local folders to lm=... and vision=...")
    if _model_type(lm_dir) != "llama":
        raise UserError(
            f"lm={lm_dir} is not a LLaMA/Vicuna folder (model_type {_model_type(lm_dir)!r}): give Vicuna-7B-v1.5"
        )
    if _model_type(vision_dir) not in ("clip", "clip_vision_model"):
        raise UserError(f"vision={vision_dir} is not a CLIP folder: give openai/clip-vit-large-patch14-336")
    proj_state = read_projector(projector)

    dtype = dtype or torch.float32
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    language = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=dtype)
    language.resize_token_embeddings(len(tokenizer))
    tower = CLIPVisionModel.from_pretrained(vision_dir, dtype=dtype)
    vc = tower.config
    config = LlavaConfig(
        vision_config=vc.to_dict(),
        text_config=language.config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(vc.image_size // vc.patch_size) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.language_model = language.model
    model.lm_head = language.lm_head
    model.model.vision_tower = tower
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    try:
        model.model.multi_modal_projector.load_state_dict(proj_state)
    except RuntimeError as exc:
        raise UserError(
            f"{projector} does not fit this vision tower and LM ({exc.args[0].splitlines()[-1].strip()}): "
            "use the projector pretrained for this CLIP and Vicuna size"
        ) from None
    image_processor = AutoImageProcessor.from_pretrained(vision_dir)
    return Llava(
        model,
        tokenizer,
        image_processor,
        f"parts:{lm_dir.resolve()},{Path(projector).resolve()},{vision_dir.resolve()}",
    )


def save_llava(llava: Llava, folder: str | os.PathLike) -> None:
    """Write model, tokenizer and image processor as a llava-hf folder that :func:`load_llava` reads."""
    folder = Path(folder)
    llava.model.save_pretrained(folder)
    llava.tokenizer.save_pretrained(folder)
    llava.image_processor.save_pretrained(folder)
