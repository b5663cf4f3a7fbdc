"""Loading CLIP through open_clip.

``load_clip(spec)`` accepts what users have:

* an open_clip model name, optionally with a pretrained tag: ``ViT-B-16`` (tag ``openai`` when the
  architecture has one, as the official SegEarth-OV code), ``ViT-B-32:laion2b_s34b_b79k``;
  OpenAI's spelling ``ViT-B/16`` is accepted too;
* a Hugging Face hub id ``hf-hub:org/repo`` or a local open_clip folder ``local-dir:PATH``;
* a local checkpoint file in the OpenAI format (TorchScript archive such as ``ViT-B-16.pt``, or a
  plain state dict), the architecture inferred from the tensor shapes as OpenAI's own loader does;
* ``ARCH:PATH``: a state dict for the open_clip architecture ``ARCH``, as RemoteCLIP and GeoRSCLIP
  release them (``ViT-B-32:RemoteCLIP-ViT-B-32.pt``).

Failures a user can fix (missing file, a checkpoint of another model, no network for a download)
raise :class:`~frugalvl.errors.UserError` with one line that names the fix.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..identity import path_identity
from ..progress import announce
from ..settings import FieldError
from .defaults import DEFAULT_CLIP

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
_CLIP_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight", "text_projection")


@dataclass
class ClipModel:
    """A loaded CLIP: the open_clip model, its tokenizer and how to normalise images for it."""

    model: Any  # an open_clip CLIP (visual, text_projection, encode_text)
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    identity: str  # names the weights (content fingerprint of a local file), for caches and records
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    text_cache: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.conv1.kernel_size[0])

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]`` in the model's dtype."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            feats = self.model.encode_text(tokens)
            out.append(feats / feats.norm(dim=-1, keepdim=True))
        return torch.cat(out)


def _is_hub_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(
        names
        & {
            "URLError",
            "ConnectionError",
            "LocalEntryNotFoundError",
            "OfflineModeIsEnabled",
            "HTTPError",
            "gaierror",
            "TimeoutError",
            "ConnectTimeout",
            "MaxRetryError",
            "RepositoryNotFoundError",
            "GatedRepoError",
            "HfHubHTTPError",
            "OSError",
        }
    )


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder (plain ``torch.save`` files have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist()[:200])


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """An OpenAI-layout CLIP state dict from a TorchScript archive (OpenAI's release files, read as
    ``open_clip.load_openai_model`` does) or any file open_clip's ``load_state_dict`` reads (a state
    dict, bare or under ``state_dict``, ``module.`` prefixes, ``.safetensors``), with weights only."""
    from open_clip.factory import load_state_dict

    if not path.is_file():
        raise FieldError("clip", f"CLIP checkpoint {path} does not exist: check the path given to {{clip}}")
    try:
        if _is_torchscript(path):
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the same mistake for the user
        raise FieldError(
            "clip",
            f"{path} cannot be read ({type(exc).__name__}): it is not a CLIP checkpoint that open_clip reads; "
            "give an OpenAI-format .pt file or an open_clip state dict to {clip}",
        ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"CLIP checkpoint {path} holds no state dict: give an OpenAI-format .pt file or an open_clip state dict"
        )
    state.pop("attn_mask", None)  # a buffer that traced archives store; the model rebuilds it
    if not all(k in state for k in _CLIP_KEYS):
        raise FieldError(
            "clip",
            f"{path} is not a CLIP checkpoint (it lacks {', '.join(k for k in _CLIP_KEYS if k not in state)}): pass CLIP weights to {{clip}}",
        )
    return state


def _finish(model: torch.nn.Module, device: str | torch.device, precision: str) -> torch.nn.Module:
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def normalise_name(name: str) -> str:
    return name.replace("/", "-") if name.startswith(("ViT-", "RN")) else name


def _from_file(path: Path, device, precision: str) -> ClipModel:
    from open_clip import get_tokenizer
    from open_clip.model import build_model_from_openai_state_dict

    state = _read_checkpoint(path)
    if "visual.proj" not in state:
        raise FieldError(
            "clip",
            f"{path} is a ResNet CLIP or an unknown layout: dense segmentation needs a ViT CLIP; pass a ViT checkpoint to {{clip}}",
        )
    try:
        model = build_model_from_openai_state_dict(dict(state), cast_dtype=None)
        # The builder loads into half-precision parameters; reload at full precision.
        model.float().load_state_dict({k: v for k, v in state.items() if k not in _OPENAI_EXTRAS})
    except (RuntimeError, KeyError) as exc:
        raise FieldError(
            "clip",
            f"{path} does not match the OpenAI CLIP layout ({type(exc).__name__}); for an open_clip state dict name its architecture, e.g. {{clip}} ViT-B-32:{path}",
        ) from None
    return ClipModel(_finish(model, device, precision), get_tokenizer("ViT-B-16"), path_identity(path))


def _from_arch_and_file(arch: str, path: Path, device, precision: str) -> ClipModel:
    import open_clip

    if not path.is_file():
        raise FieldError("clip", f"CLIP checkpoint {path} does not exist: check the path given to {{clip}}")
    try:
        model = open_clip.create_model(arch, pretrained=None, precision="fp32", device="cpu")
    except RuntimeError as exc:
        raise FieldError("clip", f"unknown open_clip architecture {arch!r} in {{clip}} {arch}:{path} ({exc})") from None
    missing, unexpected = _load_weights(model, path, arch)
    if len(missing) == len(model.state_dict()):
        raise FieldError(
            "clip",
            f"{path} is not a CLIP checkpoint for {arch} (none of its tensors belong to the model): "
            "pass CLIP weights to {clip}",
        )
    if missing or unexpected:
        raise UserError(
            f"{path} does not fit architecture {arch} ({len(missing)} missing, {len(unexpected)} unexpected tensors): check the architecture name before the ':'"
        )
    return ClipModel(
        _finish(model, device, precision),
        open_clip.get_tokenizer(arch),
        f"{arch}:{path_identity(path)}",
        *_norm_of(model),
    )


def _load_weights(model: torch.nn.Module, path: Path, arch: str) -> tuple[list[str], list[str]]:
    """Load ``path`` into an open_clip model with ``open_clip.load_checkpoint`` (weights only; it also
    converts third-party layouts and resizes position embeddings); returns (missing, unexpected) keys.
    TorchScript archives, which ``torch.load`` cannot read with weights only, go through ``torch.jit``."""
    import open_clip

    try:
        if _is_torchscript(path):
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in (*_OPENAI_EXTRAS, "attn_mask"):
                state.pop(key, None)
            result = model.load_state_dict(state, strict=False)
        else:
            result = open_clip.load_checkpoint(model, str(path), strict=False, weights_only=True)
    except RuntimeError as exc:
        if "size mismatch" in str(exc) or "Error(s) in loading state_dict" in str(exc):
            return ["(shapes differ)"], []
        raise UserError(
            f"{path} cannot be read (RuntimeError): it is not a CLIP checkpoint that open_clip reads"
        ) from None
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the same mistake for the user
        raise UserError(
            f"{path} cannot be read ({type(exc).__name__}): it is not a CLIP checkpoint that open_clip reads for {arch}"
        ) from None
    return list(result.missing_keys), list(result.unexpected_keys)


def _norm_of(model) -> tuple[tuple, tuple]:
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD))


def _from_open_clip(name: str, tag: str | None, device, precision: str, cache_dir: str | None) -> ClipModel:
    import open_clip

    if not name.startswith(("hf-hub:", "local-dir:")):
        if name not in open_clip.list_models():
            raise UserError(
                f"unknown CLIP {name!r}: give an open_clip model name (e.g. ViT-B-16), hf-hub:ORG/REPO, or a checkpoint file"
            )
        if tag is None:
            tags = [t for (n, t) in open_clip.list_pretrained() if n == name]
            if not tags:
                raise FieldError(
                    "clip",
                    f"open_clip has no pretrained weights for {name}: give NAME:TAG or a checkpoint file to {{clip}}",
                )
            tag = "openai" if "openai" in tags else tags[0]
    from .hub import quiet_root_logger  # open_clip logs download failures on the root logger: ours is one line

    try:
        with quiet_root_logger():
            model = open_clip.create_model(
                name, pretrained=tag, precision="fp32", device="cpu", cache_dir=cache_dir, require_pretrained=True
            )
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - classified below
        if _is_hub_error(exc) or isinstance(exc, RuntimeError):
            where = f"{name}:{tag}" if tag else name
            raise FieldError(
                "clip",
                f"could not get CLIP weights {where} ({type(exc).__name__}; no network?): download them elsewhere and pass the file, e.g. {{clip}} /path/to/ViT-B-16.pt",
            ) from None
        raise
    return ClipModel(_finish(model, device, precision), tokenizer, f"{name}:{tag}", *_norm_of(model))


def clip_identity(spec: str = DEFAULT_CLIP) -> str | None:
    """The identity :func:`load_clip` gives the CLIP ``spec`` names, without loading it; None where only
    loading tells (a file that is not there, a name open_clip does not know)."""
    spec = spec.strip()
    if spec.startswith("local-dir:"):
        spec = spec[len("local-dir:") :]
        return f"local-dir:{Path(os.path.expanduser(spec))}:None" if Path(os.path.expanduser(spec)).is_dir() else None
    if spec.startswith("hf-hub:"):
        return f"{spec}:None"
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        return f"local-dir:{path}:None"
    if path.is_file():
        return path_identity(path)
    if ":" in spec:
        arch, rest = spec.split(":", 1)
        arch = normalise_name(arch)
        rest_path = Path(os.path.expanduser(rest))
        if rest_path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors") or os.sep in rest:
            return f"{arch}:{path_identity(rest_path)}" if rest_path.is_file() else None
        return f"{arch}:{rest}"
    import open_clip

    name = normalise_name(spec)
    tags = [t for (n, t) in open_clip.list_pretrained() if n == name]
    if not tags:
        return None
    return f"{name}:{'openai' if 'openai' in tags else tags[0]}"


def load_clip(
    spec: str = DEFAULT_CLIP,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    cache_dir: str | None = None,
) -> ClipModel:
    """Load a CLIP from a name, hub id, folder or checkpoint file (see the module docstring).

    ``precision`` defaults to fp16 on CUDA (as the official code) and fp32 elsewhere.
    """
    if precision is None:
        precision = "fp16" if str(device).startswith("cuda") else "fp32"
    spec = spec.strip()
    announce("load", f"CLIP {spec} on {device}")
    if spec.startswith("local-dir:"):
        spec = spec[len("local-dir:") :]
        if not Path(os.path.expanduser(spec)).is_dir():
            raise FieldError("clip", f"local-dir:{spec}: {spec} is not a folder: check the path given to {{clip}}")
    if spec.startswith("hf-hub:"):
        return _from_open_clip(spec, None, device, precision, cache_dir)
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise FieldError(
                "clip",
                f"{path} is not a CLIP checkpoint folder (no open_clip_config.json; a SAM 3 or other model "
                "folder is not a CLIP): give an open_clip folder, a CLIP checkpoint file or a model name to {clip}",
            )
        return _from_open_clip(f"local-dir:{path}", None, device, precision, cache_dir)
    if path.is_file():
        return _from_file(path, device, precision)
    if ":" in spec:
        arch, rest = spec.split(":", 1)
        arch = normalise_name(arch)
        rest_path = Path(os.path.expanduser(rest))
        if rest_path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors") or os.sep in rest:
            return _from_arch_and_file(arch, rest_path, device, precision)
        return _from_open_clip(arch, rest, device, precision, cache_dir)
    if spec.endswith((".pt", ".pth", ".bin", ".ckpt")) or os.sep in spec:
        raise FieldError("clip", f"CLIP checkpoint {spec} does not exist: check the path given to {{clip}}")
    return _from_open_clip(normalise_name(spec), None, device, precision, cache_dir)
