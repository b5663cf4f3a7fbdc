"""The output stem of a source that is not a file name: a tile service, a STAC item (its id)."""

from __future__ import annotations

import os
from pathlib import Path


def source_stem(item: str | os.PathLike) -> str | None:
    """``xyz_<host and path>`` / ``wmts_<host and path>_<layer>`` for a tile service, a STAC item's id
    (local or remote), ``<first item's stem>_mosaic<N>`` for several items; None for anything else."""
    name = str(item)
    if name.startswith("xyz+"):
        from .xyz import xyz_stem

        return xyz_stem(name)
    if name.startswith("wmts+"):
        from .wmts import wmts_stem

        return wmts_stem(name)
    if name.startswith("stac-items:"):
        from .stac import mosaic_members

        members = mosaic_members(name) or []
        first = source_stem(members[0]) or Path(members[0].split("?")[0]).stem
        return f"{first}_mosaic{len(members)}" if len(members) > 1 else first
    if not name.split("?")[0].lower().endswith(".json"):
        return None
    if name.startswith(("http://", "https://")):
        from .stac import remote_item_id

        return remote_item_id(name)
    if "://" not in name:
        from .stac import local_item_id

        return local_item_id(Path(name)) or Path(name).stem
    return None
