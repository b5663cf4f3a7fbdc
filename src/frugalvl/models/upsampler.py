"""SimFeatUp upsampler weights: where they come from, how they are read and written.

docs/methods/simfeatup.md#checkpoint-layouts and #the-released-weights. The modules themselves
are in :mod:`.jbu`.

* ``official`` names the JBU-One checkpoint the SegEarth-OV authors trained for OpenAI ViT-B/16
  (``xclip_jbu_one_million_aid.ckpt``): downloaded once into the cache folder (``$FRUGALVL_CACHE``
  or ``~/.cache/frugalvl``) with :func:`torch.hub.download_url_to_file`, renamed into place only
  once both published ends of its SHA-256 match.
* Any other value is a local checkpoint: the official Lightning layout (``state_dict`` keys prefixed
  ``upsampler.``), FeatUp's JBU-Stack, a bare state dict, or a file written by
  ``frugalvl train-upsampler``. The layout is read from the keys.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors, containers and plain values
only, never arbitrary pickled objects, so a file from elsewhere cannot run code. A file that needs
more is refused with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import atomic_path, remove_stale_temporaries
from ..identity import path_identity
from .jbu import JBUOne, JBUStack

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://github.com/likyoo/SegEarth-OV/raw/main/simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt"
OFFICIAL_NAME = "xclip_jbu_one_million_aid.ckpt"
# Only the ends of the SHA-256 are published (third-party, docs/methods/simfeatup.md#the-released-weights); both
# ends are checked.
OFFICIAL_SHA256_HEAD, OFFICIAL_SHA256_TAIL = "cabc594d", "49d8"

# Python classes, beyond tensors, containers and plain values, that the official checkpoints need to
# unpickle; they are allowed only while an upsampler checkpoint is read. None is needed: FeatUp's
# JBU-Stack files (clip_/maskclip_jbu_stack_cocostuff.ckpt, Lightning 1.9.4) hold loop, callback
# and NAdam state made of tensors, dicts, lists, strings and numbers only (checked), and SimFeatUp's
# JBU-One file comes from a fork of the same Lightning training code, which saves no hyper-parameters
# (the file itself was not at hand to check). Add a class here only after checking that an official
# file needs it.
CHECKPOINT_GLOBALS: tuple[type, ...] = ()

Upsampler = JBUOne | JBUStack


# ---------------------------------------------------------------------------------------------
# Reading and writing checkpoints (docs/methods/simfeatup.md#checkpoint-layouts)
# ---------------------------------------------------------------------------------------------


def _unsafe_globals(path: Path, exc: BaseException) -> list[str]:
    """The classes/functions a refused file asks to unpickle, for the error line."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: read the name from torch's message
        found = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    return sorted(set(found)) or ["an object that is not a tensor"]


def _safe_load(path: Path) -> object:
    """``torch.load`` on the CPU with weights only; one :class:`UserError` line when that fails."""
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):
            raise UserError(
                f"upsampler checkpoint {path} cannot be read (UnpicklingError): is it a PyTorch/Lightning .ckpt file?"
            ) from None
        names = ", ".join(_unsafe_globals(path, exc))
        raise UserError(
            f"upsampler checkpoint {path} is refused: it holds Python objects ({names}) beyond weights, "
            "and loading them could run code; re-save only its state_dict where you trust the file"
        ) from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise UserError(
                f"{path} is a TorchScript archive (a whole model, such as a CLIP release file), "
                "not a JBU upsampler checkpoint"
            ) from None
        raise UserError(
            f"upsampler checkpoint {path} cannot be read (RuntimeError): is it a PyTorch/Lightning .ckpt file?"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other unreadable file
        raise UserError(
            f"upsampler checkpoint {path} cannot be read ({type(exc).__name__}): is it a PyTorch/Lightning .ckpt file?"
        ) from None


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The upsampler's tensors from a Lightning checkpoint or a bare state dict, prefix removed."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict: it is not a SimFeatUp/FeatUp upsampler checkpoint")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if any(k.startswith("upsampler.") for k in tensors):
        tensors = {k[len("upsampler.") :]: v for k, v in tensors.items() if k.startswith("upsampler.")}
    return tensors


def upsampler_from_state(state: dict[str, torch.Tensor], source: str = "state dict") -> Upsampler:
    """Build the right upsampler for a state dict (layout read from the keys) and load it strictly."""
    cls: type[JBUOne] | type[JBUStack]
    if "up.range_temp" in state:
        cls, key = JBUOne, "up"
    elif "up1.range_temp" in state:
        cls, key = JBUStack, "up1"
    else:
        raise UserError(
            f"{source} is not a JBU upsampler checkpoint (no 'up.*' or 'up1.*' keys): "
            "give a SimFeatUp/FeatUp upsampler or one written by frugalvl train-upsampler"
        )
    try:
        taps = state[f"{key}.fixup_proj.3.weight"].shape[0]
        feat_dim = state["fixup_proj.1.weight"].shape[0]
    except KeyError as exc:
        raise UserError(f"{source} lacks tensor {exc}: the upsampler checkpoint is incomplete") from None
    radius = (int(round(taps**0.5)) - 1) // 2
    model = cls(feat_dim=feat_dim, radius=radius)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{source} does not match the {cls.__name__} layout ({first})") from None
    return model.eval()


def read_upsampler_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an upsampler checkpoint file into a bare state dict (weights only, mapped to the CPU).

    Lightning files also hold optimiser and callback state, some of it saved on ``cuda:0``
    (docs/methods/simfeatup.md#reading-checkpoints-safely): everything is mapped to the CPU and only the upsampler's
    tensors are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"upsampler checkpoint {path} does not exist: check the path")
    return _unwrap(_safe_load(path), path)


def load_upsampler(path: str | os.PathLike) -> Upsampler:
    """Load a JBU-One or JBU-Stack upsampler from an official/FeatUp checkpoint or a bare state dict."""
    return upsampler_from_state(read_upsampler_checkpoint(path), str(path))


def save_upsampler(path: str | os.PathLike, upsampler: torch.nn.Module, **extra: object) -> None:
    """Write a checkpoint in the official layout, ``{'state_dict': {'upsampler.*': ...}, **extra}``,
    atomically. ``extra`` must be plain data (it is read back with weights only)."""
    state = {f"upsampler.{k}": v.detach().cpu() for k, v in upsampler.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **extra}, tmp)


