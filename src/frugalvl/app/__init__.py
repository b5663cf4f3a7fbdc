"""``frugalvl app``: a local web application to try vocabularies on a scene (docs/app.md).

FastAPI serves a small static Leaflet page, the tiles of the scene and of each result, and a JSON
API; segmentation runs in a background worker through the same segmenters as ``frugalvl segment``.
"""

from __future__ import annotations

from .config import AppConfig

__all__ = ["AppConfig", "create_app"]


def create_app(config: AppConfig | None = None):
    """The FastAPI application for ``config`` (imported lazily: FastAPI is an optional dependency)."""
    from .server import create_app as _create

    return _create(config or AppConfig())
