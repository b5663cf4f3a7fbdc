"""Where SimFeatUp upsampler weights come from.

``official`` names the JBU-One checkpoint the SegEarth-OV authors trained for OpenAI ViT-B/16
(``xclip_jbu_one_million_aid.ckpt``, spec §2.5): downloaded once into the cache folder
(``$FRUGALVL_CACHE`` or ``~/.cache/frugalvl``), written atomically, and checked against the digest
known for it. Any other value is a local checkpoint path (official layout, FeatUp's JBU-Stack, or a
checkpoint written by ``frugalvl train-upsampler``).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_path
from .jbu import load_upsampler

OFFICIAL_URL = "https://github.com/likyoo/SegEarth-OV/raw/main/simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt"
OFFICIAL_NAME = "xclip_jbu_one_million_aid.ckpt"
# Only the ends of the SHA-256 are published (third-party, spec §2.5); both ends are checked.
OFFICIAL_SHA256_HEAD, OFFICIAL_SHA256_TAIL = "cabc594d", "49d8"


def cache_dir() -> Path:
    return Path(os.environ.get("FRUGALVL_CACHE", Path.home() / ".cache" / "frugalvl"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path) -> None:
    digest = _sha256(path)
    if not (digest.startswith(OFFICIAL_SHA256_HEAD) and digest.endswith(OFFICIAL_SHA256_TAIL)):
        raise UserError(f"{path} does not have the official checkpoint's SHA-256 ({digest[:8]}…{digest[-4:]}): delete it and retry, or pass your file with --upsampler PATH")


def fetch_official(timeout: float = 30.0) -> Path:
    """The official JBU-One checkpoint, from the cache or downloaded into it."""
    path = cache_dir() / OFFICIAL_NAME
    if not path.exists():
        try:
            with urllib.request.urlopen(OFFICIAL_URL, timeout=timeout) as response, atomic_path(path) as tmp:
                tmp.write_bytes(response.read())
        except OSError as exc:
            raise UserError(f"could not download the official SimFeatUp checkpoint ({type(exc).__name__}; no network?): "
                            f"fetch {OFFICIAL_URL} elsewhere and pass it with --upsampler PATH") from None
    _verify(path)
    return path


def resolve_upsampler(spec: str | None):
    """``None``/``none``/``bilinear`` -> no upsampler; ``official`` -> the released JBU-One; else a path."""
    if spec is None or spec.lower() in ("none", "bilinear", ""):
        return None
    path = fetch_official() if spec.lower() == "official" else Path(os.path.expanduser(spec))
    return load_upsampler(path)