# ---------------------------------------------------------------------------------------------
# The released checkpoint (#the-released-weights)
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("FRUGALVL_CACHE", Path.home() / ".cache" / "frugalvl"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, name: Path | None = None) -> None:
    """Both published ends of the official SHA-256; ``name`` is the file named in the error."""
    digest = _sha256(path)
    if not (digest.startswith(OFFICIAL_SHA256_HEAD) and digest.endswith(OFFICIAL_SHA256_TAIL)):
        raise UserError(
            f"{name or path} does not have the official checkpoint's SHA-256 ({digest[:8]}…{digest[-4:]}): "
            "delete it and retry, or pass your own upsampler file"
        )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout while the block runs (torch.hub's download takes none), unless one is set."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(url: str, path: Path, timeout: float) -> None:
    """Download to a temporary file beside ``path``; rename it onto ``path`` only once verified."""
    log.info("downloading the official SimFeatUp checkpoint from %s", url)
    try:
        with atomic_path(path) as tmp, _socket_timeout(timeout):
            # torch.hub streams into its own temporary file and checks the digest's head as it goes.
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=OFFICIAL_SHA256_HEAD, progress=False)
            _verify(tmp, path)
    except OSError as exc:
        raise UserError(
            f"could not download the official SimFeatUp checkpoint ({type(exc).__name__}; no network?): "
            f"fetch {url} elsewhere and pass the file instead of 'official'"
        ) from None
    except RuntimeError as exc:  # torch.hub: "invalid hash value"
        if "hash" not in str(exc):
            raise
        raise UserError(
            f"the download of {url} does not have the official checkpoint's SHA-256: nothing was kept; "
            "retry later, or fetch it elsewhere and pass the file"
        ) from None


def fetch_official(timeout: float = 30.0) -> Path:
    """The official JBU-One checkpoint, from the cache or downloaded into it (``timeout`` seconds
    without data end the download)."""
    path = cache_dir() / OFFICIAL_NAME
    remove_stale_temporaries(cache_dir())
    if not path.exists():
        _download(OFFICIAL_URL, path, timeout)
    _verify(path)
    return path


def upsampler_identity(spec: str | None) -> str | None:
    """The identity :func:`resolve_upsampler` gives, without loading: None for no upsampler (bilinear).
    Raises LookupError where only loading tells (the released one before its download, a missing file)."""
    if spec is None or spec.lower() in ("none", "bilinear", ""):
        return None
    path = Path(os.path.expanduser(spec))
    if spec.lower() == "official" or not path.exists():
        raise LookupError(spec)
    return path_identity(path)


def resolve_upsampler(spec: str | None) -> Upsampler | None:
    """``None``/``none``/``bilinear`` -> no upsampler; ``official`` -> the released JBU-One; else a path."""
    if spec is None or spec.lower() in ("none", "bilinear", ""):
        return None
    path = fetch_official() if spec.lower() == "official" else Path(os.path.expanduser(spec))
    upsampler = load_upsampler(path)
    upsampler.identity = path_identity(path)  # what produced a result, for records and caches
    return upsampler
