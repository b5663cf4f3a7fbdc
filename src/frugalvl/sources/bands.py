"""Bands by number (``4,3,2``) or by common name (``red,green,blue``).

A name is matched, case-insensitively, against a raster's band descriptions (GDAL's band description,
or the ``eo:bands``/``raster:bands`` names of a STAC asset), so ``nir`` finds a band described ``NIR``
or ``nir``. A few usual aliases map to the STAC common names (``near-infrared`` -> ``nir``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError

ALIASES = {"near-infrared": "nir", "nir08": "nir08", "r": "red", "g": "green", "b": "blue", "infrared": "nir"}

Band = int | str


def parse_bands(text: str) -> tuple[Band, ...] | None:
    """``"4,3,2"`` -> ``(4, 3, 2)``; ``"red,green,blue"`` -> names; ``ValueError`` for anything else."""
    if not text:
        return None
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise ValueError(
            f"{text!r} is not a comma-separated list of band numbers or names, e.g. 4,3,2 or red,green,blue"
        )
    out: list[Band] = []
    for t in items:
        if t.lstrip("-").isdigit():
            out.append(int(t))
        elif t.replace("-", "").replace("_", "").isalnum():
            out.append(t.lower())
        else:
            raise ValueError(f"{text!r}: {t!r} is neither a band number nor a band name (e.g. red, nir)")
    return tuple(out)


def canonical(name: str) -> str:
    name = name.strip().lower()
    return ALIASES.get(name, name)


def band_names(src) -> list[str]:
    """The lower-case names of a raster's bands ('' where a band has none)."""
    names = getattr(src, "band_names", None)
    if names is not None:
        return [canonical(n) for n in names]
    return [canonical(d or "") for d in (getattr(src, "descriptions", None) or [""] * src.count)]


def resolve_bands(src, bands: Sequence[Band] | None, path: Path | str) -> list[int] | None:
    """Band numbers for ``bands`` (names looked up in the band descriptions of ``src``); None stays None."""
    if not bands:
        return None
    names = band_names(src)
    out = []
    for b in bands:
        if isinstance(b, int):
            out.append(b)
            continue
        want = canonical(b)
        if want not in names:
            known = ", ".join(n for n in names if n) or "none"
            raise UserError(f"{path} has no band named {b!r} (its band names: {known}): give band numbers, e.g. 3,2,1")
        out.append(names.index(want) + 1)
    return out
