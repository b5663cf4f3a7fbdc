"""The output stem of a source that is not a file name: a tile service, a local STAC item."""

from __future__ import annotations

import os
from pathlib import Path


def source_stem(item: str | os.PathLike) -> str | None:
    """``xyz_<host and path>`` for a tile service, a local STAC item's id; None for anything else."""
    name = str(item)
    if name.startswith("xyz+"):
        from .xyz import xyz_stem

        return xyz_stem(name)
    if name.lower().endswith(".json") and "://" not in name:
        from .stac import local_item_id

        return local_item_id(Path(name)) or Path(name).stem
    return None
