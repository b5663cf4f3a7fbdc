"""The app's settings: what the command line fixes for the whole server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AppConfig:
    """Server-wide settings; the page may choose models, but server paths must lie under ``data_roots``."""

    data_roots: tuple[Path, ...] = ()  # folders whose files the page may open by path
    max_upload_mb: float = 512.0  # largest accepted upload
    models: Mapping[str, str | None] = field(default_factory=dict)  # default model specs by option name
    device: str = "cpu"
    session_ttl_s: float = 2 * 3600.0  # an idle session's files are deleted after this
    max_pixels: int = 64_000_000  # largest image the app opens (bigger: `frugalvl segment --tile`)
    max_run_pixels: int = 16_000_000  # largest area one run segments (the visible area helps)
    tile: int = 1024  # the app segments big areas tile by tile, with overlap tile/4
    workdir: Path | None = None  # where sessions keep files (default: a fresh temp folder)
    samples: tuple[Path, ...] = field(default_factory=tuple)  # extra bundled samples (tests)

    def model_spec(self, name: str) -> str | None:
        """The server's default for model option ``name`` (``clip``, ``upsampler``, ``sam3``): the
        operator's, else the method registry's."""
        if name in self.models:
            return self.models[name]
        from ..segment.methods import model_options

        return model_options()[name].default
