"""Are the weights a run needs at hand? One check for all of them, before any model is built.

``weight_problems`` looks at every weight a SegEarth-OV run names (the CLIP and the SimFeatUp
upsampler), fetches into the local caches what is missing and can be downloaded, and returns one
short reason per weight that is still missing, so a user learns about all of them at once instead
of one per attempt. Building the models stays with :func:`frugalvl.models.clip.load_clip` and
:func:`frugalvl.models.upsampler.resolve_upsampler`, which then find the cached files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import UserError
from .hub import host_reachable, quiet_root_logger

log = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _hf_cached(repo_id: str, filenames: list[str], cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache_dir), str) for f in filenames)


def _open_clip_cfg(spec: str) -> tuple[str, dict] | None:
    """``(name:tag, pretrained cfg)`` for an open_clip ``NAME[:TAG]`` spec, None for other specs."""
    import open_clip

    from .clip import normalise_name  # imports torch: only when a name is looked up

    name, _, tag = spec.partition(":")
    name = normalise_name(name)
    if name not in open_clip.list_models():
        return None
    if not tag:
        tags = [t for (n, t) in open_clip.list_pretrained() if n == name]
        if not tags:
            return None
        tag = "openai" if "openai" in tags else tags[0]
    cfg = open_clip.pretrained.get_pretrained_cfg(name, tag)
    return (f"{name}:{tag}", cfg) if cfg else None


def _open_clip_cached(cfg: dict, cache_dir: str | None) -> bool:
    if cfg.get("hf_hub"):
        model_id, filename = os.path.split(cfg["hf_hub"])  # open_clip's convention: "org/model/" = default file
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename, filename.rsplit(".", 1)[0] + ".safetensors", "open_clip_model.safetensors"]
        if _hf_cached(model_id, names, cache_dir):
            return True
    if cfg.get("url"):
        folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip"
        return (folder / os.path.basename(cfg["url"])).is_file()
    return False


def clip_problem(spec: str, cache_dir: str | None = None) -> str | None:
    """None when the CLIP weights ``spec`` names are here (downloading them if needed), else why not."""
    spec = spec.strip()
    path = Path(os.path.expanduser(spec))
    if path.exists():
        return None
    if ":" in spec and not spec.startswith(("hf-hub:", "local-dir:")):
        rest = spec.split(":", 1)[1]
        if rest.endswith(_CHECKPOINT_SUFFIXES) or os.sep in rest:
            return None if Path(os.path.expanduser(rest)).is_file() else f"no file {rest}"
    if spec.endswith(_CHECKPOINT_SUFFIXES) or os.sep in spec or spec.startswith("local-dir:"):
        return f"no file or folder {spec.removeprefix('local-dir:')}"
    found = _open_clip_cfg(spec) if not spec.startswith("hf-hub:") else None
    if found is None:
        return None  # hub ids and unknown names: load_clip gives its own precise message
    where, cfg = found
    if _open_clip_cached(cfg, cache_dir):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or not host_reachable(
        "huggingface.co"
    ):
        return f"{where} not downloaded yet and huggingface.co is out of reach"
    import open_clip

    try:
        with quiet_root_logger():
            open_clip.pretrained.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported in one line
        return f"{where} not downloaded yet, and its download failed ({type(exc).__name__})"
    return None


def upsampler_problem(spec: str | None) -> str | None:
    """None when the upsampler ``spec`` names is here (downloading the official one if needed), else why not."""
    from .upsampler import OFFICIAL_NAME, OFFICIAL_URL, cache_dir, fetch_official

    if spec is None or spec.lower() in ("", "none", "bilinear"):
        return None
    if spec.lower() != "official":
        path = Path(os.path.expanduser(spec))
        return None if path.is_file() else f"no file {spec}"
    if (cache_dir() / OFFICIAL_NAME).is_file():
        return None
    if not host_reachable("github.com"):
        return f"{OFFICIAL_NAME} not downloaded yet and github.com is out of reach"
    try:
        fetch_official()
    except UserError:
        return f"{OFFICIAL_NAME} not downloaded yet, and its download failed (from {OFFICIAL_URL})"
    return None


def check_segearth_ov_weights(clip: str, upsampler: str | None, names: tuple[str, str] = ("clip", "upsampler")) -> None:
    """Raise one :class:`UserError` naming every missing weight; ``names`` say how the user sets each.

    ``names`` are the fields (``clip``) by default; the command line passes its options, and ``make demo``
    its variables (``FRUGALVL_CLIP=``).
    """
    problems = [
        (names[0], clip, clip_problem(clip), _clip_file_name(clip)),
        (names[1], upsampler, upsampler_problem(upsampler), _upsampler_file_name(upsampler)),
    ]
    missing = [(name, value, why, file) for name, value, why, file in problems if why]
    if not missing:
        return
    parts = "; ".join(f"{_setting(name, value)} ({why})" for name, value, why, _ in missing)
    fix = " ".join(_setting(name, f"/path/to/{file}") for name, _, _, file in missing)
    urls = [u for u in (_clip_url(clip) if n == names[0] else _upsampler_url(upsampler) for n, *_ in missing) if u]
    where = f" ({', '.join(urls)})" if urls else ""
    what = "weights are" if len(missing) > 1 else "weight is"
    raise UserError(
        f"{len(missing)} {what} missing: {parts}; download on a connected machine{where} and give the files: {fix}"
    )


def _clip_url(spec: str) -> str | None:
    """Where the weights ``spec`` names are downloaded from (open_clip's address), for the hint."""
    if Path(spec).suffix:
        return None
    try:
        found = _open_clip_cfg(spec)
    except Exception:  # noqa: BLE001 - only a hint
        return None
    if not found:
        return None
    cfg = found[1]
    if cfg.get("url"):
        return str(cfg["url"])
    return f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else None


def _upsampler_url(spec: str | None) -> str | None:
    from .upsampler import OFFICIAL_URL

    return OFFICIAL_URL if not spec or spec.lower() == "official" else None


def _clip_file_name(spec: str) -> str:
    """The file name the user would download for ``spec`` (OpenAI's ``ViT-B-16.pt``), for the hint."""
    if Path(spec).suffix:
        return Path(spec).name
    try:
        found = _open_clip_cfg(spec)
    except Exception:  # noqa: BLE001 - only a hint
        found = None
    url = found[1].get("url", "") if found else ""
    return os.path.basename(url) if url else "clip.pt"


def _upsampler_file_name(spec: str | None) -> str:
    from .upsampler import OFFICIAL_NAME

    if spec and spec.lower() != "official":
        return Path(spec).name
    return OFFICIAL_NAME


def _setting(name: str, value: str | None) -> str:
    return f"{name}{value}" if name.endswith("=") else f"{name} {value}"
